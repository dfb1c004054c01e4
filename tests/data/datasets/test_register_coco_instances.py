"""Datasets registered by detectron2's ``register_coco_instances`` are read by the one checked COCO reader once an
entry point has seen them (pix2seq_d2/data/datasets/register_coco.py): broken json, string or null values,
duplicate ids and a string ``iscrowd`` are errors naming the file and the item, as with ``DATASETS.COCO``,
through ``prepare_config``, ``DatasetCatalog.get`` after it, the trainer, the training loader and the LazyConfigs'
test loader; a json with a UTF-8 BOM trains and evaluates end to end."""

from __future__ import annotations

import json
import math

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, register_coco_instances

from pix2seq_d2.config import prepare_config
from pix2seq_d2.data.datasets import (
    CocoJsonError,
    EmptyDatasetError,
    checked_dataset_dicts,
    is_registered_by_register_coco_instances,
    register_coco_datasets,
    use_checked_coco_loader,
)
from pix2seq_d2.data.resumable_loader import load_train_dataset_dicts
from pix2seq_d2.engine.trainer import Pix2SeqTrainer
from tests.data.datasets.test_coco import _annotation, _image, boxes_of, valid_coco, write_json
from tests.helpers import tiny_cfg


@pytest.fixture
def register(tmp_path):
    """``register(name, content)``: writes ``content`` (a COCO dict, or bytes) to ``<name>.json`` next to real
    images and registers it with detectron2's ``register_coco_instances``; returns the json's path. The names
    are removed from the catalogs afterwards."""
    used = []
    valid_coco(tmp_path)  # the images

    def register(name: str, content, metadata: dict | None = None) -> str:
        json_file = write_json(tmp_path / f"{name}.json", content)
        name = f"{name}_{tmp_path.name}"
        register_coco_instances(name, dict(metadata or {}), json_file, str(tmp_path))
        used.append(name)
        return json_file

    yield register
    for name in used:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _cfg(tmp_path, train: tuple[str, ...], test: tuple[str, ...] = (), *opts):
    return tiny_cfg(
        "DATASETS.TRAIN", train, "DATASETS.TEST", test, "MODEL.PIX2SEQ.NUM_CLASSES", 3, "SOLVER.IMS_PER_BATCH", 2,
        "SOLVER.MAX_ITER", 2, "OUTPUT_DIR", str(tmp_path / "out"), *opts,
    )  # fmt: skip


def test_detectron2s_register_coco_instances_is_recognised(register, tmp_path):
    """What the re-routing relies on: register_coco_instances registers a function defined inside it. If detectron2
    changes that, this fails (and its datasets would silently keep detectron2's reader)."""
    register("mine", valid_coco())
    name = f"mine_{tmp_path.name}"
    assert is_registered_by_register_coco_instances(name)
    # detectron2's builtins register the same way (one no test or config names: prepare_config re-routes those)
    assert is_registered_by_register_coco_instances("coco_2017_val_100")
    assert not is_registered_by_register_coco_instances("shapes_train")  # registered by this package
    assert not is_registered_by_register_coco_instances(f"nope_{tmp_path.name}")
    DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: load_coco_json(str(tmp_path / "mine.json"), str(tmp_path), name))
    assert not is_registered_by_register_coco_instances(name)  # the user's own function: left alone
    assert use_checked_coco_loader([name]) == []


def test_prepare_config_routes_the_configs_datasets_to_the_checked_reader_keeping_their_metadata(register, tmp_path):
    train = register("train", valid_coco(), {"thing_colors": [(1, 2, 3)] * 3})
    register("val", valid_coco())
    register("other", valid_coco())
    names = {key: f"{key}_{tmp_path.name}" for key in ("train", "val", "other")}
    prepare_config(_cfg(tmp_path, (names["train"],), (names["val"],)), for_training=True)
    assert [is_registered_by_register_coco_instances(n) for n in names.values()] == [False, False, True]
    assert "load_coco_json_checked" in repr(DatasetCatalog[names["train"]])
    meta = MetadataCatalog.get(names["train"])
    assert (meta.json_file, meta.image_root, meta.thing_colors) == (train, str(tmp_path), [(1, 2, 3)] * 3)
    dicts = DatasetCatalog.get(names["train"])
    expected = load_coco_json(train, str(tmp_path), names["other"])  # detectron2's reader on the same file
    assert boxes_of(dicts) == boxes_of(expected)
    assert [a["id"] for d in dicts for a in d["annotations"]] == [21, 11, 12, 13]  # the json's own ids
    assert meta.thing_classes == ["one", "three", "seven"] and meta.thing_dataset_id_to_contiguous_id == {
        1: 0,
        3: 1,
        7: 2,
    }
    assert use_checked_coco_loader(names.values()) == [names["other"]]  # again: only what is left
    with pytest.raises(ValueError, match=f"'{names['val']}' .*already registered with json"):  # not two datasets
        register_coco_datasets(tiny_cfg("DATASETS.COCO", [[names["val"], train, str(tmp_path)]]))


