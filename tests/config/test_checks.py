"""Start-up config checks (pix2seq_d2/config/checks.py): a bad setting stops before anything is built,
with a message naming the key, its value and the allowed range."""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Iterator
from typing import Any

import pytest
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

import pix2seq_d2.config
from pix2seq_d2 import Pix2SeqTrainer
from pix2seq_d2.config import (
    RULES,
    ConfigError,
    check_config,
    check_datasets,
    check_schedule,
    load_config,
    resolve_auto_settings,
    with_auto_settings,
)
from tests.helpers import REPO_ROOT, shapes_image, tiny_cfg, write_image

R50 = os.path.join(REPO_ROOT, "configs", "pix2seq_R50.yaml")
ALL_YAML = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"), recursive=True))


def _set(cfg: CfgNode, key: str, value: Any) -> CfgNode:
    """Set ``key`` without detectron2's type check at merge time (as Python code can)."""
    *path, last = key.split(".")
    node = cfg
    for part in path:
        node = node[part]
    node[last] = value
    return cfg


def _cfg(settings: dict[str, Any] | None = None) -> CfgNode:
    cfg = tiny_cfg()
    for key, value in (settings or {}).items():
        _set(cfg, key, value)
    return cfg


def _error(cfg: CfgNode, for_training: bool = True, num_workers: int = 1) -> str:
    with pytest.raises(ConfigError) as error:
        check_config(cfg, for_training=for_training, num_workers=num_workers)
    return str(error.value)


# ---- the rule table: each family of bad values, each message names key, value and range ----------
BAD_VALUES = [
    # zero where a count or a period must be positive (ZeroDivisionError, EOS-only sequences, ...)
    ("MODEL.PIX2SEQ.MAX_OBJECTS", 0),
    ("MODEL.PIX2SEQ.NUM_HEADS", 0),
    ("MODEL.PIX2SEQ.HIDDEN_DIM", 0),
    ("MODEL.PIX2SEQ.DEC_LAYERS", 0),
    ("MODEL.PIX2SEQ.DIM_FEEDFORWARD", 0),
    ("MODEL.PIX2SEQ.LAYER_NORM_EPS", 0.0),
    ("SOLVER.MAX_ITER", 0),
    ("SOLVER.BASE_LR", 0.0),
    ("SOLVER.IMS_PER_BATCH", 0),
    ("SOLVER.CHECKPOINT_PERIOD", 0),
    ("SOLVER.WARMUP_FACTOR", 0.0),
    ("TEST.DETECTIONS_PER_IMAGE", 0),
    ("INPUT.MAX_SIZE_TRAIN", 0),
    ("INPUT.MAX_SIZE_TEST", 0),
    ("INPUT.MULTI_CROP.NUM_VIEWS", 0),
    # negative
    ("MODEL.PIX2SEQ.MAX_OBJECTS_TEST", -1),
    ("MODEL.PIX2SEQ.NUM_CLASSES", -3),
    ("MODEL.PIX2SEQ.ENC_LAYERS", -1),
    ("MODEL.PIX2SEQ.DEC_NUM_HEADS", -2),
    ("MODEL.PIX2SEQ.EOS_WEIGHT", -1.0),
    ("MODEL.PIX2SEQ.PAD_TO_SQUARE", -1),
    ("MODEL.PIX2SEQ.MAX_SEQ_LEN", -5),
    ("MODEL.PIX2SEQ.TOKENIZER.COORD_NORMALIZER", -1),
    ("SOLVER.BASE_LR", -0.001),
    ("SOLVER.WARMUP_ITERS", -5),
    ("SOLVER.END_LR_FACTOR", -0.1),
    ("SOLVER.WEIGHT_DECAY", -0.05),
    ("SOLVER.REFERENCE_WORLD_SIZE", -8),
    ("TEST.EVAL_PERIOD", -1),
    ("DATALOADER.NUM_WORKERS", -1),
    ("INPUT.MIN_SIZE_TEST", -1),
    # out of range
    ("MODEL.PIX2SEQ.NUM_BINS", 1),
    ("MODEL.PIX2SEQ.DROPOUT", 1.0),
    ("MODEL.PIX2SEQ.DROP_PATH", -0.1),
    ("MODEL.PIX2SEQ.SCORE_THRESH_TEST", 1.5),
    ("SOLVER.WARMUP_FACTOR", 1.5),
    ("SOLVER.BETAS", (0.9, 1.0)),
    ("SOLVER.BASE_LR", math.inf),
    ("SOLVER.BASE_LR", math.nan),
    ("INPUT.MIN_SIZE_TRAIN", (0,)),
    ("INPUT.MIN_SIZE_TRAIN", ()),
    ("MODEL.SMALL_RESNET.WIDTHS", [8, 16, 0, 64]),
    ("MODEL.PIXEL_MEAN", [127.5]),
    # not one of the known values
    ("INPUT.FORMAT", "YUV-BT.601"),
    ("INPUT.RANDOM_FLIP", "diagonal"),
    ("MODEL.PIX2SEQ.TOKENIZER.LAYOUT", "compact"),
    ("MODEL.PIX2SEQ.OBJECT_ORDER", "sorted"),
    ("MODEL.PIX2SEQ.ACTIVATION", "swish"),
    ("MODEL.PIX2SEQ.INPUT_PROJ", "mlp"),
    ("MODEL.PIX2SEQ.DECODE.SCORE", "max"),
    ("SOLVER.WARMUP_METHOD", "cosine"),
    ("SOLVER.OPTIMIZER", "SGD"),
    ("TEST.COCO_EVAL_BACKEND", "lvis"),
    # wrong type
    ("SOLVER.MAX_ITER", "10"),
    ("SOLVER.MAX_ITER", 2.5),
    ("SOLVER.BASE_LR", None),
    ("MODEL.PIX2SEQ.NUM_HEADS", True),
    ("MODEL.PIX2SEQ.DROPOUT", "0.1"),
    ("MODEL.PIX2SEQ.DECODE.STOP_AT_EOS", "False"),
    ("MODEL.PIX2SEQ.DECODE.BEAM_SIZE", 2.0),
]


