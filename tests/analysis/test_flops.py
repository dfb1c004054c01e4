"""FLOP and parameter counting (pix2seq_d2/analysis/flops.py, tools/analyze_model.py), checked against hand counts.

fvcore counts one multiply-add as one flop: a linear layer ``[n, a] -> [n, b]`` is ``n a b``; attention
``q [.., Tq, Dh]``, ``k/v [.., Tk, Dh]`` is ``Tq Tk 2 Dh`` per head (``Q K^T`` and the product with V).
"""

from __future__ import annotations

import os
import sys

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.analysis import FlopCountAnalysis as D2FlopCountAnalysis
from torch import nn

from pix2seq_d2.analysis.flops import (
    FlopCountAnalysis,
    decoder_sequence_flops,
    decoder_start_flops,
    decoder_step_flops,
    encoder_flops,
    model_flops,
    parameter_counts,
)
from pix2seq_d2.modeling.transformer import MultiHeadAttention, TokenDecoder
from tests.helpers import REPO_ROOT, tiny_cfg

sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
import analyze_model  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")

D, HEADS, FFN, VOCAB = 32, 4, 64, 20  # a 1-layer decoder
FIXED_LENGTH = ("MODEL.PIX2SEQ.MAX_OBJECTS_TEST", 2, "MODEL.PIX2SEQ.DECODE.STOP_AT_EOS", False)


def one_layer_decoder() -> TokenDecoder:
    return TokenDecoder(VOCAB, 16, 1, D, HEADS, FFN, dropout=0.0, pre_norm=False, share_embedding=True).eval()


def test_a_linear_layer_is_rows_times_inputs_times_outputs():
    flops = FlopCountAnalysis(nn.Linear(8, 5), (torch.randn(3, 8),))
    assert flops.total() == 3 * 8 * 5


def test_attention_products_are_counted_which_detectron2_alone_misses():
    attn = MultiHeadAttention(D, HEADS).eval()
    q, kv = torch.randn(2, 3, D), torch.randn(2, 7, D)  # batch 2, 3 queries, 7 keys
    ours, d2 = FlopCountAnalysis(attn, (q, kv, kv)), D2FlopCountAnalysis(attn, (q, kv, kv))
    projections = 2 * 3 * D * D * 2 + 2 * 7 * D * D * 2  # q and out on 3 rows, k and v on 7 rows
    attention = 2 * HEADS * 3 * 7 * 2 * (D // HEADS)
    assert d2.by_operator() == {"linear": projections}  # fvcore has no handle: attention silently missing
    assert ours.by_operator() == {"linear": projections, "scaled_dot_product_attention": attention}
    assert ours.total() - d2.total() == attention


@pytest.mark.parametrize("position", [0, 5, 15])
def test_one_decoder_step_is_the_hand_count(position):
    """Self-attention q/k/v/out + cross-attention q/out (its keys/values come from the cache) + FFN +
    output logits, and attention over ``position + 1`` tokens and ``S`` encoder positions."""
    memory_length = 9
    step = decoder_step_flops(one_layer_decoder(), memory_length, position)
    assert step.by_operator["linear"] == 6 * D * D + 2 * D * FFN + D * VOCAB
    assert step.by_operator["scaled_dot_product_attention"] == 2 * D * (position + 1) + 2 * D * memory_length
    assert step.total == sum(step.by_operator.values())


def test_decoder_start_projects_the_memory_once_per_layer():
    start = decoder_start_flops(one_layer_decoder(), memory_length=9)
    assert start.by_operator == {"linear": 2 * 9 * D * D}  # cross-attention keys and values


def test_a_sequence_of_steps_sums_the_steps_exactly():
    decoder = one_layer_decoder()
    steps = sum(decoder_step_flops(decoder, 9, t).total for t in range(6))
    assert decoder_sequence_flops(decoder, 9, 6) == steps


@torch.no_grad()
def test_encoder_start_and_steps_add_up_to_the_traced_inference():
    """Decoding a fixed length, ``model.inference`` traced as a whole costs exactly the encoder, the start
    and every step of a full sequence."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg(*FIXED_LENGTH)).eval()
    x = {"image": torch.randint(0, 256, (3, 64, 48), dtype=torch.uint8)}
    flops = model_flops(model, [x])
    assert flops.full_sequence_tokens == 10 and flops.memory_length == 8 * 6  # res4 (stride 8) of 64 x 48
    assert flops.inference == pytest.approx(flops.full_sequence, rel=1e-9)
    assert flops.encoder == encoder_flops(model, [x]).total
    assert flops.step_mean == (flops.step_first + flops.step_last) / 2
    assert flops.by_operator["scaled_dot_product_attention"] > 0
    assert "aten::embedding" in flops.uncounted  # lookups: no flops, and said so
    untraced = model_flops(model, [x], trace_inference=False)
    assert untraced.inference is None and untraced.full_sequence == flops.full_sequence
    assert untraced.by_operator == pytest.approx(flops.by_operator, rel=1e-9)  # the full sequence's, per operator


def test_parameter_counts_add_up_to_the_model():
    model = build_model(tiny_cfg())
    counts = parameter_counts(model)
    parts = ("backbone", "input_proj", "encoder", "memory_projection", "decoder")
    assert sum(counts[p] for p in parts) == counts["total"] == sum(p.numel() for p in model.parameters())
    decoder_parts = ("decoder.embeddings", "decoder.layers", "decoder.output")
    assert sum(counts[p] for p in decoder_parts) == counts["decoder"]
    assert counts["decoder.layers.0"] == counts["decoder.layers"]  # one layer in the tiny model


def test_analyze_model_tool_prints_both_tables(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_cfg(*FIXED_LENGTH).dump())
    results = analyze_model.main(["--config-file", str(config), "-n", "2"])
    out = capsys.readouterr().out
    assert "| total " in out and f"{results['parameter']['total']:,}" in out
    flops = results["flop"]
    assert flops.num_images == 2 and flops.inference == pytest.approx(flops.full_sequence, rel=1e-9)
    for row in ("image encoder", "per decoded token (mean over 10)", "model.inference as traced"):
        assert row in out
    assert "scaled_dot_product_attention" in out.split("per operator:")[1]
