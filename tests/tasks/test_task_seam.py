"""The task seam: a task that is not detection, registered from outside the package, runs through the
mapper, the model's training loss, cached decoding with a two-token prompt and the likelihood evaluator
without any change to them (docs/tasks.md: how to add a task)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from detectron2.modeling import build_model
from detectron2.structures import ImageList, Instances

from pix2seq_d2 import Pix2SeqDatasetMapper
from pix2seq_d2.config import check_config
from pix2seq_d2.evaluation import SequenceLikelihoodEvaluator
from pix2seq_d2.modeling.decoding import decode
from pix2seq_d2.solver import build_optimizer
from pix2seq_d2.tasks import TASK_REGISTRY, DecodingOptions, Pix2SeqTokenizer, Task, TokenSequences, build_task
from tests.helpers import tiny_cfg


class _NoRecords:
    def record(self, rows, t, logprobs):
        pass

    def select(self, rows):
        pass

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}


class CountTask(Task):
    """How many objects an image holds, as one coordinate token (bin = count) after a two-token prompt."""

    name = "count"

    @classmethod
    def from_config(cls, cfg, tokenizer: Pix2SeqTokenizer | None = None) -> CountTask:
        return cls(tokenizer or Pix2SeqTokenizer.from_config(cfg), DecodingOptions(max_objects=1, stop_at_eos=False))

    def prompt(self, batch_size: int, device="cpu") -> torch.Tensor:
        tok = self.tokenizer
        return torch.tensor([[tok.START, tok.NOISE]], device=device).expand(batch_size, 2)

    def forbidden_tokens(self, options, device="cpu") -> torch.Tensor:
        forbidden = torch.ones(1, self.tokenizer.vocab_size, dtype=torch.bool, device=device)
        lo, hi = self.tokenizer.coord_token_range()
        forbidden[0, lo:hi] = False  # only a count
        return forbidden

    def max_response_length(self, options) -> int:
        return 1

    def max_sequence_length(self, max_items: int) -> int:
        return 3  # START NOISE count (input) / NOISE count EOS (target)

    def _tokens(self, counts: torch.Tensor) -> TokenSequences:
        tok = self.tokenizer
        count = counts.clamp(max=tok.num_bins - 1) + tok.coord_token_range()[0]  # [B]
        b = counts.shape[0]
        prompt = self.prompt(b, counts.device)
        return TokenSequences(
            input=torch.cat([prompt, count[:, None]], 1),
            target=torch.stack([prompt[:, 1], count, torch.full_like(count, tok.EOS)], 1),
            weight=torch.tensor([[0.0, 1.0, 1.0]], device=counts.device).expand(b, 3),
        )

    def example(self, instances: Instances, is_train: bool = True) -> tuple[Instances, TokenSequences]:
        out = self._tokens(torch.tensor([len(instances)]))
        return instances, TokenSequences(out.input[0], out.target[0], out.weight[0])

    def batch_sequences(self, instances: Sequence[Instances], names, device, generator=None, draws=None):
        return self._tokens(torch.tensor([len(x) for x in instances], device=device))

    def response_recorder(self, rows, options, device):
        return _NoRecords()

    def outputs(self, batched_inputs, sequences: Any, images: ImageList, do_postprocess=True, options=None):
        counts = sequences.tokens[:, 0] - self.tokenizer.coord_token_range()[0]
        return [{"count": int(c)} for c in counts]

    def token_kinds(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        lo, hi = self.tokenizer.coord_token_range()
        return {"count": (tokens >= lo) & (tokens < hi), "eos": tokens == self.tokenizer.EOS}


if "CountTask" not in TASK_REGISTRY:
    TASK_REGISTRY.register(CountTask)


def test_a_new_task_trains_decodes_and_is_evaluated_through_the_unchanged_pipeline(two_images):
    name, dicts = two_images
    cfg = tiny_cfg("MODEL.PIX2SEQ.TASKS", ["CountTask"], "MODEL.PIX2SEQ.DROPOUT", 0.0, "DATASETS.TRAIN", (name,),
                   "DATASETS.TEST", (name,), "MODEL.PIX2SEQ.NUM_CLASSES", 3)  # fmt: skip
    assert check_config(cfg, for_training=True, num_workers=1) == []
    assert isinstance(build_task(cfg), CountTask)
    model = build_model(cfg)
    assert isinstance(model.task, CountTask) and model.decoder.max_len == 3  # the task sized the decoder
    mapper = Pix2SeqDatasetMapper(cfg, is_train=True)
    batch = [mapper(d) for d in dicts]
    counts = [len(d["annotations"]) for d in dicts]
    coord0 = model.tokenizer.coord_token_range()[0]
    assert [x["seq_target"].tolist() for x in batch] == [[model.tokenizer.NOISE, coord0 + c, 1] for c in counts]

    # the same sequences when the model makes them from ``instances`` (any detectron2 mapper)
    made = model.training_sequences([{k: v for k, v in x.items() if not k.startswith("seq_")} for x in batch])
    assert made.target.tolist() == [x["seq_target"].tolist() for x in batch]

    # training lowers the loss (an image with 2 objects and one with 1 to tell apart)
    model.train()
    optimizer = build_optimizer(cfg, model)
    losses = []
    for _ in range(40):
        loss = model(batch)["loss_seq"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]

    # inference: the task's outputs, under its grammar, and the likelihood of its sequences
    model.eval()
    test_batch = [Pix2SeqDatasetMapper(cfg, is_train=False, use_annotations=True)(d) for d in dicts]
    outputs = model(test_batch)
    assert [o["count"] for o in outputs] == counts
    evaluator = SequenceLikelihoodEvaluator(model.task, distributed=False)
    evaluator.process(test_batch, outputs)
    result = evaluator.evaluate()["seq_likelihood"]
    assert set(result) >= {"nll", "nll_count", "nll_eos", "perplexity"} and result["images"] == 2.0


def test_a_two_token_prompt_decodes_the_same_with_and_without_the_cache():
    torch.manual_seed(0)
    cfg = tiny_cfg("MODEL.PIX2SEQ.TASKS", ["CountTask"])
    model = build_model(cfg).eval()
    images = model.preprocess_image([{"image": torch.randint(0, 255, (3, 64, 64)).float()} for _ in range(3)])
    encoded = model.encode(images)
    options = DecodingOptions(max_objects=1, stop_at_eos=False)
    cached = decode(model.decoder, model.task, *encoded, options, use_cache=True, return_logits=True)
    recomputed = decode(model.decoder, model.task, *encoded, options, use_cache=False, return_logits=True)
    assert torch.equal(cached.tokens, recomputed.tokens)
    torch.testing.assert_close(cached.logits, recomputed.logits, atol=1e-5, rtol=1e-5)
    lo, hi = model.tokenizer.coord_token_range()
    assert ((cached.tokens >= lo) & (cached.tokens < hi)).all()  # the task's grammar held
    beam = decode(model.decoder, model.task, *encoded, DecodingOptions(max_objects=1, stop_at_eos=False,
                                                                    strategy="beam", beam_size=3))  # fmt: skip
    assert torch.equal(beam.tokens, cached.tokens)  # one token: the best beam is the greedy choice
