"""tools/convert_pix2seq_checkpoint.py on the converter fixtures, and conversion errors on broken copies of them.

Every fixture checkpoint (each ``*/ckpt-*.index`` folder and each ``*/checkpoint.pth`` under
``fixtures/pix2seq_official``, found by globbing) is converted by the tool; the written ``.pth`` must load
weights-only into the model its ``.yaml`` builds and fill every parameter and buffer with exactly the converted
tensor. Broken checkpoints are real files written here (TF ones with ``tests/tf_checkpoint_writer.py``): each
must fail with an error that names the file and the tensor, and the tool must turn it into ``error: ...`` and
exit status 2.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from pix2seq_d2.checkpoint import Pix2SeqCheckpointer
from pix2seq_d2.config import load_config
from pix2seq_d2.conversion import ConversionError, TFCheckpoint, TFCheckpointError, convert_checkpoint
from tests.helpers import REPO_ROOT
from tests.helpers.tf_checkpoint_writer import write_tf_checkpoint_arrays

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import convert_pix2seq_checkpoint as tool  # noqa: E402

TOOL = os.path.join(REPO_ROOT, "tools", "convert_pix2seq_checkpoint.py")
FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures", "pix2seq_official")
OFFICIAL = sorted({os.path.dirname(p) for p in glob.glob(os.path.join(FIXTURES, "*", "ckpt-*.index"))})
PRETRAINED = sorted(glob.glob(os.path.join(FIXTURES, "*", "checkpoint.pth")))
CASES = [("official", case) for case in OFFICIAL] + [("pretrained_pix2seq", path) for path in PRETRAINED]
CASE_IDS = [os.path.basename(case) for case in OFFICIAL] + [os.path.basename(os.path.dirname(p)) for p in PRETRAINED]

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
TOKEN_EMBEDDING = "model/decoder/ar_decoder.Stoken_embedding" + SUFFIX
VIT_STEM = "model/encoder/stem_conv/kernel" + SUFFIX
RESNET_STEM = "model/encoder/resnet/initial_conv_relu_max_pool/0/conv2d/kernel" + SUFFIX


# ------------------------------------------------------------------------------------------------ helpers
def model_variables(names) -> list[str]:
    """The official names that are model weights (no optimizer slot), sorted."""
    return sorted(n for n in names if n.startswith("model/") and "/.OPTIMIZER_SLOT/" not in n)


def official_arrays(case: str) -> dict[str, np.ndarray]:
    """Every numeric tensor of an official case (the string object graph has no numpy form)."""
    return dict(TFCheckpoint(case).items())


def write_official(folder, arrays: dict[str, np.ndarray], like: str) -> str:
    """``arrays`` as a TF checkpoint folder with ``like``'s ``config.json`` (image size, bins) -> the folder."""
    write_tf_checkpoint_arrays(folder, arrays)
    if os.path.isfile(os.path.join(like, "config.json")):
        shutil.copy(os.path.join(like, "config.json"), os.path.join(folder, "config.json"))
    return str(folder)


