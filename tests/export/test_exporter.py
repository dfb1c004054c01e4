"""Export (pix2seq_d2/export/exporter.py): the pure-tensor encoder and step equal the model's, their TorchScript
traces equal them, and the ONNX Runtime runner decodes the same tokens and boxes as the model."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from pix2seq_d2.config import ConfigError, load_config
from pix2seq_d2.data.dataset_mapper import Pix2SeqDatasetMapper
from pix2seq_d2.engine.launch import run_command
from pix2seq_d2.export.exporter import (
    ExportableDecoderStep,
    ExportableEncoder,
    OnnxPix2SeqRunner,
    example_inputs,
    export_image_size,
    export_onnx,
    export_torchscript,
)
from pix2seq_d2.tasks import DecodingOptions
from pix2seq_d2.utils.structures import image_sizes_tensor
from tests.helpers import QUICKSTART_CONFIG, REPO_ROOT, tiny_cfg

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import benchmark_onnx  # noqa: E402
import export_model  # noqa: E402

SIZES = ((64, 64), (64, 48), (40, 64))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """torch and ONNX Runtime take turns in the decoding loop: one thread each keeps their pools from
    competing for the CPU (on a loaded 2-core machine two OpenMP threads run some ops 10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


VARIANTS = {
    "default": (),
    "pre_norm_no_positions": ("MODEL.PIX2SEQ.PRE_NORM", True, "MODEL.PIX2SEQ.DECODER_POSITIONS", "none"),
    "sincos_linear_ln": ("MODEL.PIX2SEQ.POSITION_ENCODING", "sincos", "MODEL.PIX2SEQ.INPUT_PROJ", "linear_ln"),
    "no_padding_mask": ("MODEL.PIX2SEQ.USE_PADDING_MASK", False),
    "official_layout": ("MODEL.PIX2SEQ.POSITION_ENCODING", "sincos", "MODEL.PIX2SEQ.INPUT_PROJ", "linear_ln",
                        "MODEL.PIX2SEQ.MEMORY_PROJECTION", True, "MODEL.PIX2SEQ.PRE_NORM", True,
                        "MODEL.PIX2SEQ.ACTIVATION", "gelu"),
}  # fmt: skip


def tiny_export_cfg(*opts):
    return tiny_cfg("MODEL.PIX2SEQ.SHARE_EMBEDDING", False, *opts)


def tiny_model(cfg):
    model = build_model(cfg).eval()
    with torch.no_grad():  # sharpen the outputs and the positions, as the decoding tests do
        model.decoder.output_proj.weight.mul_(30)
        if model.decoder.pos_embed is not None:
            model.decoder.pos_embed.weight.mul_(50)
    return model


def random_batch(model, sizes=SIZES):
    images = model.preprocess_image([{"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8)} for h, w in sizes])
    return images, image_sizes_tensor(images, model.device)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@torch.no_grad()
def test_encoder_and_step_modules_equal_encode_and_token_decoder_step(variant):
    model = tiny_model(tiny_export_cfg(*VARIANTS[variant]))
    images, sizes = random_batch(model)
    memory, pos, padding = model.encode(images)
    out_memory, out_pos, out_padding, cross_k, cross_v = ExportableEncoder(model)(images.tensor, sizes)
    torch.testing.assert_close(out_memory, memory, rtol=0, atol=1e-6)
    torch.testing.assert_close(out_pos, torch.zeros_like(memory) if pos is None else pos, rtol=0, atol=1e-6)
    assert torch.equal(out_padding, torch.zeros_like(out_padding) if padding is None else padding)

    num_steps, cache_len = 6, 9
    cache = model.decoder.start(memory, pos, padding, max_len=cache_len)
    torch.testing.assert_close(cross_k, cache.cross_k, rtol=0, atol=1e-6)
    torch.testing.assert_close(cross_v, cache.cross_v, rtol=0, atol=1e-6)
    step = ExportableDecoderStep(model)
    self_k, self_v = torch.zeros_like(cache.self_k), torch.zeros_like(cache.self_v)
    tokens = torch.randint(0, model.tokenizer.vocab_size, (len(SIZES), num_steps))
    for t in range(num_steps):
        expected = model.decoder.step(tokens[:, t : t + 1], cache)[:, 0]  # [B, V]
        logits, self_k, self_v = step(tokens[:, t], torch.tensor(t), self_k, self_v, cross_k, cross_v, out_padding)
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(self_k[..., : t + 1, :], cache.self_k[..., : t + 1, :], rtol=0, atol=1e-6)
        torch.testing.assert_close(self_v[..., : t + 1, :], cache.self_v[..., : t + 1, :], rtol=0, atol=1e-6)
        assert not self_k[..., t + 1 :, :].any() and not self_v[..., t + 1 :, :].any()  # later slots untouched


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@torch.no_grad()
def test_torchscript_traces_equal_the_modules_at_another_batch_and_cache_length(tmp_path):
    cfg = tiny_export_cfg()
    model = tiny_model(cfg)
    size = export_image_size(cfg, model)
    encoder_file, step_file = export_torchscript(model, str(tmp_path), size)
    encoder, step = torch.jit.load(encoder_file), torch.jit.load(step_file)
    # traced at batch 2 and 10 cache slots; run at batch 3 and 7 slots, position 4
    enc_inputs, step_inputs = example_inputs(model, size, batch=3, cache_len=7)
    step_inputs = (torch.randint(0, 50, (3,)), torch.tensor(4), torch.randn_like(step_inputs[2]), *step_inputs[3:])
    cases = ((encoder, ExportableEncoder(model), enc_inputs), (step, ExportableDecoderStep(model), step_inputs))
    for traced, module, inputs in cases:
        for got, expected in zip(traced(*inputs), module(*inputs)):
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_legacy_onnx_export_of_each_layout_decodes_the_same_tokens(variant, tmp_path):
    """Images of several sizes padded to one square by both (PAD_TO_SQUARE = the export size)."""
    cfg = tiny_export_cfg("MODEL.PIX2SEQ.PAD_TO_SQUARE", 64, "MODEL.PIX2SEQ.MAX_OBJECTS_TEST", 4, *VARIANTS[variant])
    model = tiny_model(cfg)
    export_onnx(model, str(tmp_path), export_image_size(cfg, model), exporter="legacy")
    inputs = [{"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8)} for h, w in SIZES]
    expected, _ = model.generate(inputs)
    got, _ = OnnxPix2SeqRunner.from_dir(cfg, str(tmp_path), num_threads=1).generate(inputs)
    assert torch.equal(got.tokens, expected.tokens) and len(expected.tokens.unique()) >= 5
    torch.testing.assert_close(got.records["class_logprobs"], expected.records["class_logprobs"], rtol=0, atol=1e-3)


# ---- ONNX Runtime on the quickstart architecture and shapes_val --------------------------------
def quickstart_cfg(*opts):
    return load_config(QUICKSTART_CONFIG, ["MODEL.WEIGHTS", "", *opts])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The quickstart model at seeded random weights, perturbed so that greedy tokens vary over
    positions and images (and some images end early), exported to ONNX once."""
    torch.manual_seed(0)
    cfg = quickstart_cfg()
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.decoder.pos_embed.weight.normal_(0, 3.0)
        for layer in model.decoder.layers:
            layer.multihead_attn.v_proj.weight.mul_(3.0)
    out = tmp_path_factory.mktemp("onnx")
    export_onnx(model, str(out), export_image_size(cfg, model))
    mapper = Pix2SeqDatasetMapper(cfg, is_train=False, use_annotations=False)
    inputs = [mapper(d) for d in DatasetCatalog.get("shapes_val")[:6]]
    return model, str(out), inputs


def assert_same_outputs(model, runner, inputs, end_to_end: bool) -> torch.Tensor:
    """Identical tokens and boxes (and nearly equal scores) from the model and the runner -> the tokens.
    ``end_to_end``: the detections of ``model.inference`` and ``runner(...)``, else of the sequences."""
    expected, images = model.generate(inputs)
    got, onnx_images = runner.generate(inputs)
    assert torch.equal(got.tokens, expected.tokens)
    torch.testing.assert_close(got.token_logprobs, expected.token_logprobs, rtol=0, atol=1e-3)
    if end_to_end:
        outputs = zip(model.inference(inputs), runner(inputs))
    else:
        outputs = zip(model.outputs(inputs, expected, images), runner.outputs(inputs, got, onnx_images))
    for a, b in outputs:
        a, b = a["instances"], b["instances"]
        assert a.image_size == b.image_size and len(a) == len(b)
        assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
        assert torch.equal(a.pred_classes, b.pred_classes)
        torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-3)
    return expected.tokens


def test_onnx_runner_decodes_what_the_model_decodes_on_shapes_val(exported):
    model, out, inputs = exported
    tokens = assert_same_outputs(model, OnnxPix2SeqRunner.from_dir(quickstart_cfg(), out), inputs, end_to_end=True)
    # not trivially constant: images differ, and some end early (EOS) while others decode 10 objects
    assert len({tuple(row.tolist()) for row in tokens}) >= 4
    lengths = (tokens != model.tokenizer.PAD).sum(1)
    assert lengths.min() < lengths.max() == 50


def test_onnx_runner_without_eos_decodes_every_object(exported):
    model, out, inputs = exported
    cfg = quickstart_cfg("MODEL.PIX2SEQ.DECODE.STOP_AT_EOS", False, "MODEL.PIX2SEQ.MAX_OBJECTS_TEST", 8)
    saved = model.decoding
    model.decoding = DecodingOptions.from_config(cfg)
    try:
        tokens = assert_same_outputs(model, OnnxPix2SeqRunner.from_dir(cfg, out), inputs, end_to_end=False)
    finally:
        model.decoding = saved
    assert tokens.shape == (len(inputs), 40) and len(tokens.unique()) >= 8


def test_onnx_runner_refuses_other_decoding_strategies_and_another_vocabulary(exported):
    _, out, _ = exported
    for strategy in ("sample", "beam"):
        with pytest.raises(ConfigError, match=f"MODEL.PIX2SEQ.DECODE.STRATEGY='{strategy}'.*greedy"):
            OnnxPix2SeqRunner.from_dir(quickstart_cfg("MODEL.PIX2SEQ.DECODE.STRATEGY", strategy), out)
    with pytest.raises(ConfigError, match="gives 103 logits, but the config's vocabulary has 104 tokens"):
        OnnxPix2SeqRunner.from_dir(quickstart_cfg("MODEL.PIX2SEQ.NUM_BINS", 97), out)


# ---- the command-line tools ---------------------------------------------------------------------
TINY_OPTS = [
    "MODEL.SMALL_RESNET.WIDTHS", "[8, 16, 32, 64]", "MODEL.SMALL_RESNET.STEM_OUT_CHANNELS", "8",
    "MODEL.PIX2SEQ.HIDDEN_DIM", "32", "MODEL.PIX2SEQ.ENC_LAYERS", "1", "MODEL.PIX2SEQ.DEC_LAYERS", "1",
    "MODEL.PIX2SEQ.DIM_FEEDFORWARD", "64", "MODEL.PIX2SEQ.MAX_OBJECTS_TEST", "3",
]  # fmt: skip


def test_export_model_cli_writes_both_formats_and_verifies_on_shapes_val(tmp_path, capsys):
    result = export_model.main(
        ["--config-file", QUICKSTART_CONFIG, "--output", str(tmp_path), "--onnx-exporter", "legacy", "--verify",
         "--verify-images", "2",
         "--batch-size", "2", *TINY_OPTS]
    )  # fmt: skip
    assert sorted(os.listdir(tmp_path)) == ["encoder.onnx", "encoder.ts", "step.onnx", "step.ts"]
    assert result["image_size"] == 96
    assert "verify on shapes_val: 2/2 images with identical tokens" in capsys.readouterr().out
    assert result["verify"]["detection_count_mismatches"] == 0


def test_export_model_cli_refuses_to_verify_a_sampling_config_before_exporting(tmp_path, capsys):
    argv = ["--config-file", QUICKSTART_CONFIG, "--output", str(tmp_path), "--verify", *TINY_OPTS]
    assert run_command(lambda: export_model.main([*argv, "MODEL.PIX2SEQ.DECODE.STRATEGY", "sample"])) == 1
    assert "error: Invalid config: MODEL.PIX2SEQ.DECODE.STRATEGY='sample'" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_benchmark_onnx_tool_on_the_quickstart_model(capsys):
    rows = benchmark_onnx.main(
        ["--config-file", QUICKSTART_CONFIG, "--batch-sizes", "2", "--image-size", "64", "--objects", "2", *TINY_OPTS]
    )
    assert [row["engine"] for row in rows] == ["PyTorch", "ONNX Runtime"]
    assert rows[1]["identical_tokens"] and rows[1]["ratio"] > 0
    assert "same tokens" in capsys.readouterr().out