@pytest.mark.parametrize("key, value", BAD_VALUES, ids=[f"{k}={v!r}" for k, v in BAD_VALUES])
def test_a_bad_value_is_an_error_naming_key_value_and_allowed_range(key, value):
    message = _error(_cfg({key: value}))
    assert f"{key} = {value!r}: must be " in message  # "must be an integer >= 1 (what it is for)"


def test_every_rule_key_exists_in_the_config():
    cfg = tiny_cfg()
    for rule in RULES:
        node = cfg
        for part in rule.key.split("."):
            assert part in node, rule.key
            node = node[part]


def test_every_error_is_reported_at_once():
    message = _error(_cfg({"MODEL.PIX2SEQ.MAX_OBJECTS": 0, "SOLVER.CHECKPOINT_PERIOD": 0, "INPUT.FORMAT": "L"}))
    assert "3 problems" in message
    assert "MAX_OBJECTS = 0" in message and "CHECKPOINT_PERIOD = 0" in message and "INPUT.FORMAT = 'L'" in message


def test_evaluation_skips_the_training_only_settings():
    cfg = _cfg({"SOLVER.MAX_ITER": 0, "SOLVER.CHECKPOINT_PERIOD": 0, "MODEL.PIX2SEQ.MAX_OBJECTS": 0})
    assert check_config(cfg, for_training=False) == []
    assert "MODEL.PIX2SEQ.MAX_OBJECTS_TEST = 0" in _error(_cfg({"MODEL.PIX2SEQ.MAX_OBJECTS_TEST": 0}), False)


