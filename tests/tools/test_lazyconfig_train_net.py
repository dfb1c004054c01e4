"""The LazyConfig path (configs/lazy/*.py, tools/lazyconfig_train_net.py) against the yaml path.

The lazy configs must build the yaml configs' model (parameter for parameter), data, optimizer, schedule,
EMA, mixed precision and exact resume: the same loss on the same batch, and the same weights after
training from the same seed. The tool itself trains, resumes and evaluates in a subprocess.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Sequence

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import hooks as d2_hooks
from detectron2.modeling import build_model
from detectron2.utils.env import seed_all_rng

from pix2seq_d2 import Pix2SeqDatasetMapper, Pix2SeqTrainer
from pix2seq_d2.config import ConfigError, load_config
from pix2seq_d2.engine.amp import MixedPrecisionTrainer
from pix2seq_d2.engine.hooks import EMAHook
from pix2seq_d2.engine.launch import run_command
from pix2seq_d2.modeling.ema import ModelEMA, unwrap_model
from pix2seq_d2.solver.build import build_lr_scheduler, build_optimizer
from pix2seq_d2.utils.seeding import seeded_rngs
from tests.helpers import QUICKSTART_CONFIG, REPO_ROOT, tiny_cfg

TOOL = os.path.join(REPO_ROOT, "tools", "lazyconfig_train_net.py")
LAZY_QUICKSTART = os.path.join(REPO_ROOT, "configs", "lazy", "pix2seq_shapes.py")
LAZY_R50 = os.path.join(REPO_ROOT, "configs", "lazy", "pix2seq_R50.py")
YAML_R50 = os.path.join(REPO_ROOT, "configs", "pix2seq_R50.yaml")

# conftest.tiny_cfg's shrinking of the quickstart, as LazyConfig overrides.
TINY_LAZY = [
    "model.backbone.stem.out_channels=8",
    "model.backbone.stages.widths=[8, 16, 32, 64]",
    "model.encoder.dim=32",
    "model.encoder.num_heads=4",
    "model.encoder.num_layers=1",
    "model.decoder.num_layers=1",
    "model.encoder.ffn_dim=64",
    "model.task.tokenizer.num_bins=64",
    "dataloader.train.mapper.augmentations.0.short_edge_length=[64]",
    "dataloader.train.mapper.augmentations.0.max_size=64",
    "dataloader.test.mapper.augmentations.0.short_edge_length=64",
    "dataloader.test.mapper.augmentations.0.max_size=64",
]
# Decoding that gives boxes even for an untrained model (a fixed number of objects, seeded sampling), few
# of them: decoding is sequential. Some may still be unusable boxes, so AP may be NaN; the sequence
# likelihood is always a number.
SAMPLE_YAML = ["MODEL.PIX2SEQ.DECODE.STOP_AT_EOS", False, "MODEL.PIX2SEQ.DECODE.STRATEGY", "sample",
               "MODEL.PIX2SEQ.DECODE.TOP_P", 1.0, "MODEL.PIX2SEQ.DECODE.SEED", 0,
               "MODEL.PIX2SEQ.MAX_OBJECTS_TEST", 4]  # fmt: skip
SAMPLE_LAZY = ["model.task.decoding.stop_at_eos=False", "model.task.decoding.strategy=sample",
               "model.task.decoding.top_p=1.0", "model.task.decoding.seed=0",
               "model.task.decoding.max_objects=4"]  # fmt: skip


@pytest.fixture(scope="module")
def tool():
    """tools/lazyconfig_train_net.py as a module."""
    spec = importlib.util.spec_from_file_location("lazyconfig_train_net", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lazy_cfg(tool, path: str = LAZY_QUICKSTART, *overrides: str):
    return tool.load_lazy_config(path, list(overrides))


def shapes(module: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def augmentation_settings(mapper: Pix2SeqDatasetMapper) -> list[tuple]:
    """Each augmentation's type and parameters (sequences as tuples: a config gives lists)."""
    settings = []
    for aug in mapper.augmentations.augs:
        params = {k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
                  for k, v in vars(aug).items() if not k.startswith("_")}  # fmt: skip
        settings.append((type(aug).__name__, params))
    return settings


