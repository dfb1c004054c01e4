"""``Pix2SeqTrainer``: detectron2's ``DefaultTrainer`` wired to the Pix2Seq data, solver and evaluation.

Use it like ``DefaultTrainer`` (``tools/train_net.py`` does). It differs in four places:
the Pix2Seq dataset mapper for train and test loaders, ``COCOEvaluator`` (with average
recall added) for every dataset,
AdamW + the Pix2Seq schedule, and a DistributedDataParallel wrapper that also works for
CPU (GLOO) workers, for which detectron2's ``create_ddp_model`` passes invalid ``device_ids``.
"""

from __future__ import annotations

import os
import weakref

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, create_ddp_model
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from torch import nn

from .dataset_mapper import Pix2SeqDatasetMapper
from .evaluation import COCOEvaluatorWithRecall
from .solver import build_lr_scheduler, build_optimizer


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
        # Same construction order as DefaultTrainer.__init__, with `wrap_distributed`.
        TrainerBase.__init__(self)
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = wrap_distributed(model)
        trainer_cls = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = trainer_cls(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        return build_detection_train_loader(cfg, mapper=Pix2SeqDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        return build_detection_test_loader(cfg, dataset_name, mapper=Pix2SeqDatasetMapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None) -> DatasetEvaluator:
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluatorWithRecall(
            dataset_name,
            tasks=("bbox",),
            output_dir=output_folder,
            max_dets_per_image=max(100, cfg.MODEL.PIX2SEQ.MAX_OBJECTS_TEST),
        )

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer):
        return build_lr_scheduler(cfg, optimizer)
