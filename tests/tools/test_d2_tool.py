"""tools/d2_tool.py runs detectron2's own tool scripts, unchanged, on the quickstart config.

The scripts run as real processes: ``analyze_model.py --tasks flop`` (its total equals this package's
own count), ``visualize_data.py --source dataloader`` (what it draws is the first batch of the Pix2Seq
train loader: same images, sizes after our augmentation, boxes), ``visualize_json_results.py`` (a
``DATASETS.COCO`` dataset registered by d2_tool), ``benchmark.py --task train``. detectron2's
``deploy/export_model.py`` is not shipped by the PyPI build: what it does for a Pix2Seq model
(``TracingAdapter`` + ``torch.jit.trace``) is tested in-process and through d2_tool with a script of its
imports. Pinned too: every name d2_tool patches exists in detectron2 and is what the scripts import.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.export import TracingAdapter
from PIL import Image

from pix2seq_d2.analysis.flops import model_flops
from pix2seq_d2.config import load_config, prepare_config
from pix2seq_d2.engine import d2_script_patches as d2_tools
from pix2seq_d2.engine.d2_script_patches import PATCHES, SHIMS, installed
from tests.helpers import QUICKSTART_CONFIG, REPO_ROOT, shapes_image, write_image

pytestmark = [
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.(save|load|trace|trace_method)` is deprecated:FutureWarning"),
]

D2_TOOL = os.path.join(REPO_ROOT, "tools", "d2_tool.py")
D2_TOOLS = os.environ.get("D2_TOOLS", os.path.join(sys.prefix, "share", "detectron2", "tools"))
SCRIPTS = ("analyze_model.py", "benchmark.py", "visualize_data.py", "visualize_json_results.py")
# The datasets in-process tests generate (DatasetCatalog's shapes root), shared with the subprocesses.
DATASETS_ROOT = os.path.abspath(os.environ.get("DETECTRON2_DATASETS", "datasets"))
# The quickstart with a small, fast model (the architecture is the quickstart's).
SMALL = [
    "DATASETS.TRAIN", "('shapes_val',)",
    "MODEL.PIX2SEQ.HIDDEN_DIM", "32", "MODEL.PIX2SEQ.DIM_FEEDFORWARD", "64",
    "MODEL.PIX2SEQ.ENC_LAYERS", "1", "MODEL.PIX2SEQ.DEC_LAYERS", "1",
]  # fmt: skip


def _installed_from_pypi() -> bool:
    """detectron2 came from the PyPI build (`make install`), which ships the scripts to D2_TOOLS."""
    try:
        importlib.metadata.version("sal-detectron2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def missing_scripts(names) -> None:
    """Skip when detectron2 came from elsewhere (a source build: set D2_TOOLS to its tools/) or for
    deploy/export_model.py, which the PyPI build does not ship; with the PyPI build `make install`
    must have put the other scripts there, so a missing one is a failure."""
    if _installed_from_pypi() and not all(name.startswith("deploy/") for name in names):
        pytest.fail(f"detectron2's {list(names)} missing from {D2_TOOLS}: `make install` moves them there")
    pytest.skip(f"detectron2's {list(names)} not found at {D2_TOOLS} (set D2_TOOLS to a checkout's tools/)")


def d2_script(name: str) -> str:
    path = os.path.join(D2_TOOLS, name)
    if not os.path.isfile(path):
        missing_scripts([name])
    return path


def tool_env() -> dict:
    return dict(os.environ, DETECTRON2_DATASETS=DATASETS_ROOT, PYTHONUNBUFFERED="1")


def run_d2_tool(cwd, *args: str, timeout: int = 300) -> str:
    """``python tools/d2_tool.py ARGS`` -> its output (stdout + stderr); fails the test on an error."""
    proc = subprocess.run(
        [sys.executable, D2_TOOL, *args], cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


# ---- the patches are pinned to detectron2 -------------------------------------------------------------
def imported_names(path: str) -> dict[str, str]:
    """name -> module of every ``from MODULE import name`` in a script."""
    tree = ast.parse(open(path).read())
    return {
        alias.asname or alias.name: node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


@pytest.mark.parametrize("patch", PATCHES + SHIMS, ids=lambda p: f"{p.module}.{p.name}")
def test_each_patched_name_is_what_the_scripts_import_from_that_module(patch):
    """A detectron2 change that moves a name, or a script that imports it from elsewhere, would make the
    script bypass the replacement silently: fail here instead."""
    scripts = [s for s in patch.scripts if os.path.isfile(os.path.join(D2_TOOLS, s))]
    if not scripts:
        missing_scripts(patch.scripts)
    for script in scripts:
        names = imported_names(os.path.join(D2_TOOLS, script))
        assert names.get(patch.name) == patch.module, (
            f"detectron2's {script} imports {patch.name} from {names.get(patch.name)}, not {patch.module}: "
            "update pix2seq_d2.engine.d2_script_patches.PATCHES"
        )


def test_no_script_imports_a_builder_from_anywhere_d2_tool_does_not_patch():
    patched = {p.name: p.module for p in PATCHES}
    for script in SCRIPTS:
        for name, module in imported_names(d2_script(script)).items():
            if name in patched:
                assert module == patched[name], f"{script} imports {name} from {module}"


def test_the_patched_names_and_the_originals_the_replacements_call_exist():
    import detectron2.config.config as d2_config
    import detectron2.data.build as d2_data_build
    import detectron2.modeling.meta_arch.build as d2_model_build
    import detectron2.solver.build as d2_solver_build
    import detectron2.utils.analysis as d2_analysis

    for original in (
        d2_config.get_cfg,
        d2_data_build.build_detection_train_loader,
        d2_data_build.build_detection_test_loader,
        d2_model_build.build_model,
        d2_solver_build.build_optimizer,
        d2_analysis.FlopCountAnalysis,
    ):
        assert callable(original)
    assert callable(d2_data_build.build_detection_train_loader.from_config)  # benchmark.py --task data reads it


def test_installed_replaces_the_names_and_restores_detectron2s_even_after_an_error():
    import detectron2.config
    import detectron2.export
    import detectron2.utils.analysis

    originals = {(p.module, p.name): getattr(sys.modules[p.module], p.name) for p in PATCHES}
    had_caffe2 = hasattr(detectron2.export, "Caffe2Tracer")
    with pytest.raises(KeyError), installed():
        assert detectron2.config.get_cfg is d2_tools.get_cfg
        assert "PIX2SEQ" in detectron2.config.get_cfg().MODEL
        assert detectron2.utils.analysis.FlopCountAnalysis is d2_tools.FlopCountAnalysis
        assert hasattr(detectron2.export, "Caffe2Tracer")
        raise KeyError("the script failed")
    for (module, name), original in originals.items():
        assert getattr(sys.modules[module], name) is original
    assert hasattr(detectron2.export, "Caffe2Tracer") == had_caffe2


def test_a_name_gone_from_detectron2_is_an_error_not_a_silent_bypass():
    gone = d2_tools.Patch("detectron2.data", "build_detection_loader_v2", d2_tools.get_cfg, ())
    with pytest.raises(AttributeError, match="no longer exists in detectron2"), installed((gone,), ()):
        pass


def test_replacements_hand_other_models_to_detectron2():
    cfg = d2_tools.get_cfg()
    cfg.merge_from_list(["MODEL.DEVICE", "cpu"])
    model = torch.nn.Linear(2, 2)
    assert isinstance(d2_tools.build_optimizer(cfg, model), torch.optim.SGD)  # detectron2's
    cfg.merge_from_file(QUICKSTART_CONFIG)
    assert "AdamW" in type(d2_tools.build_optimizer(cfg, model)).__name__  # Pix2Seq's


def test_caffe2_tracer_stand_in_names_the_way_out():
    with installed():
        from detectron2.export import Caffe2Tracer

        if Caffe2Tracer is d2_tools.Caffe2TracerUnavailable:
            with pytest.raises(RuntimeError, match="--export-method tracing"):
                Caffe2Tracer(None, None, None)


def test_d2_tool_reads_the_config_and_overrides_from_the_scripts_arguments():
    sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
    import d2_tool

    argv = ["--tasks", "flop", "-n", "2", f"--config-file={QUICKSTART_CONFIG}", "--output-dir", "OUTPUT_DIR",
            "SOLVER.IMS_PER_BATCH", "2", "OUTPUT_DIR", "/tmp/x"]  # fmt: skip
    assert d2_tool.config_file_argument(argv) == QUICKSTART_CONFIG
    assert d2_tool.config_file_argument(["--config-file", "a.yaml"]) == "a.yaml"
    # a key right after an option is that option's value, not the start of the overrides
    assert d2_tool.config_overrides(argv, load_config(QUICKSTART_CONFIG)) == argv[-4:]
    cfg = d2_tool.read_script_config(QUICKSTART_CONFIG, argv)
    assert cfg.SOLVER.IMS_PER_BATCH == 2 and cfg.OUTPUT_DIR == "/tmp/x"


# ---- the scripts, run through d2_tool -----------------------------------------------------------------
def test_analyze_model_flop_counts_what_pix2seq_analysis_counts(tmp_path):
    """``analyze_model.py --tasks flop -n 2`` on the quickstart architecture: decoding a fixed length
    (STOP_AT_EOS False), the traced FLOPs do not depend on the random weights, so the script's
    per-model total must equal ours, attention products included."""
    opts = [*SMALL, "MODEL.PIX2SEQ.MAX_OBJECTS_TEST", "2", "MODEL.PIX2SEQ.DECODE.STOP_AT_EOS", "False",
            "OUTPUT_DIR", str(tmp_path / "out")]  # fmt: skip
    log = run_d2_tool(
        tmp_path, d2_script("analyze_model.py"), "--tasks", "flop", "-n", "2", "--config-file", QUICKSTART_CONFIG, *opts
    )
    model_row = re.search(r"^\| model\s+\|\s*([\d.]+[KM]?)\s+\|\s*([\d.]+)([KMG])\s+\|", log, re.M)
    assert model_row, log[-3000:]
    unit = {"K": 1e3, "M": 1e6, "G": 1e9}[model_row.group(3)]
    script_total = float(model_row.group(2)) * unit
    assert "scaled_dot_product_attention" in log.split("Average GFlops")[1]
    assert "Total GFlops" in log

    cfg = prepare_config(load_config(QUICKSTART_CONFIG, opts), for_training=False)
    cfg.freeze()
    from detectron2.modeling import build_model

    from pix2seq_d2 import Pix2SeqDatasetMapper

    model = build_model(cfg).eval()
    mapper = Pix2SeqDatasetMapper(cfg, is_train=False, use_annotations=False)
    ours = model_flops(model, [mapper(DatasetCatalog.get("shapes_val")[0])])
    assert abs(script_total - ours.inference) <= 0.0005 * unit  # the table rounds to 3 decimals of its unit
    assert ours.inference == ours.full_sequence  # encoder + start + every step, traced as a whole


def read_saved_files(proc: subprocess.Popen, count: int) -> list[str]:
    """The files a running visualize_data.py announces ("Saving to X ..."), once ``count`` of them are
    written (the script loops over the infinite train loader: it is stopped here)."""
    saved = []
    try:
        for line in proc.stdout:
            match = re.match(r"Saving to (.*) \.\.\.$", line.strip())
            if match:
                saved.append(match.group(1))
            if len(saved) > count:  # the next one is announced: the first `count` are on disk
                break
    finally:
        proc.kill()
        proc.wait()
    assert len(saved) > count, f"visualize_data.py announced only {saved}"
    return saved[:count]


def perimeter_difference(drawn: np.ndarray, plain: np.ndarray, box: np.ndarray) -> float:
    """Mean absolute difference (all channels) along the box's outline."""
    h, w = plain.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, x1 = np.clip([x0, x1], 0, w - 1)
    y0, y1 = np.clip([y0, y1], 0, h - 1)
    mask = np.zeros((h, w), dtype=bool)
    mask[[y0, y1], x0 : x1 + 1] = True
    mask[y0 : y1 + 1, [x0, x1]] = True
    return float(np.abs(drawn.astype(float) - plain.astype(float))[mask].mean())