def mapper_settings(mapper: Pix2SeqDatasetMapper) -> tuple:
    sequences = mapper.task.train_builder if mapper.is_train else mapper.task.test_builder  # the task's settings
    return (
        augmentation_settings(mapper),
        mapper.image_format,
        repr(mapper.task.tokenizer),
        sequences.max_objects,
        sequences.object_order,
        sequences.sequence_augmentation,
        mapper.use_annotations,
        mapper.num_views,
    )


def param_groups(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> list[tuple]:
    """Each group's parameter names, base lr (before a schedule multiplies it), weight decay and betas."""
    names = {id(p): n for n, p in unwrap_model(model).named_parameters()}
    return [
        ([names[id(p)] for p in g["params"]], g.get("initial_lr", g["lr"]), g["weight_decay"], tuple(g["betas"]))
        for g in optimizer.param_groups
    ]


def read_metrics(output_dir) -> list[dict]:
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f]


# ---- (a) the same model, data, optimizer, schedule and training settings --------------------------------
CONFIG_PAIRS = pytest.mark.parametrize(
    "lazy_file, yaml_file", [(LAZY_QUICKSTART, QUICKSTART_CONFIG), (LAZY_R50, YAML_R50)], ids=["quickstart", "R50"]
)


@CONFIG_PAIRS
def test_lazy_configs_build_the_yaml_configs_model_and_mappers(tool, lazy_file, yaml_file):
    lazy = lazy_cfg(tool, lazy_file)
    cfg = load_config(yaml_file, ["MODEL.DEVICE", "cpu"])
    model, expected = instantiate(lazy.model), build_model(cfg)
    assert shapes(model) == shapes(expected)  # the same parameter and buffer names, the same shapes
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in expected.named_parameters()]
    for name in ("in_feature", "decoding", "position_encoding", "use_padding_mask", "pad_to_square", "pad_value"):
        assert getattr(model, name) == getattr(expected, name), name
    for name in ("score_mode", "score_thresh_test", "detections_per_image"):  # the detection task's
        assert getattr(model.task, name) == getattr(expected.task, name), name
    assert repr(model.tokenizer) == repr(expected.tokenizer)
    assert model.tokenizer.eos_weight == expected.tokenizer.eos_weight
    assert torch.equal(model.pixel_mean, expected.pixel_mean) and torch.equal(model.pixel_std, expected.pixel_std)
    assert model.backbone.size_divisibility == expected.backbone.size_divisibility
    for is_train, lazy_mapper in ((True, lazy.dataloader.train.mapper), (False, lazy.dataloader.test.mapper)):
        yaml_mapper = Pix2SeqDatasetMapper(cfg, is_train=is_train, use_annotations=True if not is_train else None)
        assert mapper_settings(instantiate(lazy_mapper)) == mapper_settings(yaml_mapper), is_train
    assert lazy.dataloader.train.names in cfg.DATASETS.TRAIN and lazy.dataloader.test.dataset.names in cfg.DATASETS.TEST


