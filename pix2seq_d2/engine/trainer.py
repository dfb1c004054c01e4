"""``Pix2SeqTrainer``: detectron2's ``DefaultTrainer`` wired to the Pix2Seq data, solver and evaluation.

Use it like ``DefaultTrainer`` (``tools/train_net.py`` does). What it adds:

* data: ``Pix2SeqDatasetMapper`` for the train and test loaders (the test mapper also
  tokenizes annotations for the likelihood evaluator when ``TEST.SEQ_LIKELIHOOD``);
* evaluation: ``COCOEvaluatorWithRecall`` (AP and AR) plus ``SequenceLikelihoodEvaluator``;
  evaluation runs with the checkpointed weights (the EMA when ``MODEL.EMA.ENABLED``, rank 0's
  BatchNorm statistics on every worker);
* optimisation: AdamW + the Pix2Seq schedule, mixed precision (``MixedPrecisionTrainer``,
  float16 on GPUs, bfloat16 on CPUs), the weight EMA (checkpointed as ``"ema"``);
* distribution: a DistributedDataParallel wrapper that also works for CPU (GLOO) workers,
  for which detectron2's ``create_ddp_model`` passes invalid ``device_ids``, and a check
  that all workers end training with the same weights;
* start-up checks: every setting is checked before anything is built (out-of-range values,
  ``NUM_CLASSES``/``CATEGORY_IDS`` against the datasets' classes, a schedule that auto-scaling
  would turn into nonsense; see ``pix2seq_d2/config/checks.py``), and ``MODEL.PIX2SEQ.NUM_CLASSES``
  0 ("auto") is taken from ``DATASETS.TRAIN[0]``;
* reliability: atomic, weights-only checkpoints (``Pix2SeqCheckpointer``) and a train loader
  that ``resume_or_load`` continues where the checkpoint was written (data order,
  augmentation and dropout randomness), so a run killed with ``kill -9`` and resumed ends
  with the weights of an uninterrupted run (see ``pix2seq_d2/data/resumable_loader.py``).
"""

from __future__ import annotations

import logging
import os
import weakref

import torch
from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader
from detectron2.engine import DefaultTrainer, SimpleTrainer, TrainerBase, create_ddp_model
from detectron2.engine import hooks as d2_hooks
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch import nn

from pix2seq_d2.checkpoint import Pix2SeqCheckpointer
from pix2seq_d2.config import check_datasets, prepare_config
from pix2seq_d2.data.dataset_mapper import Pix2SeqDatasetMapper
from pix2seq_d2.data.datasets import use_checked_coco_loader
from pix2seq_d2.data.resumable_loader import ResumableTrainLoader, build_resumable_train_loader
from pix2seq_d2.engine.amp import MixedPrecisionTrainer
from pix2seq_d2.engine.distributed import with_checkpointed_weights
from pix2seq_d2.engine.exact_resume import continue_stream_at, seed_step_rngs
from pix2seq_d2.engine.hooks import EMAHook, ReplicaAgreementHook
from pix2seq_d2.evaluation.coco_evaluation import COCOEvaluatorWithRecall
from pix2seq_d2.evaluation.sequence_likelihood import SequenceLikelihoodEvaluator
from pix2seq_d2.modeling.ema import ModelEMA
from pix2seq_d2.solver.build import build_lr_scheduler, build_optimizer
from pix2seq_d2.tasks import build_task


def share_cpu_threads_among_workers() -> int:
    """Give each local CPU worker an equal share of the cores (at least one thread).

    Several workers that each use every core oversubscribe the machine, and their OpenMP
    threads spin against each other: on 2 cores, two GLOO workers ran inference 20x slower.
    Does nothing with GPUs or a single worker. Returns the number of threads now used.
    """
    workers = comm.get_local_size()
    if workers > 1 and not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    return torch.get_num_threads()


def wrap_distributed(model: nn.Module) -> nn.Module:
    """DDP over all workers (no-op for one); ``device_ids`` only for a model on a GPU."""
    on_gpu = next(model.parameters()).device.type == "cuda"
    device_ids = [comm.get_local_rank()] if on_gpu else None
    return create_ddp_model(model, broadcast_buffers=False, device_ids=device_ids)