def test_visualize_data_dataloader_draws_the_pix2seq_train_loader(tmp_path):
    """With large-scale jitter (only our mapper has it) each image gets its own size: the files the script
    writes are the images of our loader's first batch, in order, at the sizes our augmentation gave, with
    a box drawn along every augmented ground-truth box."""
    # images scaled to 120-200 px (not cropped): sizes vary, labels cover little of each image
    opts = ["DATASETS.TRAIN", "('shapes_val',)", "SOLVER.IMS_PER_BATCH", "3", "INPUT.LSJ.ENABLED", "True",
            "INPUT.LSJ.IMAGE_SIZE", "200", "INPUT.LSJ.MIN_SCALE", "0.6", "INPUT.LSJ.MAX_SCALE", "1.0"]  # fmt: skip
    cmd = [sys.executable, D2_TOOL, d2_script("visualize_data.py"), "--source", "dataloader",
           "--config-file", QUICKSTART_CONFIG, "--output-dir", str(tmp_path / "vis"), *opts]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)  # fmt: skip
    saved = read_saved_files(proc, 3)

    cfg = prepare_config(load_config(QUICKSTART_CONFIG, [*opts, "DATALOADER.NUM_WORKERS", 0]), for_training=False)
    from pix2seq_d2 import Pix2SeqTrainer

    batch = next(iter(Pix2SeqTrainer.build_train_loader(cfg)))
    assert [os.path.basename(p) for p in saved] == [f"{x['image_id']}.jpg" for x in batch]
    sizes = set()
    for path, example in zip(saved, batch):
        plain = example["image"].permute(1, 2, 0).numpy()[:, :, ::-1].astype(float)  # BGR -> RGB, as drawn
        drawn = np.asarray(Image.open(path).convert("RGB")).astype(float)
        assert drawn.shape == plain.shape  # the size our augmentation gave (Visualizer scale 1)
        sizes.add(drawn.shape[:2])
        # the same pixels (up to JPEG noise and the drawing), not e.g. the other flip of the image
        same = np.median(np.abs(drawn - plain))
        assert same < 12 and 2 * same < np.median(np.abs(drawn - plain[:, ::-1])), path
        boxes = example["instances"].gt_boxes.tensor.numpy()
        assert len(boxes)
        for box in boxes:  # a box drawn along each of our augmented boxes
            assert perimeter_difference(drawn, plain, box) > 40, (path, box)
    assert len(sizes) > 1 and (96, 96) not in sizes  # detectron2's mapper would give 96 x 96 every time


