"""A non-editable ``pip install .`` in a fresh venv converts, trains and evaluates from another working directory,
with the configs shipped inside the installed package; an editable install finds them through the symlink.

The venv sees this venv's packages (torch, detectron2, ...) through a ``.pth`` file that lists their
site-packages folder as a plain path: that adds the folder to ``sys.path`` without running the ``.pth``
files in it, so the editable install of the repository that lives there is not active. pip installs a copy
of the repository's package files (``setup.py``, ``pix2seq_d2/`` with its ``configs`` symlink, ``configs/``)
with ``--no-index --no-deps --no-build-isolation``: no network. Every command then runs in ``tmp_path``
with no ``PYTHONPATH``, so that only the installed package can be imported. The checkpoint is converted by
name from a local HTTP server standing in for its public location.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig

import torch

from pix2seq_d2.model_zoo import MIRROR_ENV_VAR, config_names
from tests.conversion.test_converted_reference import REFERENCE, tensor_digest
from tests.helpers import REPO_ROOT, write_tiny_coco
from tests.helpers.http_server import FileServer

FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures", "pix2seq_official")
TF_FILES = ["checkpoint", "ckpt-1.index", "ckpt-1.data-00000-of-00001", "config.json"]
TOOLS = os.path.join(REPO_ROOT, "tools")
SMALL = ["MODEL.PIX2SEQ.HIDDEN_DIM", "32", "MODEL.PIX2SEQ.DIM_FEEDFORWARD", "64", "MODEL.PIX2SEQ.MAX_OBJECTS_TEST", "2"]
# Run inside the installed package: where it is, where its configs are, and a converted OUTPUT.yaml built
# and loaded (its weights' digest, as in tests/conversion/test_converted_reference.py).
PROBE = """
import hashlib, json, os, sys
import pix2seq_d2, pix2seq_d2.model_zoo as zoo
out = {"package": os.path.dirname(pix2seq_d2.__file__), "configs": zoo.configs_dir(), "names": zoo.config_names()}
if len(sys.argv) > 1:
    from detectron2.modeling import build_model
    from pix2seq_d2.checkpoint import Pix2SeqCheckpointer
    from pix2seq_d2.config import load_config
    cfg = load_config(sys.argv[1])
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    Pix2SeqCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    out["weights_sha256"] = digest.hexdigest()
print(json.dumps(out))
"""


def make_venv(root: str) -> str:
    """A venv without pip of its own that sees this venv's site-packages as a plain path -> its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", root], check=True, timeout=120)
    python = os.path.join(root, "bin", "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, env=clean_env(),
    ).stdout.strip()  # fmt: skip
    shared = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    with open(os.path.join(purelib, "_shared_site_packages.pth"), "w") as f:
        f.write("\n".join(shared) + "\n")
    return python


