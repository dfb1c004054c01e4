"""Greedy decoding: grammar constraints, the key/value cache against full recomputation."""

from __future__ import annotations

import types

import torch
from detectron2.modeling import build_model

from pix2seq_d2.decoding import grammar_masks, greedy_decode
from pix2seq_d2.tokenizer import TOKENS_PER_OBJECT, Pix2SeqTokenizer

from .conftest import tiny_cfg


def encoded_batch(model, sizes=((64, 64), (64, 48), (40, 64))):
    """Random images of different sizes -> encoder memory, position encoding, padding."""
    inputs = [{"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8)} for h, w in sizes]
    return model.encode(model.preprocess_image(inputs))


def untrained_model(*opts):
    model = build_model(tiny_cfg("MODEL.PIX2SEQ.DROPOUT", 0.1, "MODEL.PIX2SEQ.SHARE_EMBEDDING", False, *opts)).eval()
    # Sharpen the output distribution and the positions so that greedy choices vary.
    with torch.no_grad():
        model.decoder.output_proj.weight.mul_(30)
        model.decoder.pos_embed.weight.mul_(50)
    return model


def test_cached_decoding_equals_recomputing_the_prefix():
    model = untrained_model()
    memory, pos, padding = encoded_batch(model)
    cached = greedy_decode(model.decoder, model.tokenizer, memory, pos, padding, 6, use_cache=True, return_logits=True)
    full = greedy_decode(model.decoder, model.tokenizer, memory, pos, padding, 6, use_cache=False, return_logits=True)
    assert cached.tokens.shape == (3, 6 * TOKENS_PER_OBJECT)
    assert torch.equal(cached.tokens, full.tokens)
    torch.testing.assert_close(cached.logits, full.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cached.token_probs, full.token_probs, rtol=1e-4, atol=1e-5)
    assert len(set(cached.tokens.flatten().tolist())) > 5  # the test is not vacuous


def test_step_with_several_positions_matches_forward():
    model = untrained_model()
    memory, pos, padding = encoded_batch(model)
    tokens = torch.randint(0, model.tokenizer.vocab_size, (3, 11))
    full = model.decoder(tokens, memory, pos, padding)
    cache = model.decoder.start(memory, pos, padding, max_len=11)
    first = model.decoder.step(tokens[:, :4], cache)
    rest = torch.cat([model.decoder.step(tokens[:, i : i + 1], cache) for i in range(4, 11)], 1)
    torch.testing.assert_close(torch.cat([first, rest], 1), full, rtol=1e-4, atol=1e-4)


def test_grammar_holds_even_when_the_model_prefers_forbidden_tokens():
    model = untrained_model()
    tok = model.tokenizer
    with torch.no_grad():  # unconstrained argmax would be NOISE everywhere and never a class
        model.decoder.output_bias[tok.NOISE] = 100.0
        model.decoder.output_bias[tok.EOS] = -100.0
        model.decoder.output_bias[slice(*tok.class_token_range())] = -100.0
    memory, pos, padding = encoded_batch(model)
    out = greedy_decode(model.decoder, tok, memory, pos, padding, 4)
    assert out.tokens.shape == (3, 4 * TOKENS_PER_OBJECT)
    allowed = grammar_masks(tok)
    slots = torch.arange(out.tokens.shape[1]) % TOKENS_PER_OBJECT
    assert allowed[slots[None].expand_as(out.tokens), out.tokens].all()
    assert (out.token_probs < 1e-3).all()  # probabilities come from the unconstrained softmax


class ScriptedDecoder(torch.nn.Module):
    """Emits fixed logits per position: exercises the decoding loop itself, exactly."""

    def __init__(self, script: torch.Tensor):
        super().__init__()
        self.script = script  # [B, T, V]

    def start(self, memory, memory_pos, memory_padding, max_len=None):
        return types.SimpleNamespace(length=0)

    def step(self, tokens, cache):
        cache.length += tokens.shape[1]
        return self.script[:, cache.length - tokens.shape[1] : cache.length]

    def forward(self, tokens, memory, memory_pos, memory_padding):
        return self.script[:, : tokens.shape[1]]


def test_each_image_stops_at_its_own_eos_and_decoding_ends_when_all_have():
    tok = Pix2SeqTokenizer(num_classes=3, num_bins=10)
    c, k = tok.coord_offset, tok.class_offset
    wanted = [
        [c + 1, c + 2, c + 5, c + 6, k + 0, c + 3, c + 3, c + 4, c + 4, k + 2, tok.EOS],  # 2 objects, then EOS
        [tok.EOS] + [c + 1] * 10,  # ends at once; what follows must never be used
    ]
    script = torch.full((2, 20, tok.vocab_size), -10.0)
    for b, row in enumerate(wanted):
        for t, token in enumerate(row):
            script[b, t, token] = 10.0
    memory = torch.zeros(2, 4, 8)
    padding = torch.zeros(2, 4, dtype=torch.bool)
    for use_cache in (True, False):
        out = greedy_decode(ScriptedDecoder(script), tok, memory, memory, padding, 4, use_cache=use_cache)
        assert out.tokens.shape == (2, 11)  # stopped as soon as both had ended, not after 4 objects
        assert out.tokens[0].tolist() == wanted[0]
        assert out.tokens[1].tolist() == [tok.EOS] + [tok.PAD] * 10
        assert (out.token_probs[1, 1:] == 0).all()
        objects = tok.decode(out.tokens, out.token_probs, torch.tensor([[10, 10], [10, 10]]))
        assert objects.valid.tolist() == [[True, True], [False, False]]
        assert objects.classes[0].tolist() == [0, 2]