@CONFIG_PAIRS
def test_lazy_configs_optimizer_schedule_and_training_settings_are_the_yaml_configs(tool, lazy_file, yaml_file):
    lazy = lazy_cfg(tool, lazy_file)
    cfg = load_config(yaml_file)
    module = torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    lazy.optimizer.params.model = module
    optimizer, expected = instantiate(lazy.optimizer), build_optimizer(cfg, module)
    assert type(optimizer).__name__ == type(expected).__name__ == "AdamWWithGlobalNormClipping"
    assert param_groups(optimizer, module) == param_groups(expected, module)
    schedule = instantiate(lazy.lr_multiplier)
    expected_schedule = build_lr_scheduler(cfg, torch.optim.SGD([torch.zeros(1)], lr=1.0))._multiplier
    for where in (0.0, 0.001, 0.01, 0.02, 0.034, 0.3, 0.999):
        assert schedule(where) == pytest.approx(expected_schedule(where), rel=1e-12), where
    train, loader = lazy.train, lazy.dataloader.train
    assert (train.init_checkpoint, train.max_iter, train.checkpointer.period, train.eval_period, train.seed) == (
        cfg.MODEL.WEIGHTS,
        cfg.SOLVER.MAX_ITER,
        cfg.SOLVER.CHECKPOINT_PERIOD,
        cfg.TEST.EVAL_PERIOD,
        cfg.SEED,
    )
    assert (train.amp.enabled, train.amp.precision) == (cfg.SOLVER.AMP.ENABLED, cfg.SOLVER.AMP.PRECISION)
    assert (train.ema.enabled, train.ema.decay) == (cfg.MODEL.EMA.ENABLED, cfg.MODEL.EMA.DECAY)
    assert (loader.total_batch_size, loader.num_workers, loader.aspect_ratio_grouping, loader.sampler) == (
        cfg.SOLVER.IMS_PER_BATCH,
        cfg.DATALOADER.NUM_WORKERS,
        cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        cfg.DATALOADER.SAMPLER_TRAIN,
    )


# ---- (b) the same loss on the same batch ----------------------------------------------------------------
def test_lazy_model_and_mapper_give_the_yaml_paths_loss_on_the_same_batch(tool, two_images):
    name, dicts = two_images
    cfg = tiny_cfg("DATASETS.TRAIN", (name,))
    lazy = lazy_cfg(tool, LAZY_QUICKSTART, *TINY_LAZY, f"dataloader.train.names={name}")
    seed_all_rng(0)
    expected_model = build_model(cfg)
    seed_all_rng(0)
    model = instantiate(lazy.model)
    # Modules are built in the same order from the same seed: the same initial weights.
    assert all(torch.equal(v, expected_model.state_dict()[k]) for k, v in model.state_dict().items())
    model.load_state_dict(expected_model.state_dict())

    def batch(mapper) -> list[dict]:  # random flip and object order drawn from the same seeds
        out = []
        for i, d in enumerate(dicts):
            with seeded_rngs(i):
                out.append(mapper(d))
        return out

    expected_batch = batch(Pix2SeqDatasetMapper(cfg, is_train=True))
    lazy_batch = batch(instantiate(lazy.dataloader.train.mapper))
    for a, b in zip(lazy_batch, expected_batch):
        for key in ("image", "seq_input", "seq_target", "seq_weight"):
            assert torch.equal(a[key], b[key]), key
    losses = []
    for m, inputs in ((expected_model, expected_batch), (model, lazy_batch)):
        torch.manual_seed(0)
        losses.append(m.train()(inputs)["loss_seq"])
    assert torch.isfinite(losses[0]) and torch.equal(losses[0], losses[1])