def test_a_zero_pixel_std_is_only_a_warning():
    """Training then stops at the first step with a non-finite loss (tests/test_bad_inputs.py)."""
    warnings = check_config(_cfg({"MODEL.PIXEL_STD": [0.0, 0.0, 0.0]}), for_training=True, num_workers=1)
    assert len(warnings) == 1 and "MODEL.PIXEL_STD = [0.0, 0.0, 0.0]" in warnings[0]


# ---- existing validations, called and attributed to the config keys --------------------------------
REUSED = [
    ({"MODEL.PIX2SEQ.DECODE.TOP_P": 0.0}, "MODEL.PIX2SEQ.DECODE.TOP_P = 0.0", "(0, 1]"),
    ({"MODEL.PIX2SEQ.DECODE.TOP_P": 1.5, "MODEL.PIX2SEQ.DECODE.TOP_P_RULE": "at_most"}, "TOP_P = 1.5", "[0, 1]"),
    ({"MODEL.PIX2SEQ.DECODE.TEMPERATURE": -1.0}, "MODEL.PIX2SEQ.DECODE.TEMPERATURE = -1.0", ">= 0"),
    ({"MODEL.PIX2SEQ.DECODE.TOP_K": -1}, "MODEL.PIX2SEQ.DECODE.TOP_K = -1", ">= 0"),
    ({"MODEL.PIX2SEQ.DECODE.BEAM_SIZE": 0}, "MODEL.PIX2SEQ.DECODE.BEAM_SIZE = 0", ">= 1"),
    ({"MODEL.PIX2SEQ.DECODE.STRATEGY": "nucleus"}, "DECODE.STRATEGY = 'nucleus'", "'greedy'"),
    ({"MODEL.PIX2SEQ.DECODE.BOX_FROM": "centre"}, "DECODE.BOX_FROM = 'centre'", "'argmax'"),
    ({"INPUT.COLOR_JITTER.ENABLED": True, "INPUT.COLOR_JITTER.HUE": 0.7}, "INPUT.COLOR_JITTER.HUE = 0.7", "[0, 0.5]"),
    ({"INPUT.COLOR_JITTER.ENABLED": True, "INPUT.COLOR_JITTER.BRIGHTNESS": -0.2}, "BRIGHTNESS = -0.2", ">= 0"),
    ({"INPUT.LSJ.ENABLED": True, "INPUT.LSJ.MIN_SCALE": 0.0}, "INPUT.LSJ needs 0 < MIN_SCALE <= MAX_SCALE", "0.0"),
    ({"INPUT.LSJ.ENABLED": True, "INPUT.LSJ.MIN_SCALE": 2.0, "INPUT.LSJ.MAX_SCALE": 1.0}, "MIN_SCALE <= MAX_SCALE", ""),
    ({"INPUT.LSJ.ENABLED": True, "INPUT.LSJ.IMAGE_SIZE": 0}, "INPUT.LSJ.IMAGE_SIZE must be >= 1, got 0", ""),
    ({"INPUT.MIN_SIZE_TRAIN_SAMPLING": "range", "INPUT.MIN_SIZE_TRAIN": (32, 48, 64)}, "INPUT (training", "(32, 48"),
    ({"MODEL.PIX2SEQ.SEQ_AUG.ENABLED": True, "MODEL.PIX2SEQ.SEQ_AUG.CLASS_CORRUPTION": "all"}, "= 'all'", "'rand_cls'"),
    (
        {"MODEL.PIX2SEQ.TOKENIZER.LAYOUT": "official", "MODEL.PIX2SEQ.TOKENIZER.CATEGORY_IDS": [1, 2]},
        "TOKENIZER.LAYOUT = 'official'",
        "CATEGORY_IDS has 2 ids but NUM_CLASSES is 3",
    ),
    (
        {"MODEL.PIX2SEQ.TOKENIZER.LAYOUT": "pretrained_pix2seq", "MODEL.PIX2SEQ.TOKENIZER.CATEGORY_IDS": [1, 2, 95]},
        "CATEGORY_IDS = [1, 2, 95]",
        "leave the class range",
    ),
]


