"""The transformer's regularisation: drop path (stochastic depth) in encoder and decoder layers."""

from __future__ import annotations

import pytest
import torch

from pix2seq_d2.modeling.transformer import DropPath, TokenDecoder, TransformerEncoder

LAYER_ARGS = dict(dim=32, num_heads=4, ffn_dim=64, dropout=0.0, pre_norm=False)


def test_drop_path_zeroes_whole_samples_and_rescales_the_rest_in_training():
    drop = DropPath(0.5).train()
    x = torch.ones(2000, 3, 4)
    out = drop(x)
    per_sample = out.flatten(1)
    dropped = (per_sample == 0).all(1)
    kept = (per_sample == 2.0).all(1)
    assert (dropped | kept).all()  # a sample's branch is dropped or kept as a whole
    assert 0.45 < dropped.float().mean() < 0.55
    assert out.mean().item() == pytest.approx(1.0, abs=0.06)  # unbiased in expectation


def test_drop_path_is_the_identity_in_eval_mode():
    x = torch.randn(8, 5, 4)
    assert torch.equal(DropPath(0.3).eval()(x), x)


def test_drop_path_rejects_a_rate_outside_zero_one():
    with pytest.raises(ValueError, match="drop path rate"):
        DropPath(1.0)


@pytest.mark.parametrize("pre_norm", [False, True])
def test_layers_with_drop_path_equal_layers_without_it_in_eval_and_differ_in_training(pre_norm):
    args = {**LAYER_ARGS, "pre_norm": pre_norm}
    plain_enc = TransformerEncoder(2, **args)
    dropping_enc = TransformerEncoder(2, **args, drop_path=0.5)
    dropping_enc.load_state_dict(plain_enc.state_dict())
    plain_dec = TokenDecoder(20, 16, 2, share_embedding=True, **args)
    dropping_dec = TokenDecoder(20, 16, 2, share_embedding=True, **args, drop_path=0.5)
    dropping_dec.load_state_dict(plain_dec.state_dict())

    src, pos = torch.randn(4, 9, 32), torch.randn(4, 9, 32)
    padding = torch.zeros(4, 9, dtype=torch.bool)
    tokens = torch.randint(0, 20, (4, 7))
    for m in (plain_enc, dropping_enc, plain_dec, dropping_dec):
        m.eval()
    memory = plain_enc(src, pos, padding)
    assert torch.equal(dropping_enc(src, pos, padding), memory)
    assert torch.equal(dropping_dec(tokens, memory, pos, padding), plain_dec(tokens, memory, pos, padding))

    dropping_enc.train()
    dropping_dec.train()
    assert not torch.allclose(dropping_enc(src, pos, padding), memory)
    assert not torch.allclose(dropping_dec(tokens, memory, pos, padding), plain_dec(tokens, memory, pos, padding))