def write_coco_dataset(root) -> str:
    """Two 60 x 80 images (one and two boxes, category ids 7 and 9) + their COCO json; -> the json path."""
    specs = [[(10, 8, 40, 30, 7)], [(5, 5, 25, 45, 9), (40, 10, 75, 50, 7)]]
    coco = {"images": [], "annotations": [], "categories": [{"id": 7, "name": "box"}, {"id": 9, "name": "bar"}]}
    for image_id, objects in enumerate(specs, start=1):
        write_image(str(root / f"{image_id}.png"), shapes_image(60, 80, [o[:4] for o in objects], seed=image_id))
        coco["images"].append({"id": image_id, "file_name": f"{image_id}.png", "height": 60, "width": 80})
        for x0, y0, x1, y1, category_id in objects:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id,
                                        "category_id": category_id, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                        "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})  # fmt: skip
    (root / "instances.json").write_text(json.dumps(coco))
    return str(root / "instances.json")


def test_visualize_json_results_finds_a_datasets_coco_dataset(tmp_path):
    """d2_tool registers the DATASETS.COCO entries of ``--datasets-from`` before the script looks the
    dataset up; the script draws prediction | ground truth for each of its images."""
    json_file = write_coco_dataset(tmp_path)
    config = tmp_path / "mydata.yaml"
    config.write_text(
        f"_BASE_: {QUICKSTART_CONFIG}\nDATASETS:\n  COCO: [[mydata, {json_file}, {tmp_path}]]\n"
        "  TRAIN: ('mydata',)\n  TEST: ('mydata',)\nMODEL:\n  PIX2SEQ:\n    NUM_CLASSES: 0\n"
    )
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 2, "category_id": 9, "bbox": [6, 5, 20, 40], "score": 0.9}]))
    run_d2_tool(tmp_path, "--datasets-from", str(config), d2_script("visualize_json_results.py"),
                "--input", str(results), "--output", str(tmp_path / "vis"), "--dataset", "mydata")  # fmt: skip
    for name in ("1.png", "2.png"):
        assert Image.open(tmp_path / "vis" / name).size == (160, 60)  # prediction | ground truth