@pytest.mark.parametrize("settings, names, detail", REUSED, ids=[str(s) for s, _, _ in REUSED])
def test_existing_validations_are_reused_and_name_the_keys(settings, names, detail):
    message = _error(_cfg(settings))
    assert names in message and detail in message


CROSS_KEY = [
    ({"MODEL.PIX2SEQ.HIDDEN_DIM": 30}, "HIDDEN_DIM = 30 is not divisible by MODEL.PIX2SEQ.NUM_HEADS = 4"),
    ({"MODEL.PIX2SEQ.HIDDEN_DIM": 18, "MODEL.PIX2SEQ.NUM_HEADS": 2}, "HIDDEN_DIM = 18 must be a multiple of 4"),
    ({"MODEL.PIX2SEQ.HIDDEN_DIM": 48, "MODEL.PIX2SEQ.INPUT_PROJ": "conv_gn"}, "must be a multiple of 32"),
    (
        {"MODEL.PIX2SEQ.MEMORY_PROJECTION": True, "MODEL.PIX2SEQ.DEC_HIDDEN_DIM": 30, "MODEL.PIX2SEQ.DEC_NUM_HEADS": 4},
        "decoder width 30 (MODEL.PIX2SEQ.DEC_HIDDEN_DIM = 30",
    ),
    ({"MODEL.PIX2SEQ.MAX_SEQ_LEN": 20}, "MODEL.PIX2SEQ.MAX_SEQ_LEN = 20: must be 0 (sized automatically) or >= 51"),
    ({"MODEL.PIX2SEQ.PAD_TO_SQUARE": 32}, "INPUT.MAX_SIZE_TEST = 64 exceeds MODEL.PIX2SEQ.PAD_TO_SQUARE = 32"),
]


@pytest.mark.parametrize("settings, expected", CROSS_KEY, ids=[str(s) for s, _ in CROSS_KEY])
def test_settings_that_do_not_fit_together_are_named(settings, expected):
    assert expected in _error(_cfg(settings))


# ---- datasets: NUM_CLASSES and CATEGORY_IDS against the classes, without loading the data --------
def _register_ids_137(name: str, folder) -> str:
    """A COCO json with category ids 7, 1, 3 (unsorted, listed after the annotations, as COCO's own)."""
    boxes, categories = [(4, 4, 20, 20), (24, 8, 40, 30)], (3, 7)
    write_image(str(folder / "a.png"), shapes_image(48, 48, boxes, seed=0))
    annotations = [
        {"id": i, "image_id": 1, "category_id": c, "bbox": [x0, y0, x1 - x0, y1 - y0], "area": 1, "iscrowd": 0}
        for i, ((x0, y0, x1, y1), c) in enumerate(zip(boxes, categories), start=1)
    ]
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": 48, "width": 48}],
        "annotations": annotations,
        "categories": [{"id": i, "name": f"class{i}"} for i in (7, 1, 3)],
    }
    (folder / "instances.json").write_text(json.dumps(coco))
    register_coco_instances(name, {}, str(folder / "instances.json"), str(folder))
    return name


def _unregister(*names: str) -> None:
    for name in names:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)


@pytest.fixture
def ids_137(tmp_path) -> Iterator[str]:
    name = _register_ids_137(f"ids_137_{tmp_path.name}", tmp_path)
    yield name
    _unregister(name)


def _on(name: str, *opts) -> CfgNode:
    return tiny_cfg("DATASETS.TRAIN", (name,), "DATASETS.TEST", (name,), *opts)


def test_num_classes_set_to_the_largest_category_id_is_an_error_before_training(ids_137):
    message = _error(_on(ids_137, "MODEL.PIX2SEQ.NUM_CLASSES", 7))
    assert f"MODEL.PIX2SEQ.NUM_CLASSES = 7 but DATASETS.TRAIN dataset '{ids_137}'" in message
    assert "has 3 classes [class1, class3, class7]" in message
    assert "not the largest category id (7)" in message and "[1, 3, 7]" in message
    assert "Set MODEL.PIX2SEQ.NUM_CLASSES 3" in message
    assert MetadataCatalog.get(ids_137).get("thing_classes") is None  # read from the json, the dataset not loaded
    # evaluation only (train_net --eval-only) checks the test datasets the same way
    assert "NUM_CLASSES = 7 but DATASETS.TEST dataset" in _error(_on(ids_137, "MODEL.PIX2SEQ.NUM_CLASSES", 7), False)