def load_pretrained(path: str) -> dict:
    """A Pretrained-Pix2Seq ``checkpoint.pth`` as saved (``args`` stays an ``argparse.Namespace``)."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def save_pretrained(path, checkpoint: dict, model: dict) -> str:
    torch.save({**checkpoint, "model": model}, path)
    return str(path)


def pick(names: list[str], n: int, seed: int) -> list[str]:
    """``n`` names chosen reproducibly."""
    rng = np.random.default_rng(seed)
    return [names[i] for i in sorted(rng.choice(len(names), size=n, replace=False))]


def run_tool(*argv: str) -> dict:
    return tool.main([str(a) for a in argv])


# ------------------------------------------------------------------------------------------ conversions
def test_fixtures_found():
    assert OFFICIAL, f"no */ckpt-*.index under {FIXTURES}"
    assert PRETRAINED, f"no */checkpoint.pth under {FIXTURES}"


def check_summary(out: str, result: dict) -> None:
    converted = result["converted"]
    assert f"source:           {converted.source_kind} {converted.source}" in out
    assert f"converted:        {len(converted.state_dict)} tensors" in out
    ignored = re.search(r"^ignored: +(\d+)(?: \((.*)\))?$", out, re.MULTILINE)
    assert ignored and int(ignored.group(1)) == len(converted.ignored), out
    counts = dict(item.split(": ") for item in ignored.group(2).split(", ")) if ignored.group(2) else {}
    assert sum(int(n) for n in counts.values()) == len(converted.ignored)
    for name in converted.ignored:
        assert (".OPTIMIZER_SLOT" if "/.OPTIMIZER_SLOT/" in name else name.split("/")[0]) in counts, name
    assert os.path.relpath(converted.base_config, REPO_ROOT) in out
    assert re.search(r"^time: +\d+\.\d+ s$", out, re.MULTILINE)
    assert result["pth"] in out and result["yaml"] in out
    assert f"python tools/train_net.py --config-file {result['yaml']} --eval-only" in out


def check_written(result: dict) -> None:
    """The .pth loads weights-only; the .yaml builds a model that takes every tensor, exactly."""
    converted = result["converted"].state_dict
    saved = torch.load(result["pth"], map_location="cpu", weights_only=True)
    assert isinstance(saved["model"], dict) and saved["model"].keys() == converted.keys()
    for name, tensor in saved["model"].items():
        assert tensor.dtype == converted[name].dtype and torch.equal(tensor, converted[name]), name

    cfg = load_config(result["yaml"])
    cfg.MODEL.DEVICE = "cpu"
    assert cfg.MODEL.WEIGHTS == os.path.abspath(result["pth"])
    model = build_model(cfg).eval()
    with torch.no_grad():  # a parameter the load skipped would stay NaN
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.fill_(float("nan"))
    Pix2SeqCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    state = model.state_dict()
    assert sorted(state) == sorted(converted)
    wrong = [k for k in state if state[k].shape != converted[k].shape or not torch.equal(state[k], converted[k])]
    assert not wrong, f"{len(wrong)} model tensors differ from the converted ones: {wrong[:5]}"


@pytest.mark.parametrize("source, path", CASES, ids=CASE_IDS)
def test_convert_in_process(source, path, tmp_path, capsys):
    result = run_tool("--source", source, path, "--output", tmp_path / "converted" / "model.pth")
    out = capsys.readouterr().out
    assert result["pth"] == str(tmp_path / "converted" / "model.pth")
    assert result["yaml"] == str(tmp_path / "converted" / "model.yaml")
    assert result["converted"].source_kind == source
    if source == "official":  # every TF variable was taken, or is not a model weight (step counters, optimizer)
        ignored, names = result["converted"].ignored, TFCheckpoint(path).keys()
        assert not model_variables(ignored), ignored
        assert len(ignored) + len(model_variables(names)) == len(names)
    check_summary(out, result)
    check_written(result)


def test_convert_subprocess(tmp_path):
    """The real command line, on one case: exit status 0, the summary on stdout, both files written."""
    source, path = CASES[0]
    output = tmp_path / "out.pth"
    proc = subprocess.run(
        [sys.executable, TOOL, "--source", source, path, "--output", str(output)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "error:" not in proc.stderr and "Traceback" not in proc.stderr
    for line in ("source:", "converted:", "ignored:", "base config:", "time:", "wrote:", "next:"):
        assert re.search(rf"^{line}", proc.stdout, re.MULTILINE), (line, proc.stdout)
    yaml = str(tmp_path / "out.yaml")
    assert f"python tools/train_net.py --config-file {yaml} --eval-only" in proc.stdout
    assert os.path.isfile(output) and os.path.isfile(yaml)
    assert isinstance(torch.load(output, weights_only=True)["model"], dict)


# ------------------------------------------------------------------------------------- official: errors
@pytest.mark.parametrize("case", OFFICIAL, ids=[os.path.basename(c) for c in OFFICIAL])
def test_official_missing_tensor(case, tmp_path):
    arrays = official_arrays(case)
    variables = model_variables(arrays)
    drops = pick(variables, 1, seed=len(variables)) + [VIT_STEM if VIT_STEM in arrays else RESNET_STEM]
    if case == OFFICIAL[0]:
        drops.append(TOKEN_EMBEDDING)
    unclear = []
    for i, drop in enumerate(drops):
        folder = write_official(tmp_path / f"drop{i}", {k: v for k, v in arrays.items() if k != drop}, case)
        with pytest.raises(ConversionError) as err:
            convert_checkpoint("official", folder)
        if drop not in str(err.value) or folder not in str(err.value):
            unclear.append(f"{drop} -> {err.value}")
    assert not unclear, "errors that do not name the missing tensor:\n" + "\n".join(unclear)


def test_official_extra_tensors(tmp_path):
    case = OFFICIAL[0]
    arrays = official_arrays(case)
    rng = np.random.default_rng(0)
    extra = "model/encoder/extra_head/kernel" + SUFFIX
    folder = write_official(tmp_path / "extra", {**arrays, extra: rng.normal(size=(3, 2)).astype(np.float32)}, case)
    with pytest.raises(ConversionError, match="match no model parameter") as err:
        convert_checkpoint("official", folder)
    assert extra in str(err.value) and folder in str(err.value)

    stray = "extra_counter" + SUFFIX  # neither a model variable nor on the ignore list
    folder = write_official(tmp_path / "stray", {**arrays, stray: np.array(3, np.int64)}, case)
    with pytest.raises(ConversionError, match="neither model variables nor ignored") as err:
        convert_checkpoint("official", folder)
    assert stray in str(err.value) and folder in str(err.value)

    # Optimizer state is ignored: an extra slot and an extra optimizer variable convert to the same weights.
    gamma = "model/decoder/output_ln/gamma"
    slot = f"{gamma}/.OPTIMIZER_SLOT/optimizer/m{SUFFIX}"
    counter = "optimizer/extra_test_counter" + SUFFIX
    added = {slot: np.zeros_like(arrays[gamma + SUFFIX]), counter: np.array(7, np.int64)}
    converted = convert_checkpoint("official", write_official(tmp_path / "slots", {**arrays, **added}, case))
    assert slot in converted.ignored and counter in converted.ignored
    reference = convert_checkpoint("official", case)
    assert converted.state_dict.keys() == reference.state_dict.keys()
    assert all(torch.equal(converted.state_dict[k], v) for k, v in reference.state_dict.items())


def test_official_wrong_shape(tmp_path):
    case = OFFICIAL[0]
    arrays = official_arrays(case)
    pattern = re.compile(r"model/decoder/decoder/dec_layers/(\d+)/self_ln/gamma" + re.escape(SUFFIX))
    name = next(n for n in sorted(arrays) if pattern.fullmatch(n))
    width = arrays[name].shape[0]
    arrays[name] = np.concatenate([arrays[name], np.ones(1, np.float32)])  # one element longer
    folder = write_official(tmp_path / "shape", arrays, case)
    with pytest.raises(ConversionError, match="wrong shapes") as err:
        convert_checkpoint("official", folder)
    message = str(err.value)
    parameter = f"decoder.layers.{pattern.fullmatch(name).group(1)}.norm1.weight"  # self_ln -> norm1
    assert parameter in message and f"({width + 1},)" in message and f"({width},)" in message, message
    assert folder in message


def test_official_truncated_data_file(tmp_path):
    case = OFFICIAL[0]
    original = TFCheckpoint(case)
    for path in [os.path.join(case, "checkpoint"), os.path.join(case, "config.json"), original.index_path]:
        shutil.copy(path, tmp_path)
    data = tmp_path / os.path.basename(original.data_paths[0])
    content = open(original.data_paths[0], "rb").read()
    data.write_bytes(content[: len(content) // 2])
    with pytest.raises(TFCheckpointError, match="truncated data file") as err:
        convert_checkpoint("official", str(tmp_path))
    message = str(err.value)
    variable = re.search(r"variable '([^']+)'", message)
    assert str(data) in message and variable and variable.group(1) in original, message


# ------------------------------------------------------------------------------- pretrained_pix2seq: errors
class _NotAStateDict(collections.OrderedDict):
    """A class torch.load(weights_only=True) must refuse to build."""


class _Payload:
    """Unpickling this creates ``marker``: code that a weights-only load must never run."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture(scope="module")