def test_a_bad_datasets_coco_entry_is_one_error_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(f"_BASE_: {QUICKSTART_CONFIG}\nDATASETS:\n  COCO: [[mydata, missing.json, {tmp_path}]]\n")
    proc = subprocess.run(
        [sys.executable, D2_TOOL, "--datasets-from", str(config), d2_script("visualize_json_results.py"),
         "--input", "x.json", "--output", "vis", "--dataset", "mydata"],
        cwd=tmp_path, env=tool_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "error: COCO json file" in proc.stderr and "missing.json" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_benchmark_train_trains_400_iterations_with_the_pix2seq_loader_and_optimizer(tmp_path):
    """benchmark.py --task train on the quickstart model: 100 cached batches of our loader (2 images
    each), 400 steps, then the profiler (about 20 s on 2 idle cores)."""
    out = tmp_path / "out"
    log = run_d2_tool(
        tmp_path, d2_script("benchmark.py"), "--task", "train", "--config-file", QUICKSTART_CONFIG,
        "DATASETS.TRAIN", "('shapes_val',)", "SOLVER.IMS_PER_BATCH", "2", "OUTPUT_DIR", str(out), timeout=900,
    )  # fmt: skip
    assert re.search(r"Overall training speed: 397 iterations", log), log[-3000:]
    losses = [float(v) for v in re.findall(r"total_loss: ([\d.]+)", log)]
    assert len(losses) >= 10 and losses[-1] < losses[0]  # it trains on token sequences
    assert any(files for _, _, files in os.walk(out))  # the TorchProfiler's trace


# ---- deploy/export_model.py: what it does for Pix2Seq --------------------------------------------------
@pytest.fixture(scope="module")
def quickstart_model_and_input():
    cfg = load_config(
        QUICKSTART_CONFIG, ["MODEL.PIX2SEQ.MAX_OBJECTS_TEST", 2, "MODEL.PIX2SEQ.DECODE.STOP_AT_EOS", False]
    )
    torch.manual_seed(0)
    from detectron2.modeling import build_model

    from pix2seq_d2 import Pix2SeqDatasetMapper

    model = build_model(cfg).eval()
    with torch.no_grad():  # greedy tokens that vary over positions: boxes that are not empty
        model.decoder.pos_embed.weight.normal_(0, 3.0)
        for layer in model.decoder.layers:
            layer.multihead_attn.v_proj.weight.mul_(3.0)
    mapper = Pix2SeqDatasetMapper(cfg, is_train=False, use_annotations=False)
    return model, mapper(DatasetCatalog.get("shapes_val")[0])["image"]


@pytest.mark.parametrize("postprocess", [True, False], ids=["model_call", "inference_no_postprocess"])
@torch.no_grad()
def test_tracing_adapter_and_jit_trace_reproduce_the_model(quickstart_model_and_input, postprocess):
    """export_model.py --export-method tracing: ``TracingAdapter(model, [{"image": image}], inference)``
    (inference None -> ``model(inputs)`` for a model that is no GeneralizedRCNN), then ``torch.jit.trace``."""
    model, image = quickstart_model_and_input
    inference = None if postprocess else (lambda m, inputs: m.inference(inputs, do_postprocess=False))
    adapter = TracingAdapter(model, [{"image": image}], inference)
    traced = torch.jit.trace(adapter, (image,))
    got = adapter.outputs_schema(traced(image))[0]["instances"]
    expected = (model([{"image": image}]) if postprocess else model.inference([{"image": image}], False))[0]
    expected = expected["instances"]
    assert len(expected) > 0
    assert torch.equal(got.pred_boxes.tensor, expected.pred_boxes.tensor)
    assert torch.equal(got.pred_classes, expected.pred_classes)
    torch.testing.assert_close(got.scores, expected.scores)


EXPORT_LIKE_SCRIPT = '''
"""export_model.py's imports and its --export-method tracing path, for a Pix2Seq config."""
import argparse, os
import torch
from detectron2.config import get_cfg
from detectron2.data import build_detection_test_loader
from detectron2.export import Caffe2Tracer, TracingAdapter, dump_torchscript_IR
from detectron2.modeling import build_model

parser = argparse.ArgumentParser()
parser.add_argument("--config-file")
parser.add_argument("--output")
parser.add_argument("opts", nargs=argparse.REMAINDER)
args = parser.parse_args()
cfg = get_cfg()
cfg.DATALOADER.NUM_WORKERS = 0
cfg.merge_from_file(args.config_file)
cfg.merge_from_list(args.opts)
cfg.freeze()
model = build_model(cfg).eval()
image = next(iter(build_detection_test_loader(cfg, cfg.DATASETS.TEST[0])))[0]["image"]
adapter = TracingAdapter(model, [{"image": image}], None)
traced = torch.jit.trace(adapter, (image,))
os.makedirs(args.output, exist_ok=True)
torch.jit.save(traced, os.path.join(args.output, "model.ts"))
dump_torchscript_IR(traced, args.output)
with torch.no_grad():
    torch.save({"image": image, "outputs": adapter(image)}, os.path.join(args.output, "expected.pt"))
print("Outputs schema: " + str(adapter.outputs_schema))
'''


def test_an_export_model_like_script_traces_pix2seq_through_d2_tool(tmp_path):
    script = tmp_path / "export_like.py"
    script.write_text(EXPORT_LIKE_SCRIPT)
    out = tmp_path / "export"
    log = run_d2_tool(tmp_path, str(script), "--config-file", QUICKSTART_CONFIG, "--output", str(out), *SMALL,
                      "MODEL.PIX2SEQ.MAX_OBJECTS_TEST", "2", "MODEL.PIX2SEQ.DECODE.STOP_AT_EOS", "False")  # fmt: skip
    assert "pred_boxes" in log.split("Outputs schema:")[1]
    expected = torch.load(out / "expected.pt")
    assert expected["image"].shape[-2:] == (96, 96)  # the Pix2Seq test mapper's resize of a shapes image
    got = torch.jit.load(str(out / "model.ts"))(expected["image"])
    assert len(got) == len(expected["outputs"]) > 0
    for a, b in zip(got, expected["outputs"]):
        torch.testing.assert_close(a, b)