def test_another_wrong_num_classes_gives_no_largest_id_hint(ids_137):
    message = _error(_on(ids_137, "MODEL.PIX2SEQ.NUM_CLASSES", 5))
    assert "NUM_CLASSES = 5 but" in message and "largest category id" not in message
    assert check_config(_on(ids_137), for_training=True, num_workers=1) == []  # NUM_CLASSES 3


def test_num_classes_0_is_taken_from_the_training_set(ids_137):
    cfg = _on(ids_137, "MODEL.PIX2SEQ.NUM_CLASSES", 0)
    assert "NUM_CLASSES = 0 (auto" in _error(cfg) and "resolve_auto_settings" in _error(cfg)
    # the functions the message names are where it says
    assert "pix2seq_d2.config.prepare_config" in _error(cfg) and callable(pix2seq_d2.config.prepare_config)
    assert callable(pix2seq_d2.config.resolve_auto_settings)
    assert resolve_auto_settings(cfg) is cfg and cfg.MODEL.PIX2SEQ.NUM_CLASSES == 3
    assert list(cfg.MODEL.PIX2SEQ.TOKENIZER.CATEGORY_IDS) == []  # the compact layout does not use the ids
    assert check_config(cfg, for_training=True, num_workers=1) == []
    # a layout keyed by category ids gets the dataset's ids too
    official = _on(ids_137, "MODEL.PIX2SEQ.NUM_CLASSES", 0, "MODEL.PIX2SEQ.TOKENIZER.LAYOUT", "official")
    resolve_auto_settings(official)
    assert official.MODEL.PIX2SEQ.NUM_CLASSES == 3 and list(official.MODEL.PIX2SEQ.TOKENIZER.CATEGORY_IDS) == [1, 3, 7]
    assert check_config(official, for_training=True, num_workers=1) == []
    # frozen configs: a resolved copy
    frozen = _on(ids_137, "MODEL.PIX2SEQ.NUM_CLASSES", 0)
    frozen.freeze()
    with pytest.raises(ConfigError, match="before cfg.freeze"):
        resolve_auto_settings(frozen)
    copy = with_auto_settings(frozen)
    assert copy.MODEL.PIX2SEQ.NUM_CLASSES == 3 and copy.is_frozen() and frozen.MODEL.PIX2SEQ.NUM_CLASSES == 0


def test_num_classes_0_without_a_known_dataset_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"DATASETS.TRAIN\[0\] = 'nowhere_train', which is not registered"):
        resolve_auto_settings(tiny_cfg("DATASETS.TRAIN", ("nowhere_train",), "MODEL.PIX2SEQ.NUM_CLASSES", 0))
    with pytest.raises(ConfigError, match="DATASETS.TRAIN and DATASETS.TEST are empty"):
        resolve_auto_settings(tiny_cfg("DATASETS.TRAIN", (), "DATASETS.TEST", (), "MODEL.PIX2SEQ.NUM_CLASSES", 0))


def test_category_ids_of_the_official_layout_must_be_the_datasets(ids_137):
    official = ("MODEL.PIX2SEQ.TOKENIZER.LAYOUT", "official")
    message = _error(_on(ids_137, *official, "MODEL.PIX2SEQ.TOKENIZER.CATEGORY_IDS", [1, 2, 3]))
    assert "MODEL.PIX2SEQ.TOKENIZER.CATEGORY_IDS = [1, 2, 3] differs from the category ids" in message
    assert f"'{ids_137}'" in message and "[1, 3, 7]" in message
    assert check_config(_on(ids_137, *official, "MODEL.PIX2SEQ.TOKENIZER.CATEGORY_IDS", [1, 3, 7]), True, 1) == []
    warnings = check_config(_on(ids_137, *official), for_training=True, num_workers=1)  # empty: keyed by 0..2
    assert len(warnings) == 1 and "CATEGORY_IDS is empty" in warnings[0] and "[1, 3, 7]" in warnings[0]