# ---- (d) optimizer, schedule, EMA, AMP, clipping: the same training --------------------------------------
def test_lazy_trainer_trains_like_the_yaml_trainer(tool, two_images, tmp_path):
    """EMA + bfloat16 AMP + global-norm clipping + drop path (the per-step RNG seeding) on: after 3
    iterations from the same seed both paths hold bit-identical weights, EMA and optimizer state, and
    their final evaluations agree."""
    name, _ = two_images
    cfg = tiny_cfg(
        *SAMPLE_YAML, "DATASETS.TRAIN", (name,), "DATASETS.TEST", (name,), "SOLVER.IMS_PER_BATCH", 2,
        "SOLVER.MAX_ITER", 3, "SOLVER.WARMUP_ITERS", 2, "MODEL.EMA.ENABLED", True, "MODEL.EMA.DECAY", 0.9,
        "SOLVER.AMP.ENABLED", True, "MODEL.PIX2SEQ.DROP_PATH", 0.1, "OUTPUT_DIR", str(tmp_path / "yaml"),
    )  # fmt: skip
    lazy = lazy_cfg(
        tool, LAZY_QUICKSTART, *TINY_LAZY, *SAMPLE_LAZY, f"dataloader.train.names={name}",
        f"dataloader.test.dataset.names={name}", "dataloader.train.total_batch_size=2", "train.max_iter=3",
        "lr_multiplier.warmup_length.warmup_iters=2", "train.ema.enabled=True", "train.ema.decay=0.9",
        "train.amp.enabled=True", "model.encoder.drop_path=0.1", f"train.output_dir={tmp_path / 'lazy'}",
    )  # fmt: skip
    seed_all_rng(0)
    expected = Pix2SeqTrainer(cfg)
    seed_all_rng(0)
    trainer, checkpointer = tool.build_trainer(lazy)

    # the optimizer: AdamW with global-norm clipping, the same parameter groups, lr, decay and betas
    assert type(trainer.optimizer).__name__ == type(expected.optimizer).__name__ == "AdamWWithGlobalNormClipping"
    assert param_groups(trainer.optimizer, trainer.model) == param_groups(expected.optimizer, expected.model)
    # the schedule: warmup + linear decay, the same multiplier at every point of the run
    schedule = instantiate(lazy.lr_multiplier)
    expected_schedule = build_lr_scheduler(cfg, torch.optim.SGD([torch.zeros(1)], lr=1.0))._multiplier
    for where in (0.0, 0.3, 0.5, 0.66, 0.9, 0.999):
        assert schedule(where) == pytest.approx(expected_schedule(where), rel=1e-12)
    # mixed precision and the EMA, updated right after the LR scheduler (before checkpointing and evaluation)
    assert type(trainer) is type(expected._trainer) is MixedPrecisionTrainer
    assert trainer.precision == expected._trainer.precision == torch.bfloat16
    ema = checkpointer.checkpointables["ema"]
    assert isinstance(ema, ModelEMA) and ema.decay == expected.ema.decay == 0.9
    for hooks in (trainer._hooks, expected._hooks):
        kinds = [type(h) for h in hooks]
        assert kinds.index(EMAHook) == kinds.index(d2_hooks.LRScheduler) + 1
        assert kinds.index(EMAHook) < kinds.index(d2_hooks.PeriodicCheckpointer) < kinds.index(d2_hooks.EvalHook)

    expected.train()
    trainer.train(0, lazy.train.max_iter)
    weights, expected_weights = unwrap_model(trainer.model).state_dict(), expected.model.state_dict()
    assert [k for k in expected_weights if not torch.equal(weights[k], expected_weights[k])] == []
    assert all(torch.equal(ema.shadow[k], expected.ema.shadow[k]) for k in ema.shadow)
    state, expected_state = trainer.optimizer.state_dict()["state"], expected.optimizer.state_dict()["state"]
    assert all(torch.equal(state[i]["exp_avg"], expected_state[i]["exp_avg"]) for i in expected_state)
    metrics, expected_metrics = read_metrics(tmp_path / "lazy"), read_metrics(tmp_path / "yaml")
    logged = [(m["iteration"], m["total_loss"], m["lr"]) for m in metrics if "total_loss" in m]
    assert logged and logged == [(m["iteration"], m["total_loss"], m["lr"]) for m in expected_metrics if "lr" in m]
    for key in ("bbox/AP", "bbox/AP50", "bbox/AR@100", "seq_likelihood/nll"):  # the final evaluation
        assert metrics[-1][key] == pytest.approx(expected_metrics[-1][key], rel=1e-12, nan_ok=True), key
    assert metrics[-1]["seq_likelihood/images"] == expected_metrics[-1]["seq_likelihood/images"] == 2


