"""Published checkpoints by name, fetched from a real HTTP server on 127.0.0.1 that serves the fixture
checkpoints as a mirror of the public locations (``PIX2SEQ_ZOO_MIRROR``): the files arrive intact, a second
fetch makes no request, an interrupted shard resumes, broken files are refused before conversion and
removed from the cache, and the conversion equals converting the fixture directly (and the reference
digests of test_converted_reference.py). Then ``tools/convert_pix2seq_checkpoint.py --model``."""

from __future__ import annotations

import filecmp
import json
import os
import sys

import pytest
import torch

from pix2seq_d2.config import load_config
from pix2seq_d2.conversion import (
    ConversionError,
    checkpoint_folder,
    convert_checkpoint,
    convert_published,
    fetch_checkpoint,
)
from pix2seq_d2.model_zoo import MIRROR_ENV_VAR, PUBLISHED_CHECKPOINTS, DownloadError, shipped_config_file
from pix2seq_d2.model_zoo.download import PART_SUFFIX
from tests.conversion.test_converted_reference import REFERENCE, tensor_digest
from tests.helpers import REPO_ROOT
from tests.helpers.http_server import FileServer

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import convert_pix2seq_checkpoint as tool  # noqa: E402

FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures", "pix2seq_official")
TF_FILES = ["checkpoint", "ckpt-1.index", "ckpt-1.data-00000-of-00001", "config.json"]
# published name -> the fixture served as its files (a tiny model of the same family)
SERVED = {
    "official/R50_640": "official_resnet",
    "official/R50_C4_640": "official_resnet_c4",
    "official/ViT_B_640": "official_vit",
    "pretrained_pix2seq/R50_1333": "pretrained_pix2seq",
}
DATA = "ckpt-1.data-00000-of-00001"


def fixture_path(name: str) -> str:
    """What converting the fixture directly takes: its folder, or the .pth."""
    folder = os.path.join(FIXTURES, SERVED[name])
    return os.path.join(folder, "checkpoint.pth") if name.startswith("pretrained") else folder


@pytest.fixture
def server(monkeypatch):
    """Every fixture of SERVED under ``/<name>/<file>``, set as the mirror of the published locations."""
    with FileServer() as running:
        for name, case in SERVED.items():
            files = ["checkpoint.pth"] if name.startswith("pretrained") else TF_FILES
            running.serve_folder(f"/{name}", os.path.join(FIXTURES, case), files)
        monkeypatch.setenv(MIRROR_ENV_VAR, running.base_url)
        yield running


@pytest.fixture
def cache(tmp_path) -> str:
    return str(tmp_path / "cache")


def test_the_fixture_served_as_each_name_has_its_family():
    for name in SERVED:
        assert name in PUBLISHED_CHECKPOINTS


@pytest.mark.parametrize("name", sorted(SERVED))
def test_fetch_convert_is_the_fixtures_conversion(name, server, cache):
    converted = convert_published(name, cache=cache, progress=False)
    folder = checkpoint_folder(name, cache)
    if name.startswith("official/"):
        assert server.paths_requested() == [f"/{name}/{file}" for file in TF_FILES]  # state, index, shard, config
        for file in TF_FILES:
            assert filecmp.cmp(os.path.join(folder, file), os.path.join(fixture_path(name), file), shallow=False)
    else:
        assert filecmp.cmp(os.path.join(folder, "checkpoint.pth"), fixture_path(name), shallow=False)
    assert not [f for f in os.listdir(folder) if f.endswith(PART_SUFFIX)]

    entry = PUBLISHED_CHECKPOINTS[name]
    direct = convert_checkpoint(entry.source, fixture_path(name), **entry.options)
    assert converted.state_dict.keys() == direct.state_dict.keys()
    assert all(torch.equal(converted.state_dict[k], v) for k, v in direct.state_dict.items())
    with open(REFERENCE) as f:  # ... and the tensors the converter wrote before the model zoo existed
        reference = json.load(f)[os.path.relpath(fixture_path(name), FIXTURES)]
    assert tensor_digest(converted.state_dict) == reference["sha256"]
    assert converted.base_config == shipped_config_file(entry.config)
    assert f"published checkpoint {name}: {entry.url}" in converted.notes

    requests = len(server.requests)
    assert fetch_checkpoint(name, cache=cache, progress=False) in (folder, os.path.join(folder, "checkpoint.pth"))
    assert len(server.requests) == requests  # everything cached: no request


def test_an_interrupted_shard_resumes_where_it_stopped(server, cache):
    name = "official/R50_640"
    server.cut[f"/{name}/{DATA}"] = 1_000_000
    with pytest.raises(DownloadError, match="interrupted"):
        fetch_checkpoint(name, cache=cache, progress=False, retries=0)
    part = os.path.join(checkpoint_folder(name, cache), DATA + PART_SUFFIX)
    assert os.path.getsize(part) == 1_000_000
    fetch_checkpoint(name, cache=cache, progress=False, retries=0)
    assert server.requests[-2:] == [(f"/{name}/{DATA}", "bytes=1000000-"), (f"/{name}/config.json", None)]
    shard = os.path.join(checkpoint_folder(name, cache), DATA)
    assert filecmp.cmp(shard, os.path.join(FIXTURES, "official_resnet", DATA), shallow=False)