def test_an_unregistered_dataset_stops_training_but_not_a_demo():
    message = _error(tiny_cfg("DATASETS.TRAIN", ("shapes_trian",), "DATASETS.TEST", ("mydata_never",)))
    assert "DATASETS.TRAIN names 'shapes_trian', which is not a registered dataset" in message
    assert "(did you mean 'shapes_train'" in message
    assert "DATASETS.TEST names 'mydata_never'" in message and "evaluation at the end of training" in message
    assert check_config(tiny_cfg("DATASETS.TEST", ("mydata_never",)), for_training=False) == []


def test_classes_known_only_once_loaded_are_checked_after_loading(tmp_path):
    name = f"loaded_late_{tmp_path.name}"

    def load() -> list[dict]:
        MetadataCatalog.get(name).thing_classes = ["a", "b"]
        return []

    DatasetCatalog.register(name, load)
    try:
        cfg = _on(name)  # NUM_CLASSES 3
        assert check_config(cfg, for_training=True, num_workers=1) == []  # nothing known yet
        DatasetCatalog.get(name)
        with pytest.raises(ConfigError, match=rf"NUM_CLASSES = 3 but DATASETS.TRAIN dataset '{name}' has 2 classes"):
            check_datasets(cfg, for_training=True)
    finally:
        _unregister(name)


# ---- the schedule, as detectron2's auto-scaling makes it ---------------------------------------
def test_r50_with_3_iterations_on_one_worker_names_the_auto_scaling():
    """The issue: MAX_ITER 3 silently became 24 iterations inside a 73,920-iteration warmup."""
    cfg = load_config(R50, ["SOLVER.MAX_ITER", 3, "MODEL.DEVICE", "cpu"])
    with pytest.raises(ConfigError) as error:
        check_schedule(cfg, num_workers=1)
    message = str(error.value)
    assert "SOLVER.WARMUP_ITERS = 73920 >= SOLVER.MAX_ITER = 24" in message
    assert "SOLVER.REFERENCE_WORLD_SIZE = 8 to 1 worker(s)" in message
    assert "MAX_ITER 3 -> 24" in message and "WARMUP_ITERS 9240 -> 73920" in message
    assert "set SOLVER.REFERENCE_WORLD_SIZE 0" in message and "the whole run is warmup" in message
    assert message in _error(cfg)  # check_config runs it in training
    # on the 8 workers it is written for nothing is scaled: a short run as written only warns
    assert "the whole run is warmup" in check_schedule(cfg, num_workers=8)[0]


def test_warmup_longer_than_the_run_as_written_warns():
    warnings = check_schedule(tiny_cfg("SOLVER.MAX_ITER", 2), num_workers=1)  # WARMUP_ITERS 100
    assert len(warnings) == 1 and "SOLVER.WARMUP_ITERS = 100 >= SOLVER.MAX_ITER = 2" in warnings[0]
    assert "peaks at" in warnings[0]


@pytest.mark.parametrize("workers", [1, 4, 8, 16])
def test_a_sound_schedule_passes(workers):
    assert check_schedule(load_config(R50, ["MODEL.DEVICE", "cpu"]), num_workers=workers) == []
    assert check_schedule(tiny_cfg(), num_workers=workers) == []