# ---- (e) exact resume ----------------------------------------------------------------------------------
class StopAt(d2_hooks.HookBase):
    """Stops training before iteration ``at``, as a killed run would."""

    def __init__(self, at: int):
        self.at = at

    def before_step(self):
        if self.trainer.iter == self.at:
            raise KeyboardInterrupt


def test_interrupted_then_resumed_lazy_run_ends_with_the_uninterrupted_weights(tool, two_images, tmp_path):
    name, _ = two_images
    overrides = [
        *TINY_LAZY, f"dataloader.train.names={name}", "dataloader.train.total_batch_size=2", "train.max_iter=3",
        "train.checkpointer.period=2", "train.ema.enabled=True", "train.ema.decay=0.9", "model.encoder.drop_path=0.1",
        "train.seed=-1",  # the data stream's seed is drawn, then checkpointed
    ]  # fmt: skip

    def run(output_dir, stop_at=None, resume=False):
        cfg = lazy_cfg(tool, LAZY_QUICKSTART, *overrides, f"train.output_dir={output_dir}")
        del cfg.dataloader.evaluator  # no evaluation
        # The resumed process starts from other RNG states: what it needs must come from the checkpoint.
        seed_all_rng(1 if resume else 0)
        trainer, checkpointer = tool.build_trainer(cfg)
        if stop_at is not None:
            trainer.register_hooks([StopAt(stop_at)])
        start_iter = tool.resume_or_load(trainer, checkpointer, "", resume=resume)
        trainer.train(start_iter, cfg.train.max_iter)
        return trainer, checkpointer

    straight, straight_checkpointer = run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", stop_at=2)
    assert (tmp_path / "killed" / "last_checkpoint").read_text() == "model_0000001.pth"
    checkpoint = torch.load(tmp_path / "killed" / "model_0000001.pth", weights_only=True)
    assert set(checkpoint) >= {"model", "trainer", "ema", "data_loader", "iteration"}
    assert {"optimizer", "hooks"} <= set(checkpoint["trainer"]) and "LRScheduler" in checkpoint["trainer"]["hooks"]
    resumed, checkpointer = run(tmp_path / "killed", resume=True)
    assert resumed.start_iter == 2
    assert resumed.data_loader.seed == straight.data_loader.seed == checkpoint["data_loader"]["seed"]
    weights, expected = unwrap_model(resumed.model).state_dict(), unwrap_model(straight.model).state_dict()
    assert [k for k in expected if not torch.equal(weights[k], expected[k])] == []
    ema, expected_ema = checkpointer.checkpointables["ema"], straight_checkpointer.checkpointables["ema"]
    assert ema.updates == expected_ema.updates == 3
    assert all(torch.equal(ema.shadow[k], expected_ema.shadow[k]) for k in expected_ema.shadow)


# ---- overrides -----------------------------------------------------------------------------------------
def test_unknown_or_malformed_overrides_are_config_errors_naming_them(tool):
    with pytest.raises(ConfigError, match=r"train\.max_iters .*did you mean train\.max_iter") as info:
        lazy_cfg(tool, LAZY_QUICKSTART, "train.max_iters=3", "model.encoder.num_layers", "train.seed=3")
    assert "'model.encoder.num_layers' given on the command line is not of the form key=value" in str(info.value)
    cfg = lazy_cfg(tool, LAZY_QUICKSTART, "dataloader.train.names=shapes_val", "train.output_dir=/tmp/a b")
    assert cfg.dataloader.train.names == "shapes_val" and cfg.train.output_dir == "/tmp/a b"
    cfg = lazy_cfg(tool, LAZY_QUICKSTART, "model.encoder.dim=64", "train.amp.enabled=true")
    assert instantiate(cfg.model).decoder.token_embed.embedding_dim == 64 and cfg.train.amp.enabled is True