def _mutated(mutate):
    coco = valid_coco()
    mutate(coco)
    return coco


BROKEN = [
    pytest.param(b'{"images": [{"id": 1,', ["is not valid json", "line 1 column 22"], id="broken_json"),
    pytest.param(
        _mutated(lambda c: _annotation(c, 21).update(iscrowd="1")),
        ["annotation id 21 of image sub/b.png (id 2)", "'iscrowd' is \"1\" (a string), expected 0 or 1"],
        id="string_iscrowd",
    ),
    pytest.param(
        _mutated(lambda c: _annotation(c, 12).update(id=11)),
        ["annotation id 11 of image a.png (id 5)", "duplicate annotation id"],
        id="duplicate_annotation_id",
    ),
    pytest.param(
        _mutated(lambda c: _image(c, 2).update(id=5)),
        ["image #1 (id 5, 'sub/b.png')", "duplicate image id"],
        id="duplicate_image_id",
    ),
    pytest.param(
        _mutated(lambda c: _image(c, 5).update(height=None)), ["'a.png'", "'height' is null"], id="null_height"
    ),
    pytest.param(
        _mutated(lambda c: _annotation(c, 13).update(category_id=None)),
        ["annotation id 13 of image a.png (id 5)", "'category_id' null is not among the categories' ids [1, 3, 7]"],
        id="null_category",
    ),
    pytest.param(
        _mutated(lambda c: _annotation(c, 11).update(image_id="5")),
        ["annotation id 11", "'image_id' \"5\" (a string) is not the id of an image"],
        id="string_image_id",
    ),
]


@pytest.mark.parametrize(("content", "expected"), BROKEN)
def test_a_broken_json_is_an_error_naming_the_file_and_item_after_prepare_config(register, tmp_path, content, expected):
    json_file = register("broken", content)
    name = f"broken_{tmp_path.name}"
    prepare_config(_cfg(tmp_path, (name,)), for_training=True)
    for load in (lambda: DatasetCatalog.get(name), lambda: load_train_dataset_dicts([name])):
        with pytest.raises(CocoJsonError) as info:
            load()
        message = str(info.value)
        assert json_file in message and all(text in message for text in expected), message


@pytest.mark.parametrize(("content", "expected"), [BROKEN[1], BROKEN[2]])
def test_the_trainer_stops_with_the_named_error(register, tmp_path, content, expected):
    json_file = register("broken", content)
    with pytest.raises(CocoJsonError) as info:
        Pix2SeqTrainer(_cfg(tmp_path, (f"broken_{tmp_path.name}",)))
    assert json_file in str(info.value) and all(text in str(info.value) for text in expected)


def test_loaders_built_without_prepare_config_use_the_checked_reader_too(register, tmp_path):
    """The training loader (yaml and LazyConfig) and the LazyConfigs' test loader re-route their own datasets."""
    register("train", BROKEN[2].values[0])
    register("test", BROKEN[1].values[0])
    with pytest.raises(CocoJsonError, match="duplicate annotation id"):
        load_train_dataset_dicts(f"train_{tmp_path.name}")
    with pytest.raises(CocoJsonError, match="'iscrowd' is \"1\" \\(a string\\)"):
        checked_dataset_dicts(f"test_{tmp_path.name}", filter_empty=False)
    with pytest.raises(CocoJsonError, match="duplicate annotation id"):
        Pix2SeqTrainer.build_train_loader(_cfg(tmp_path, (f"train_{tmp_path.name}",)))