@pytest.mark.parametrize(
    "opts, workers, expected",
    [
        (["SOLVER.MAX_ITER", 1], 32, "SOLVER.MAX_ITER = 1 becomes 0 after detectron2's auto-scaling"),
        (["SOLVER.CHECKPOINT_PERIOD", 2], 32, "SOLVER.CHECKPOINT_PERIOD = 2 becomes 0"),
        (["SOLVER.IMS_PER_BATCH", 100], 1, "SOLVER.IMS_PER_BATCH = 100 is not a multiple of SOLVER.REFERENCE_WORLD"),
        (["SOLVER.REFERENCE_WORLD_SIZE", 0, "SOLVER.IMS_PER_BATCH", 12], 8, "must be a positive multiple of the 8"),
    ],
)
def test_a_schedule_that_scaling_breaks_is_an_error(opts, workers, expected):
    with pytest.raises(ConfigError, match=expected):
        check_schedule(load_config(R50, ["MODEL.DEVICE", "cpu", *opts]), num_workers=workers)


def test_a_learning_rate_that_stays_low_warns():
    steps = tiny_cfg(
        "SOLVER.LR_SCHEDULER_NAME", "WarmupMultiStepLR", "SOLVER.STEPS", (100,), "SOLVER.GAMMA", 0.01,
        "SOLVER.MAX_ITER", 1000, "SOLVER.WARMUP_ITERS", 10,
    )  # fmt: skip
    (warning,) = check_schedule(steps, num_workers=1)
    assert "stays below 10% of SOLVER.BASE_LR for 90% of the 1000 iterations" in warning
    (warning,) = check_schedule(tiny_cfg("SOLVER.MAX_ITER", 1000, "SOLVER.WARMUP_ITERS", 700), num_workers=1)
    assert "takes 70% of the 1000 iterations" in warning


# ---- every shipped config, and the trainer ---------------------------------------------------------
@pytest.fixture(scope="module")
def mydata(tmp_path_factory) -> Iterator[None]:
    """configs/official/finetune_mydata.yaml's datasets: category ids 1, 3, 7, as its comment says."""
    folder = tmp_path_factory.mktemp("mydata")
    names = [n for n in ("mydata_train", "mydata_val") if n not in DatasetCatalog.list()]
    for name in names:
        (folder / name).mkdir()
        _register_ids_137(name, folder / name)
    yield
    _unregister(*names)


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: os.path.relpath(p, REPO_ROOT))
def test_every_shipped_config_passes(path, mydata):
    cfg = resolve_auto_settings(load_config(path, ["MODEL.DEVICE", "cpu"]))  # as the entry points do
    assert check_config(cfg, for_training=False) == []
    if len(cfg.DATASETS.TRAIN):  # the Objects365 configs name no data: inference only
        assert check_config(cfg, for_training=True, num_workers=1) == []


def test_the_trainer_stops_at_construction_before_building_anything(tmp_path, monkeypatch):
    def must_not_build(cls, cfg):
        raise AssertionError("the model was built before the config was checked")

    monkeypatch.setattr(Pix2SeqTrainer, "build_model", classmethod(must_not_build))
    with pytest.raises(ConfigError, match=r"MODEL.PIX2SEQ.MAX_OBJECTS = 0: must be an integer >= 1"):
        Pix2SeqTrainer(tiny_cfg("MODEL.PIX2SEQ.MAX_OBJECTS", 0, "OUTPUT_DIR", str(tmp_path)))
    r50 = load_config(R50, ["SOLVER.MAX_ITER", 3, "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path)])
    with pytest.raises(ConfigError, match="REFERENCE_WORLD_SIZE"):
        Pix2SeqTrainer(r50)
    with pytest.raises(ConfigError, match="TEST.DETECTIONS_PER_IMAGE = 0"):
        Pix2SeqTrainer.test(tiny_cfg("TEST.DETECTIONS_PER_IMAGE", 0), model=None)


def test_the_trainer_builds_a_model_with_num_classes_0():
    cfg = tiny_cfg("MODEL.PIX2SEQ.NUM_CLASSES", 0, "MODEL.DEVICE", "cpu")
    cfg.freeze()  # as train_net gives it
    assert Pix2SeqTrainer.build_model(cfg).tokenizer.num_classes == 3  # shapes_train's circle, square, triangle