class Pix2SeqTrainer(DefaultTrainer):
    """A ``DefaultTrainer`` for Pix2Seq (train/test loaders, evaluator, optimizer, schedule)."""

    def __init__(self, cfg: CfgNode):
        # Bad settings stop here, before anything is built (the schedule as auto-scaled below).
        # NUM_CLASSES 0 -> from DATASETS.TRAIN[0]; every setting checked
        cfg = prepare_config(cfg, for_training=True, num_workers=comm.get_world_size())
        # DefaultTrainer.__init__ step by step, because three of its steps have no public hook:
        # * its create_ddp_model passes device_ids=[local rank], which DDP refuses for a CPU model: GLOO
        #   workers on the CPU could not train (wrap_distributed passes none there);
        # * it builds AMPTrainer, which asserts a GPU: MixedPrecisionTrainer autocasts on the CPU too;
        # * it builds DetectionCheckpointer: Pix2SeqCheckpointer saves atomically, loads weights-only and
        #   checkpoints the EMA.
        # Everything else is the same build_* sequence; tests/engine/test_trainer.py fails when detectron2
        # changes DefaultTrainer.__init__, so that this copy is looked at again.
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()  # as DefaultTrainer does when detectron2's logger is not set up
        TrainerBase.__init__(self)
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        check_datasets(cfg, for_training=True)  # classes that only loading the datasets made known
        model = wrap_distributed(model)
        if cfg.SOLVER.AMP.ENABLED:
            self._trainer = MixedPrecisionTrainer.from_config(cfg, model, data_loader, optimizer)
        else:
            self._trainer = SimpleTrainer(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.ema = ModelEMA(model, cfg.MODEL.EMA.DECAY) if cfg.MODEL.EMA.ENABLED else None
        checkpointables = {"ema": self.ema} if self.ema is not None else {}
        self.checkpointer = Pix2SeqCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self), **checkpointables)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self) -> list[d2_hooks.HookBase]:
        """detectron2's hooks, with its evaluation hook evaluating the weights that get checkpointed (the
        EMA when enabled, rank 0's buffers on every worker: :func:`with_checkpointed_weights`), plus: with
        several workers, a check that they end with the same weights; with ``MODEL.EMA.ENABLED``, the EMA
        update (before checkpointing and evaluation)."""
        hooks = [
            d2_hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, self.evaluate_checkpointed_weights)
            if isinstance(hook, d2_hooks.EvalHook)
            else hook
            for hook in super().build_hooks()
        ]
        if comm.get_world_size() > 1:
            hooks.append(ReplicaAgreementHook())
        if self.ema is not None:
            after_scheduler = next(i for i, h in enumerate(hooks) if isinstance(h, d2_hooks.LRScheduler)) + 1
            hooks.insert(after_scheduler, EMAHook(self.ema))
        return hooks

    def evaluate_checkpointed_weights(self) -> dict:
        """:meth:`test` of the weights that get checkpointed (the evaluation hook's function). The results
        are kept in ``_last_eval_results``, which ``DefaultTrainer.train`` checks against
        ``TEST.EXPECTED_RESULTS`` (its own evaluation function keeps them there too)."""
        self._last_eval_results = with_checkpointed_weights(
            lambda: self.test(self.cfg, self.model), self.model, self.ema
        )()
        return self._last_eval_results

    @classmethod
    def build_model(cls, cfg: CfgNode) -> nn.Module:
        return super().build_model(prepare_config(cfg, for_training=False))

    @classmethod
    def test(cls, cfg: CfgNode, model: nn.Module, evaluators=None) -> dict:
        """detectron2's evaluation on every ``DATASETS.TEST``, after the start-up checks of evaluation
        (``prepare_config(for_training=False)``)."""
        cfg = prepare_config(cfg, for_training=False)
        return super().test(cfg, model, evaluators)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        # Resumable: the batches are a function of (seed, iteration); see pix2seq_d2/data/resumable_loader.py.
        mapper = Pix2SeqDatasetMapper(cfg, is_train=True)
        return build_resumable_train_loader(cfg, mapper, num_classes=cfg.MODEL.PIX2SEQ.NUM_CLASSES)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        # With TEST.SEQ_LIKELIHOOD the mapper also tokenizes the annotations, for the likelihood evaluator.
        mapper = Pix2SeqDatasetMapper(cfg, is_train=False, use_annotations=cfg.TEST.SEQ_LIKELIHOOD)
        use_checked_coco_loader([dataset_name])  # a register_coco_instances dataset: the checked reader
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None) -> DatasetEvaluator:
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        coco = COCOEvaluatorWithRecall(
            dataset_name,
            tasks=("bbox",),
            output_dir=output_folder,
            max_dets_per_image=max(100, cfg.MODEL.PIX2SEQ.MAX_OBJECTS_TEST),
            backend=cfg.TEST.COCO_EVAL_BACKEND,
        )
        if not cfg.TEST.SEQ_LIKELIHOOD:
            return coco
        return DatasetEvaluators([coco, SequenceLikelihoodEvaluator(build_task(cfg))])

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer):
        return build_lr_scheduler(cfg, optimizer)

    # ---- exact resume (see pix2seq_d2/data/resumable_loader.py and pix2seq_d2/checkpoint/checkpointer.py) ----------
    def resume_or_load(self, resume: bool = True) -> None:
        """detectron2's resume (model, optimizer, scheduler, hooks' state, EMA, grad scaler,
        iteration) plus the data: the train loader continues its stream at ``start_iter``."""
        super().resume_or_load(resume=resume)
        continue_stream_at(self._trainer, self.start_iter)

    def run_step(self) -> None:
        # Dropout & co. draw from the global RNGs: seeded from (seed, rank, iteration), a resumed
        # run draws exactly what the uninterrupted run drew at this iteration.
        seed_step_rngs(self._trainer.data_loader, self.cfg.SEED, self.iter)
        super().run_step()

    def state_dict(self) -> dict:
        state = super().state_dict()
        if isinstance(self._trainer.data_loader, ResumableTrainLoader):
            state["data_loader"] = self._trainer.data_loader.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "data_loader" in state and isinstance(self._trainer.data_loader, ResumableTrainLoader):
            self._trainer.data_loader.load_state_dict(state["data_loader"])