def pretrained() -> tuple[str, dict]:
    return PRETRAINED[0], load_pretrained(PRETRAINED[0])


def test_pretrained_resaved_copy_converts(pretrained, tmp_path):
    """The edit-and-save route keeps the file loadable: an unchanged copy converts to the same weights."""
    path, checkpoint = pretrained
    assert isinstance(checkpoint["args"], argparse.Namespace)
    copy = save_pretrained(tmp_path / "checkpoint.pth", checkpoint, dict(checkpoint["model"]))
    converted, reference = (
        convert_checkpoint("pretrained_pix2seq", copy),
        convert_checkpoint("pretrained_pix2seq", path),
    )
    assert all(torch.equal(converted.state_dict[k], v) for k, v in reference.state_dict.items())


def test_pretrained_missing_tensor(pretrained, tmp_path):
    _, checkpoint = pretrained
    names = sorted(checkpoint["model"])
    drops = pick(names, 3, seed=len(names)) + ["transformer.vocal_classifier.weight", "input_proj.0.weight"]
    unclear = []
    for i, drop in enumerate(drops):
        model = {k: v for k, v in checkpoint["model"].items() if k != drop}
        path = save_pretrained(tmp_path / f"drop{i}.pth", checkpoint, model)
        with pytest.raises(ConversionError) as err:
            convert_checkpoint("pretrained_pix2seq", path)
        if drop not in str(err.value) or path not in str(err.value):
            unclear.append(f"{drop} -> {err.value}")
    assert not unclear, "errors that do not name the missing tensor:\n" + "\n".join(unclear)