def test_a_custom_function_calling_detectron2s_reader_is_explained_by_the_checked_reader(tmp_path):
    """A dataset whose own function calls detectron2's load_coco_json keeps it; when that fails on an unknown
    category (a bare KeyError), the training loader names the file and the annotation."""
    coco = valid_coco(tmp_path)
    _annotation(coco, 12)["category_id"] = 42
    json_file = write_json(tmp_path / "custom.json", coco)
    name = f"custom_{tmp_path.name}"
    DatasetCatalog.register(name, lambda: load_coco_json(json_file, str(tmp_path), name))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=str(tmp_path), evaluator_type="coco")
    try:
        with pytest.raises(ValueError) as info:
            load_train_dataset_dicts([name])
        assert isinstance(info.value.__cause__, KeyError)
        message = str(info.value)
        assert f"Cannot load the training set ('{name}',)" in message and json_file in message
        assert "annotation id 12 of image a.png (id 5): 'category_id' 42 is not among" in message
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_an_image_info_json_without_annotations_loads_as_a_test_set(register, tmp_path, caplog):
    """detectron2's builtin test sets (coco_2017_test-dev) are image-info files: no "annotations" list."""
    coco = valid_coco()
    del coco["annotations"]
    json_file = register("testdev", coco)
    name = f"testdev_{tmp_path.name}"
    use_checked_coco_loader([name])
    dicts = DatasetCatalog.get(name)
    assert [d["image_id"] for d in dicts] == [2, 5, 9] and all(d["annotations"] == [] for d in dicts)
    assert f'COCO json {json_file} has no "annotations" list: loaded as a test set' in caplog.text
    register("noimages", {**coco, "images": []})  # an empty dataset: the loaders name it
    with pytest.raises(EmptyDatasetError, match=f"dataset 'noimages_{tmp_path.name}' has no images"):
        checked_dataset_dicts(f"noimages_{tmp_path.name}")


def test_a_json_with_a_utf8_bom_trains_and_evaluates_like_the_same_file_without(register, tmp_path):
    """The loader accepts a BOM, and so does the evaluation at the end of training (pycocotools alone crashes on
    it): the same model evaluated on both files gives the same numbers."""
    coco = valid_coco()
    for annotation in coco["annotations"]:
        annotation["area"] *= 0.5  # the file's areas, not the boxes': a conversion would change APs/APm/APl
    bom = register("bom", b"\xef\xbb\xbf" + json.dumps(coco).encode("utf-8"))
    register("plain", coco)
    with open(bom, "rb") as f:
        assert f.read(3) == b"\xef\xbb\xbf"
    names = (f"bom_{tmp_path.name}", f"plain_{tmp_path.name}")
    # Boxes for every image even from an untrained model: fixed length, seeded sampling.
    cfg = _cfg(
        tmp_path, names[:1], names, "MODEL.PIX2SEQ.DECODE.STOP_AT_EOS", False, "MODEL.PIX2SEQ.MAX_OBJECTS_TEST", 3,
        "MODEL.PIX2SEQ.DECODE.STRATEGY", "sample", "MODEL.PIX2SEQ.DECODE.TOP_P", 1.0, "MODEL.PIX2SEQ.DECODE.SEED", 0,
        "TEST.COCO_EVAL_BACKEND", "pycocotools",
    )  # fmt: skip
    trainer = Pix2SeqTrainer(cfg)
    trainer.train()  # evaluates on both after the last iteration
    metrics = {key: value for key, (value, _) in trainer.storage.latest().items() if "/bbox/" in key}
    on_bom = {key.split("/", 1)[1]: value for key, value in metrics.items() if key.startswith(names[0])}
    on_plain = {key.split("/", 1)[1]: value for key, value in metrics.items() if key.startswith(names[1])}
    assert {"bbox/AP", "bbox/APs", "bbox/AR@100"} <= on_bom.keys() and on_bom.keys() == on_plain.keys()
    assert any(math.isfinite(v) for v in on_bom.values())  # boxes were predicted and evaluated
    for key, value in on_bom.items():
        assert (math.isnan(value) and math.isnan(on_plain[key])) or value == on_plain[key], key
    assert (tmp_path / "out" / "inference" / names[0] / "coco_instances_results.json").is_file()