def copy_repository(dest: str) -> str:
    """The files ``pip install .`` needs, symlinks kept (pix2seq_d2/model_zoo/configs -> ../../configs)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pix2seq_d2", "configs"):
        shutil.copytree(os.path.join(REPO_ROOT, name), os.path.join(dest, name), symlinks=True, ignore=ignore)
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy(os.path.join(REPO_ROOT, name), dest)
    return dest


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PIX2SEQ_CACHE")}
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PYTHONUNBUFFERED": "1", **extra}


def run(cmd: list[str], cwd, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def pip_install(python: str, source: str, cwd, editable: bool = False) -> None:
    flags = ["--no-deps", "--no-build-isolation", "--no-index", "--ignore-installed"]
    run([python, "-m", "pip", "install", "-q", *flags, *(["-e"] if editable else []), source], cwd=cwd)


def probe(python: str, cwd, *args: str) -> dict:
    return json.loads(run([python, "-c", PROBE, *args], cwd=cwd).stdout.strip().splitlines()[-1])


def test_non_editable_install_converts_trains_and_evaluates(tmp_path):
    source = copy_repository(str(tmp_path / "source"))
    python = make_venv(str(tmp_path / "venv"))
    pip_install(python, source, cwd=tmp_path)
    work = tmp_path / "work"  # neither the repository nor the source copy
    work.mkdir()
    shutil.rmtree(source)  # nothing may still point into the tree it was built from

    # Convert a published checkpoint by name; its files come from a local stand-in for the public bucket.
    with FileServer() as server:
        server.serve_folder("/official/R50_640", os.path.join(FIXTURES, "official_resnet"), TF_FILES)
        converted = run(
            [python, os.path.join(TOOLS, "convert_pix2seq_checkpoint.py"), "--model", "official/R50_640",
             "--output", "converted/r50.pth"],
            cwd=work, **{MIRROR_ENV_VAR: server.base_url, "PIX2SEQ_CACHE": str(tmp_path / "cache")},
        )  # fmt: skip
    assert server.paths_requested() == [f"/official/R50_640/{f}" for f in TF_FILES]
    yaml = str(work / "converted" / "r50.yaml")
    assert "wrote:            converted/r50.pth" in converted.stdout
    base = next(line for line in open(yaml) if line.startswith("_BASE_:")).split('"')[1]
    with open(REFERENCE) as f:
        reference = json.load(f)["official_resnet"]["sha256"]
    assert tensor_digest(torch.load(work / "converted" / "r50.pth", weights_only=True)["model"]) == reference
    installed = probe(python, work, yaml)
    assert installed["weights_sha256"] == reference  # OUTPUT.yaml builds the model; the weights load into it
    site_packages = str(tmp_path / "venv" / "lib")
    assert installed["package"].startswith(site_packages) and installed["package"].endswith("site-packages/pix2seq_d2")
    assert installed["configs"] == os.path.join(installed["package"], "model_zoo", "configs")
    assert not os.path.islink(installed["configs"])  # files copied into the package, not a link
    assert installed["names"] == config_names()  # every config ships
    assert base == os.path.join(installed["configs"], "official", "pix2seq_R50_640.yaml") and os.path.isfile(base)

    # Train the quickstart config by name on the embedded shapes dataset, then evaluate it (--eval-only).
    datasets = {"DETECTRON2_DATASETS": str(tmp_path / "datasets")}
    trained = run(
        [python, os.path.join(TOOLS, "train_net.py"), "--config-file", "quickstart/pix2seq_shapes.yaml",
         "DATASETS.TRAIN", "('shapes_val',)", "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "2",
         "SOLVER.IMS_PER_BATCH", "4", *SMALL, "OUTPUT_DIR", "out/train"],
        cwd=work, **datasets,
    )  # fmt: skip
    shipped = os.path.join(installed["configs"], "quickstart", "pix2seq_shapes.yaml")
    assert f"config_file='{shipped}'" in trained.stdout
    assert (work / "out" / "train" / "model_final.pth").is_file()
    tiny = write_tiny_coco(str(tmp_path / "tiny"))  # 7 images: a quick evaluation
    evaluated = run(
        [python, os.path.join(TOOLS, "train_net.py"), "--config-file", "configs/quickstart/pix2seq_shapes.yaml",
         "--eval-only", "DATASETS.COCO", f"[['tiny_val', '{tiny}', '{os.path.dirname(tiny)}']]",
         "DATASETS.TEST", "('tiny_val',)", *SMALL, "MODEL.WEIGHTS", "out/train/model_final.pth",
         "OUTPUT_DIR", "out/eval"],
        cwd=work, **datasets,
    )  # fmt: skip
    log = evaluated.stdout + evaluated.stderr
    assert "Evaluation results for tiny_val in csv format" in log and "Traceback" not in log
    results = json.loads((work / "out" / "eval" / "eval_results.json").read_text())
    assert results["bbox"].keys() >= {"AP", "AP50"} and results["seq_likelihood"]["images"] == 7


def test_editable_install_reads_the_repository_configs(tmp_path):
    """``make install``'s ``pip install -e``: the package and its configs stay in the source tree."""
    source = copy_repository(str(tmp_path / "source"))
    python = make_venv(str(tmp_path / "venv"))
    pip_install(python, source, cwd=tmp_path, editable=True)
    installed = probe(python, tmp_path)
    assert installed["package"] == os.path.join(source, "pix2seq_d2")
    assert installed["configs"] == os.path.join(source, "configs")  # through the symlink
    assert installed["names"] == config_names()