def test_pretrained_extra_tensor(pretrained, tmp_path):
    _, checkpoint = pretrained
    extra = "transformer.extra_head.weight"
    model = {**checkpoint["model"], extra: torch.zeros(2, 3)}
    path = save_pretrained(tmp_path / "extra.pth", checkpoint, model)
    with pytest.raises(ConversionError, match="match no model parameter") as err:
        convert_checkpoint("pretrained_pix2seq", path)
    assert extra in str(err.value) and path in str(err.value)


def test_pretrained_wrong_shape(pretrained, tmp_path):
    _, checkpoint = pretrained
    name = "transformer.decoder.norm.weight"
    weight = checkpoint["model"][name]
    model = {**checkpoint["model"], name: torch.cat([weight, torch.ones(1)])}
    path = save_pretrained(tmp_path / "shape.pth", checkpoint, model)
    with pytest.raises(ConversionError, match="wrong shapes") as err:
        convert_checkpoint("pretrained_pix2seq", path)
    message = str(err.value)
    width = weight.shape[0]
    assert "decoder.norm.weight" in message and f"({width + 1},)" in message and f"({width},)" in message, message
    assert path in message


@pytest.mark.parametrize("content", [b"", b"model: not a checkpoint\n"], ids=["empty", "text"])
def test_pretrained_not_a_checkpoint(content, tmp_path):
    path = tmp_path / "checkpoint.pth"
    path.write_bytes(content)
    with pytest.raises(ConversionError, match="not a loadable Pretrained-Pix2Seq checkpoint") as err:
        convert_checkpoint("pretrained_pix2seq", str(path))
    assert str(path) in str(err.value)
    missing = str(tmp_path / "nowhere.pth")
    with pytest.raises(ConversionError, match="no such file") as err:
        convert_checkpoint("pretrained_pix2seq", missing)
    assert missing in str(err.value)


def test_pretrained_disallowed_class(pretrained, tmp_path):
    _, checkpoint = pretrained
    path = save_pretrained(tmp_path / "subclass.pth", checkpoint, _NotAStateDict(checkpoint["model"]))
    with pytest.raises(ConversionError, match="refused to load") as err:
        convert_checkpoint("pretrained_pix2seq", path)
    assert path in str(err.value) and "_NotAStateDict" in str(err.value)


def test_pretrained_code_is_not_run(pretrained, tmp_path):
    _, checkpoint = pretrained
    marker = tmp_path / "payload_ran"
    path = str(tmp_path / "payload.pth")
    torch.save({**checkpoint, "epoch": _Payload(str(marker))}, path)
    with pytest.raises(ConversionError, match="refused to load") as err:
        convert_checkpoint("pretrained_pix2seq", path)
    assert path in str(err.value) and "open" in str(err.value)
    assert not marker.exists()
    # The payload is live: an unrestricted load runs it (and only creates the empty marker file).
    torch.load(path, weights_only=False)["epoch"].close()
    assert marker.exists()


# ------------------------------------------------------------------------------------------ CLI errors
def test_cli_error_exits_2(tmp_path, capsys):
    case = OFFICIAL[0]
    extra = "model/encoder/extra_head/kernel" + SUFFIX
    folder = write_official(tmp_path / "extra", {**official_arrays(case), extra: np.ones((2, 2), np.float32)}, case)
    output = tmp_path / "out" / "model.pth"
    with pytest.raises(SystemExit) as exit_info:
        run_tool("--source", "official", folder, "--output", output)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and extra in captured.err and folder in captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert not os.path.exists(output) and not os.path.exists(tmp_path / "out" / "model.yaml")

    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    with pytest.raises(SystemExit) as exit_info:
        run_tool("--source", "pretrained_pix2seq", text, "--output", output)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and str(text) in captured.err and captured.out == ""


def test_cli_rejects_options_of_the_other_source(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_tool("--source", "official", OFFICIAL[0], "--output", tmp_path / "m.pth", "--num-heads", 4)
    assert exit_info.value.code == 2 and "--num-heads applies to --source pretrained_pix2seq" in capsys.readouterr().err


def test_cli_rejects_bad_head_counts(tmp_path, capsys):
    output = tmp_path / "m.pth"
    with pytest.raises(SystemExit) as exit_info:
        run_tool("--source", "pretrained_pix2seq", PRETRAINED[0], "--output", output, "--num-heads", 0)
    assert exit_info.value.code == 2 and "--num-heads: must be a positive integer" in capsys.readouterr().err
    width = load_pretrained(PRETRAINED[0])["model"]["transformer.vocal_classifier.weight"].shape[1]
    with pytest.raises(SystemExit) as exit_info:  # a count the width does not divide into: a conversion error
        run_tool("--source", "pretrained_pix2seq", PRETRAINED[0], "--output", output, "--num-heads", width + 1)
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and captured.err.startswith("error: ") and PRETRAINED[0] in captured.err
    assert f"{width + 1} attention heads" in captured.err and not output.exists()