def test_a_folder_without_config_json(server, cache):
    name = "official/R50_C4_640"
    del server.files[f"/{name}/config.json"]
    converted = convert_published(name, cache=cache, progress=False)  # the table gives size and classes
    assert converted.overrides["INPUT.LSJ.IMAGE_SIZE"] == 640 and converted.overrides["MODEL.PIX2SEQ.NUM_BINS"] == 1000
    assert os.path.isfile(os.path.join(checkpoint_folder(name, cache), "config.json.absent"))
    requests = len(server.requests)
    fetch_checkpoint(name, cache=cache, progress=False)
    assert len(server.requests) == requests  # the 404 is remembered


def served_bytes(server: FileServer, path: str, content: bytes) -> None:
    server.files[path] = content


@pytest.mark.parametrize(
    "file, content, message",
    [
        ("checkpoint", b"<html><body>Sign in to continue</body></html>\n", "not a TensorFlow checkpoint state file"),
        ("checkpoint", b'model_checkpoint_path: "../../etc/x y"\n', "not a file name"),
        ("ckpt-1.index", b"\x00\x01" * 300, "not a TensorFlow checkpoint index"),
        (DATA, b"\x00" * 1000, "truncated"),
    ],
    ids=["state-is-html", "state-names-a-path", "index-garbage", "shard-truncated"],
)
def test_broken_official_files_are_refused_and_removed(file, content, message, server, cache):
    name = "official/R50_640"
    served_bytes(server, f"/{name}/{file}", content)
    with pytest.raises(ConversionError, match=message) as err:
        convert_published(name, cache=cache, progress=False)
    assert server.url(f"/{name}/{file}") in str(err.value)
    assert not os.path.exists(os.path.join(checkpoint_folder(name, cache), file))  # the next run downloads it again
    if file == "checkpoint" and b"html" in content:
        assert "it is an HTML page" in str(err.value)


def test_a_pretrained_file_that_is_not_a_checkpoint(server, cache):
    name = "pretrained_pix2seq/R50_1333"
    served_bytes(server, f"/{name}/checkpoint.pth", b"<!DOCTYPE html><html>Google Drive - virus scan warning</html>")
    with pytest.raises(ConversionError, match="not a PyTorch checkpoint: it is an HTML page") as err:
        convert_published(name, cache=cache, progress=False)
    assert server.url(f"/{name}/checkpoint.pth") in str(err.value)
    assert not os.path.exists(os.path.join(checkpoint_folder(name, cache), "checkpoint.pth"))


def test_files_of_another_model_are_refused(server, cache):
    server.serve_folder("/official/R50_1333", os.path.join(FIXTURES, "official_vit"), TF_FILES)  # a ViT, not an R50
    with pytest.raises(ConversionError, match="should convert to official/pix2seq_R50_1333.yaml, but its tensors"):
        convert_published("official/R50_1333", cache=cache, progress=False)


# ---------------------------------------------------------------------------------------------- the tool
def test_tool_converts_a_published_checkpoint(server, cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PIX2SEQ_CACHE", cache)
    result = tool.main(["--model", "official/ViT_B_640", "--output", str(tmp_path / "out" / "vit.pth")])
    captured = capsys.readouterr()
    assert f"fetching:         official/ViT_B_640 into {os.path.join(cache, 'official', 'ViT_B_640')}" in captured.err
    assert "note:             published checkpoint official/ViT_B_640: https://storage.googleapis.com/" in captured.out
    cfg = load_config(result["yaml"])  # OUTPUT.yaml's _BASE_ is the shipped config
    with open(result["yaml"]) as f:
        assert f'_BASE_: "{shipped_config_file("official/pix2seq_ViT_B_640.yaml")}"' in f.read()
    assert cfg.MODEL.BACKBONE.NAME == "build_pix2seq_vit_backbone" and cfg.MODEL.WEIGHTS == result["pth"]
    saved = torch.load(result["pth"], weights_only=True)["model"]
    direct = convert_checkpoint("official", fixture_path("official/ViT_B_640")).state_dict
    assert saved.keys() == direct.keys() and all(torch.equal(saved[k], v) for k, v in direct.items())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "official/R50_640", "somewhere", "--output", "o.pth"], "--model downloads its files: no PATH"),
        (
            ["--model", "official/R50_640", "--image-size", "640", "--output", "o.pth"],
            "--image-size applies to --source",
        ),
        (["--model", "official/R50_640", "--source", "official", "--output", "o.pth"], "not allowed with argument"),
        (["--output", "o.pth"], "give --model NAME"),
        (["--source", "official", "--output", "o.pth"], "--source official needs the PATH"),
        (["--model", "official/R50_640"], "--output OUT.pth is required"),
        (["--model", "official/R50_6400", "--output", "o.pth"], "invalid choice"),
    ],
)
def test_tool_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tool.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_tool_download_error_is_one_line(server, cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PIX2SEQ_CACHE", cache)
    server.status["/official/R50_640/checkpoint"] = 404
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--model", "official/R50_640", "--output", str(tmp_path / "o.pth")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert f"error: cannot download {server.url('/official/R50_640/checkpoint')}: HTTP 404" in err
    assert not os.path.exists(tmp_path / "o.pth")


def test_tool_lists_the_published_checkpoints(capsys):
    assert tool.main(["--list-models"]) is None
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == sorted(PUBLISHED_CHECKPOINTS)
    assert (
        "official/pix2seq_ViT_L_obj365_640.yaml"
        in out[sorted(PUBLISHED_CHECKPOINTS).index("official/ViT_L_obj365_640")]
    )
