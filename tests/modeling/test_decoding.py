"""The decoding engine: strategies, grammar, stopping, beam search, cache against recompute."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from detectron2.modeling import build_model

from pix2seq_d2.modeling.decoding import decode, filter_logits
from pix2seq_d2.tasks import DecodingOptions
from pix2seq_d2.tasks.detection import TOKENS_PER_OBJECT
from pix2seq_d2.tasks.tokenizer import Pix2SeqTokenizer
from tests.helpers import detection_task, tiny_cfg
from tests.helpers.peer_fixtures import cases, load_io

SIZES = ((64, 64), (64, 48), (40, 64), (64, 40), (48, 48), (56, 64))


def untrained_model(*opts):
    model = build_model(tiny_cfg("MODEL.PIX2SEQ.DROPOUT", 0.1, "MODEL.PIX2SEQ.SHARE_EMBEDDING", False, *opts)).eval()
    # Sharpen the output distribution and the positions so that choices vary between steps.
    with torch.no_grad():
        model.decoder.output_proj.weight.mul_(30)
        model.decoder.pos_embed.weight.mul_(50)
    return model


def encoded(model, sizes=SIZES):
    """Random images of different sizes -> encoder memory, position encoding, padding."""
    inputs = [{"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8)} for h, w in sizes]
    return model.encode(model.preprocess_image(inputs))


def run(model, enc, use_cache=True, return_logits=False, **options):
    options.setdefault("max_objects", 4)
    options.setdefault("top_p", 1.0)  # plain sampling unless a test asks for a nucleus
    return decode(model.decoder, model.task, *enc, DecodingOptions(**options), use_cache, return_logits)


def end_positions(tokens: torch.Tensor, eos: int) -> list[int]:
    return [int((row == eos).nonzero()[0]) if (row == eos).any() else len(row) for row in tokens]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return untrained_model()


@pytest.fixture(scope="module")
def eos_model():
    """A model whose images end at different steps: EOS biased to win for some images only."""
    torch.manual_seed(0)
    model = untrained_model()
    enc = encoded(model)
    tok = model.tokenizer
    logits = run(model, enc, return_logits=True, stop_at_eos=False).logits  # [B, T, V]
    at_second_object = logits[:, TOKENS_PER_OBJECT]
    coord_lo, coord_hi = tok.coord_token_range()
    margin = at_second_object[:, coord_lo:coord_hi].max(-1).values - at_second_object[:, tok.EOS]
    middle = margin.sort().values[len(SIZES) // 2 - 1 : len(SIZES) // 2 + 1].mean()  # between two images
    with torch.no_grad():
        model.decoder.output_bias[tok.EOS] += middle
    return model, enc


# ---- cache against recompute ---------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_cached_decoding_reproduces_recomputing_the_prefix(eos_model, strategy):
    model, enc = eos_model
    cached = run(model, enc, strategy=strategy, return_logits=True)
    full = run(model, enc, strategy=strategy, use_cache=False, return_logits=True)
    assert torch.equal(cached.tokens, full.tokens)
    torch.testing.assert_close(cached.logits, full.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cached.token_logprobs, full.token_logprobs, rtol=1e-4, atol=1e-4)
    if strategy == "greedy":  # images ended at different steps, so finished rows left the batch
        assert len(set(end_positions(cached.tokens, model.tokenizer.EOS))) >= 2
    assert len(set(cached.tokens.flatten().tolist())) > 5  # not a degenerate sequence


def test_step_with_several_positions_matches_forward(model):
    memory, pos, padding = encoded(model)
    tokens = torch.randint(0, model.tokenizer.vocab_size, (len(SIZES), 11))
    full = model.decoder(tokens, memory, pos, padding)
    cache = model.decoder.start(memory, pos, padding, max_len=11)
    first = model.decoder.step(tokens[:, :4], cache)
    rest = torch.cat([model.decoder.step(tokens[:, i : i + 1], cache) for i in range(4, 11)], 1)
    torch.testing.assert_close(torch.cat([first, rest], 1), full, rtol=1e-4, atol=1e-4)


# ---- strategies -------------------------------------------------------------------------------
def masked_step_logits(model, out, allow_eos=True):
    """The grammar-masked logits each generated token was chosen from: [B, T, V]."""
    masks = model.task.grammar(allow_eos=allow_eos)
    slots = torch.arange(out.logits.shape[1]) % TOKENS_PER_OBJECT
    return out.logits.masked_fill(~masks[slots][None], float("-inf"))


def test_top_k_never_emits_outside_the_top_k(model):
    enc = encoded(model)
    for seed in range(5):
        out = run(model, enc, strategy="sample", top_k=3, seed=seed, stop_at_eos=False, return_logits=True)
        masked = masked_step_logits(model, out, allow_eos=False)
        kth = masked.topk(3, dim=-1).values[..., -1]
        chosen = masked.gather(-1, out.tokens[..., None])[..., 0]
        assert (chosen >= kth).all()
    assert len(set(out.tokens.flatten().tolist())) > 5


def test_top_p_never_emits_outside_the_nucleus(model):
    enc = encoded(model)
    for seed in range(5):
        out = run(model, enc, strategy="sample", top_p=0.4, seed=seed, stop_at_eos=False, return_logits=True)
        masked = masked_step_logits(model, out, allow_eos=False)
        probs = masked.softmax(-1)
        chosen_p = probs.gather(-1, out.tokens[..., None])  # [B, T, 1]
        # The nucleus: tokens whose more-likely tokens hold less than top_p of the mass.
        mass_above = (probs * (probs > chosen_p)).sum(-1)
        assert (mass_above < 0.4 + 1e-6).all()


def test_filter_logits_keeps_the_smallest_set_reaching_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filter_logits(logits, top_k=0, top_p=0.7))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(filter_logits(logits, top_k=0, top_p=0.5))
    assert kept.tolist() == [[True, False, False, False]]
    kept = torch.isfinite(filter_logits(logits, top_k=3, top_p=1.0))
    assert kept.tolist() == [[True, True, True, False]]


@pytest.mark.parametrize("temperature", [0.0, 1e-4])
def test_sampling_at_temperature_towards_zero_equals_greedy(eos_model, temperature):
    model, enc = eos_model
    greedy = run(model, enc)
    sampled = run(model, enc, strategy="sample", temperature=temperature, seed=3)
    assert torch.equal(sampled.tokens, greedy.tokens)


def test_sampling_is_reproducible_with_a_seed(model):
    enc = encoded(model)
    a = run(model, enc, strategy="sample", seed=7, stop_at_eos=False)
    b = run(model, enc, strategy="sample", seed=7, stop_at_eos=False)
    c = run(model, enc, strategy="sample", seed=8, stop_at_eos=False)
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)


def test_beam_width_one_equals_greedy(eos_model):
    model, enc = eos_model
    greedy = run(model, enc)
    beam = run(model, enc, strategy="beam", beam_size=1, length_penalty=0.0)
    assert torch.equal(beam.tokens, greedy.tokens)
    torch.testing.assert_close(beam.token_logprobs, greedy.token_logprobs)


@pytest.mark.parametrize("stop_at_eos", [True, False])
def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy(eos_model, stop_at_eos):
    model, enc = eos_model
    greedy = run(model, enc, stop_at_eos=stop_at_eos).token_logprobs.sum(-1)
    beam = run(model, enc, strategy="beam", beam_size=4, length_penalty=0.0, stop_at_eos=stop_at_eos)
    beam_logprob = beam.token_logprobs.sum(-1)
    assert (beam_logprob >= greedy - 1e-4).all()
    assert (beam_logprob > greedy + 1e-3).any()  # and strictly better somewhere: not vacuous


@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
@pytest.mark.parametrize("allow_noise_class", [False, True])
def test_grammar_holds_for_every_strategy_even_against_the_models_preference(strategy, allow_noise_class):
    torch.manual_seed(0)
    model = untrained_model()
    tok = model.tokenizer
    with torch.no_grad():  # unconstrained, NOISE would win everywhere and a class never would
        model.decoder.output_bias[tok.NOISE] = 100.0
        model.decoder.output_bias[slice(*tok.class_token_range())] = -100.0
    out = run(model, encoded(model), strategy=strategy, seed=0, stop_at_eos=False, allow_noise_class=allow_noise_class)
    allowed = detection_task(tok).grammar(allow_eos=False, allow_noise_class=allow_noise_class)
    slots = torch.arange(out.tokens.shape[1]) % TOKENS_PER_OBJECT
    assert allowed[slots[None].expand_as(out.tokens), out.tokens].all()
    class_tokens = out.tokens[:, TOKENS_PER_OBJECT - 1 :: TOKENS_PER_OBJECT]
    assert (class_tokens == tok.NOISE).all() == allow_noise_class


# ---- length and ending ---------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_fixed_length_mode_returns_exactly_the_requested_number_of_objects(eos_model, strategy):
    model, enc = eos_model  # a model that would end some images early at EOS
    out = run(model, enc, strategy=strategy, seed=0, stop_at_eos=False, max_objects=7)
    assert out.tokens.shape == (len(SIZES), 7 * TOKENS_PER_OBJECT)
    assert (out.tokens != model.tokenizer.EOS).all()
    objects = model.task.decode_objects(
        out.tokens, out.token_logprobs, out.records["class_logprobs"], torch.tensor(SIZES)
    )
    assert objects.valid.sum(-1).tolist() == [7] * len(SIZES)


class ScriptedDecoder(torch.nn.Module):
    """Emits fixed logits per image and position: exercises the decoding loop exactly. Rows are
    tracked through batch compaction via the cache (cached path) or the memory (recompute path)."""

    def __init__(self, script: torch.Tensor):
        super().__init__()
        self.script = script  # [B, T, V]

    class Cache:
        def __init__(self, rows):
            self.rows, self.length = rows, 0

        def select(self, rows, memory_unchanged=False):
            self.rows = self.rows[rows]

    def start(self, memory, memory_pos, memory_padding, max_len=None):
        return self.Cache(memory[:, 0, 0].long())

    def step(self, tokens, cache):
        cache.length += tokens.shape[1]
        return self.script[cache.rows, cache.length - tokens.shape[1] : cache.length]

    def forward(self, tokens, memory, memory_pos, memory_padding):
        return self.script[memory[:, 0, 0].long(), : tokens.shape[1]]


def test_each_image_stops_at_its_own_eos_and_decoding_ends_when_all_have():
    tok = Pix2SeqTokenizer(num_classes=3, num_bins=10)
    c, k = tok.coord_token_range()[0], tok.class_token_range()[0]
    wanted = [
        [c + 1, c + 2, c + 5, c + 6, k + 0, c + 3, c + 3, c + 4, c + 4, k + 2, tok.EOS],  # 2 objects, then EOS
        [tok.EOS] + [c + 1] * 10,  # ends at once; what follows must never be used
        [c + 2, c + 2, c + 3, c + 3, k + 1, tok.EOS] + [c + 1] * 5,  # 1 object
    ]
    script = torch.full((3, 20, tok.vocab_size), -10.0)
    for b, row in enumerate(wanted):
        for t, token in enumerate(row):
            script[b, t, token] = 10.0
    memory = torch.arange(3.0)[:, None, None].expand(3, 4, 8)  # carries each image's row index
    padding = torch.zeros(3, 4, dtype=torch.bool)
    for use_cache in (True, False):
        out = decode(
            ScriptedDecoder(script),
            detection_task(tok),
            memory,
            memory,
            padding,
            DecodingOptions(max_objects=4),
            use_cache,
        )
        assert out.tokens.shape == (3, 11)  # stopped as soon as all had ended, not after 4 objects
        assert out.tokens[0].tolist() == wanted[0]
        assert out.tokens[1].tolist() == [tok.EOS] + [tok.PAD] * 10
        assert out.tokens[2].tolist() == wanted[2][:6] + [tok.PAD] * 5
        assert (out.token_logprobs[1, 1:] == 0).all()
        objects = detection_task(tok).decode_objects(
            out.tokens, out.token_logprobs, out.records["class_logprobs"], torch.tensor([[10, 10]] * 3)
        )
        assert objects.valid.tolist() == [[True, True], [False, False], [True, False]]
        assert objects.classes[0].tolist() == [0, 2]


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_batch_results_equal_one_image_at_a_time(eos_model, strategy):
    """Images encoded one by one, then decoded as one padded batch or one at a time."""
    model, _ = eos_model
    torch.manual_seed(1)
    singles = [encoded(model, [size]) for size in SIZES]
    longest = max(memory.shape[1] for memory, _, _ in singles)

    def pad(x, value):
        return torch.nn.functional.pad(x, (0, 0, 0, longest - x.shape[1]), value=value)

    batch_enc = (
        torch.cat([pad(m, 0.0) for m, _, _ in singles]),
        torch.cat([pad(p, 0.0) for _, p, _ in singles]),
        torch.cat([torch.nn.functional.pad(pd, (0, longest - pd.shape[1]), value=True) for _, _, pd in singles]),
    )
    batch = run(model, batch_enc, strategy=strategy)
    for i, single_enc in enumerate(singles):
        single = run(model, single_enc, strategy=strategy)
        n = single.tokens.shape[1]
        assert torch.equal(batch.tokens[i, :n], single.tokens[0])
        assert (batch.tokens[i, n:] == model.tokenizer.PAD).all()
        torch.testing.assert_close(batch.token_logprobs[i, :n], single.token_logprobs[0], rtol=1e-4, atol=1e-4)


def test_model_generate_gives_the_same_tokens_batched_and_alone(eos_model):
    """Through the whole model (the backbone sees batch padding, so only tokens are compared)."""
    model, _ = eos_model
    torch.manual_seed(1)
    inputs = [{"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8)} for h, w in SIZES]
    batch, images = model.generate(inputs)
    assert images.image_sizes == list(SIZES)
    for i, single_input in enumerate(inputs):
        single, _ = model.generate([single_input])
        n = single.tokens.shape[1]
        assert torch.equal(batch.tokens[i, :n], single.tokens[0])


def test_detections_per_image_caps_the_output_highest_scores_first(eos_model):
    model, _ = eos_model
    torch.manual_seed(2)
    inputs = [{"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)} for _ in range(3)]
    original = model.decoding, model.task.detections_per_image
    model.decoding = dataclasses.replace(model.decoding, stop_at_eos=False, max_objects=8)
    try:
        everything = model(inputs)
        model.task.detections_per_image = 3
        capped = model(inputs)
    finally:  # the model is shared by the module's tests
        model.decoding, model.task.detections_per_image = original
    for full, top in zip(everything, capped):
        full, top = full["instances"], top["instances"]
        assert len(full) > 3 and len(top) == 3
        assert top.scores.tolist() == sorted(full.scores.tolist(), reverse=True)[:3]


# ---- options ---------------------------------------------------------------------------------
def test_options_come_from_the_config_and_bad_values_are_rejected():
    cfg = tiny_cfg("MODEL.PIX2SEQ.DECODE.STRATEGY", "sample", "MODEL.PIX2SEQ.DECODE.TOP_P", 0.4,
                   "MODEL.PIX2SEQ.MAX_OBJECTS_TEST", 7)  # fmt: skip
    options = DecodingOptions.from_config(cfg)
    assert (options.strategy, options.top_p, options.max_objects) == ("sample", 0.4, 7)
    with pytest.raises(ValueError, match="unknown decoding strategy"):
        dataclasses.replace(options, strategy="nucleus")
    with pytest.raises(ValueError, match="invalid decoding options"):
        dataclasses.replace(options, top_p=0.0)


NUCLEUS_CASES = cases("nucleus")


@pytest.mark.parametrize("case", NUCLEUS_CASES, ids=lambda c: c.rsplit("/", 1)[-1])
def test_at_most_top_p_rule_keeps_the_official_sets(case):
    """The official ``top_logits`` (fixture: its kept masks for every (k, p) setting on hand-made and
    vocabulary-sized rows): our "at_most" rule keeps exactly the same tokens, with their values."""

    io = load_io(case)
    for s, (k, p) in enumerate(zip(io["settings_k"].tolist(), io["settings_p"].tolist())):
        for rows, kept, filtered in (
            ("logits_small", "small_kept", "small_filtered"),
            ("logits_vocab", "vocab_kept", "vocab_filtered"),
        ):
            ours = filter_logits(torch.from_numpy(io[rows]), int(k), float(p), top_p_rule="at_most")
            assert torch.equal(torch.isfinite(ours), torch.from_numpy(io[kept][s])), (k, p, rows)
            want = torch.from_numpy(io[filtered][s])
            assert torch.equal(ours[torch.isfinite(ours)], want[torch.from_numpy(io[kept][s])])


def test_at_most_and_at_least_differ_as_documented():
    """For probabilities .35/.30/.20/.15 and p = 0.4 the official rule keeps one token, ours two."""
    logits = torch.tensor([[0.35, 0.30, 0.20, 0.15]]).log()
    assert torch.isfinite(filter_logits(logits, 0, 0.4, "at_most")).sum() == 1
    assert torch.isfinite(filter_logits(logits, 0, 0.4, "at_least")).sum() == 2
