"""The table of published checkpoints matches the configs: every configs/official model config has an entry
and every entry a config, with the download location its config's comment names and the settings it holds."""

from __future__ import annotations

import glob
import os
import re

import pytest

from pix2seq_d2.model_zoo import (
    MIRROR_ENV_VAR,
    PUBLISHED_CHECKPOINTS,
    UnknownCheckpointError,
    get_config,
    published_checkpoint,
    shipped_config_file,
)
from pix2seq_d2.model_zoo.checkpoints import OFFICIAL_BUCKET_URL
from tests.helpers import REPO_ROOT

OFFICIAL_CONFIGS = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "official", "pix2seq_*.yaml")))


def checkpoint_comment(path: str) -> str:
    """The location a config's ``# Checkpoint: ...`` comment names."""
    match = re.search(r"^# Checkpoint: (\S+)", open(path).read(), re.MULTILINE)
    assert match, f"{path} names no checkpoint"
    return match.group(1)


def test_every_official_config_has_an_entry_and_every_entry_a_config():
    configs = {os.path.relpath(p, os.path.join(REPO_ROOT, "configs")) for p in OFFICIAL_CONFIGS}
    table = {entry.config for entry in PUBLISHED_CHECKPOINTS.values()}
    assert configs == table
    assert len(table) == len(PUBLISHED_CHECKPOINTS) == 17  # no config twice
    for entry in PUBLISHED_CHECKPOINTS.values():
        assert os.path.isfile(shipped_config_file(entry.config))


@pytest.mark.parametrize("path", OFFICIAL_CONFIGS, ids=os.path.basename)
def test_entry_fetches_what_its_config_names(path):
    entry = next(e for e in PUBLISHED_CHECKPOINTS.values() if path.endswith(e.config))
    location = checkpoint_comment(path)
    if location.startswith("gs://pix2seq/"):
        assert entry.source == "official" and entry.name.startswith("official/")
        assert entry.url == OFFICIAL_BUCKET_URL + "/" + location.removeprefix("gs://pix2seq/")
        assert entry.url.startswith("https://storage.googleapis.com/pix2seq/")
    else:  # Pretrained-Pix2Seq's Google Drive file
        file_id = re.search(r"drive\.google\.com/file/d/([\w-]+)/", location).group(1)
        assert entry.source == "pretrained_pix2seq" and f"id={file_id}&" in entry.url
        assert entry.url.startswith("https://") and entry.file_name == "checkpoint.pth"


@pytest.mark.parametrize("name", sorted(n for n in PUBLISHED_CHECKPOINTS if n.startswith("official/")))
def test_official_settings_agree_with_the_config(name):
    entry = PUBLISHED_CHECKPOINTS[name]
    cfg = get_config(entry.config)
    size, dataset = entry.options["image_size"], entry.options["dataset"]
    assert cfg.INPUT.LSJ.IMAGE_SIZE == cfg.MODEL.PIX2SEQ.PAD_TO_SQUARE == size
    assert cfg.MODEL.PIX2SEQ.NUM_CLASSES == (365 if dataset == "objects365" else 80)
    assert ("obj365" in name) == (dataset == "objects365") == ("/obj365_pretrain/" in entry.url)
    assert entry.url.endswith(f"{size}x{size}" + ("_b256_s400k" if "obj365" in name else ""))


def test_mirror_and_file_urls(monkeypatch):
    monkeypatch.delenv(MIRROR_ENV_VAR, raising=False)
    official, pretrained = (
        PUBLISHED_CHECKPOINTS["official/R50_640"],
        PUBLISHED_CHECKPOINTS["pretrained_pix2seq/R50_1333"],
    )
    assert (
        official.file_url("checkpoint")
        == "https://storage.googleapis.com/pix2seq/coco_det_finetune/resnet_640x640/checkpoint"
    )
    assert pretrained.file_url("checkpoint.pth") == pretrained.url
    monkeypatch.setenv(MIRROR_ENV_VAR, "http://127.0.0.1:9/zoo/")
    assert official.file_url("ckpt-1.index") == "http://127.0.0.1:9/zoo/official/R50_640/ckpt-1.index"
    assert pretrained.file_url("checkpoint.pth") == "http://127.0.0.1:9/zoo/pretrained_pix2seq/R50_1333/checkpoint.pth"


def test_unknown_names_suggest_the_closest():
    assert published_checkpoint("official/ViT_L_1333").config == "official/pix2seq_ViT_L_1333.yaml"
    with pytest.raises(UnknownCheckpointError, match="did you mean official/R50_640") as err:
        published_checkpoint("official/R50-640")
    assert str(err.value).startswith("no published checkpoint called 'official/R50-640'")