# ---- (c) the command line: train, resume, evaluate -------------------------------------------------------
# The (shrunk) quickstart trained and evaluated on a tiny generated shapes split: all of shapes_val would
# take most of a minute to decode on two CPU cores.
TINY_SPLIT_CONFIG = '''
"""configs/lazy/pix2seq_shapes.py with a tiny shapes split (4 images) registered as "tiny_shapes"."""
from detectron2.config import LazyConfig
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances

from pix2seq_d2.data.datasets.shapes import ShapesSplitSpec, generate_shapes_split

_json, _images = generate_shapes_split({root!r}, "tiny_shapes", ShapesSplitSpec(num_images=4, seed=1, image_size=96))
if "tiny_shapes" not in DatasetCatalog:
    register_coco_instances("tiny_shapes", {{}}, _json, _images)
_quickstart = LazyConfig.load({quickstart!r})
model, dataloader, optimizer = _quickstart.model, _quickstart.dataloader, _quickstart.optimizer
lr_multiplier, train = _quickstart.lr_multiplier, _quickstart.train
'''
FAST_LAZY = [
    *TINY_LAZY, *SAMPLE_LAZY, "dataloader.train.names=tiny_shapes", "dataloader.test.dataset.names=tiny_shapes",
    "dataloader.train.total_batch_size=2",
]  # fmt: skip


def run_tool(tmp_path, *args: str) -> str:
    config = tmp_path / "tiny_shapes.py"
    if not config.exists():
        config.write_text(TINY_SPLIT_CONFIG.format(root=str(tmp_path / "data"), quickstart=LAZY_QUICKSTART))
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, TOOL, "--config-file", str(config), *args]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_tool_trains_resumes_and_evaluates_through_coco_evaluator(tmp_path):
    out = tmp_path / "output"
    run_tool(tmp_path, *FAST_LAZY, "train.max_iter=2", f"train.output_dir={out}")
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    assert (out / "config.yaml").is_file()  # the full config, with the overrides
    assert LazyConfig.load(str(out / "config.yaml")).train.max_iter == 2
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert any("total_loss" in m for m in metrics)
    assert "bbox/AP" in metrics[-1] and "bbox/AR@100" in metrics[-1]  # COCOEvaluatorWithRecall ran
    assert metrics[-1]["seq_likelihood/images"] == 4  # and SequenceLikelihoodEvaluator
    assert (out / "inference" / "tiny_shapes" / "coco_instances_results.json").is_file()

    log = run_tool(tmp_path, "--resume", *FAST_LAZY, "train.max_iter=3", f"train.output_dir={out}")
    assert "Starting training from iteration 2" in log
    trained = json.loads((out / "metrics.json").read_text().splitlines()[-1])
    assert trained["iteration"] == 3

    log = run_tool(
        tmp_path, "--eval-only", *FAST_LAZY, f"train.init_checkpoint={out / 'model_final.pth'}",
        f"train.output_dir={tmp_path / 'eval'}",
    )  # fmt: skip
    assert "Evaluation results for tiny_shapes in csv format" in log
    evaluated = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    for key in ("AP", "AP50", "AR@100"):  # the final evaluation of training, again
        assert evaluated["bbox"][key] == pytest.approx(trained[f"bbox/{key}"], abs=1e-9, nan_ok=True), key
    assert evaluated["seq_likelihood"]["nll"] == pytest.approx(trained["seq_likelihood/nll"], rel=1e-9)


def test_a_missing_or_yaml_config_file_is_one_error_line_and_no_config_file_a_usage_error(tool, capsys):
    assert run_command(lambda: tool.load_lazy_config("configs/lazy/nonexistent.py", ["train.max_iter=1"])) == 1
    assert "error: config file configs/lazy/nonexistent.py does not exist" in capsys.readouterr().err
    assert run_command(lambda: tool.load_lazy_config(YAML_R50)) == 1
    assert "it has no model, dataloader, train (a yaml config of tools/train_net.py?)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        tool.parse_args(["--eval-only"])
    assert exit_info.value.code == 2 and "--config-file is required" in capsys.readouterr().err
