"""``SequenceLikelihoodEvaluator``: how likely the model finds the validation set's ground-truth sequences.

A validation loss for a model whose AP needs a full decode: with teacher forcing, the
negative log-likelihood (NLL, nats per token) and perplexity (``exp(NLL)``) of the
ground-truth tokens, overall and split by the task's token kinds (detection: coordinate bins, class
tokens and EOS) and the class-token accuracy (percent of class targets whose most likely token is
the right class). Every token weighs 1 (the loss weights of training do not apply).

The model computes the per-token numbers during inference when the test mapper gives it
ground-truth sequences (``TEST.SEQ_LIKELIHOOD``; see ``Pix2Seq.sequence_likelihood``); this
evaluator sums them over the dataset and, with several workers, over all workers before
dividing, so the result equals one process over the whole set. Results land next to
COCOEvaluator's, e.g. ``seq_likelihood/nll_coord`` in ``metrics.json``.
"""

from __future__ import annotations

import logging
import math

import torch
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from pix2seq_d2.tasks import Task

logger = logging.getLogger(__name__)


class SequenceLikelihoodEvaluator(DatasetEvaluator):
    """Teacher-forced NLL / perplexity by token kind and class accuracy (see the module docstring)."""

    def __init__(self, task: Task, distributed: bool = True):
        """``task``: the model's task, which says the kind of each target token."""
        self.task = task
        self.distributed = distributed
        self.kinds = tuple(task.token_kinds(torch.zeros(0, dtype=torch.long)))  # the task's token kinds, in order
        self.reset()

    def reset(self) -> None:
        # Per kind: [sum of NLL, number of tokens]; plus correct class predictions and images seen.
        self._nll = dict.fromkeys(self.kinds, 0.0)
        self._count = dict.fromkeys(self.kinds, 0)
        self._class_correct = 0
        self._images = 0
        self._without_sequence = 0

    def token_kinds(self, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Boolean masks over ``target`` for each token kind (PAD belongs to none)."""
        return self.task.token_kinds(target)

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for output in outputs:
            stats = output.get("sequence_likelihood")
            if stats is None:
                self._without_sequence += 1
                continue
            target, logprob, argmax = stats["target"], stats["logprob"].double(), stats["argmax"]
            for kind, mask in self.token_kinds(target).items():
                self._nll[kind] += float(-logprob[mask].sum())
                self._count[kind] += int(mask.sum())
                if kind == "class":
                    self._class_correct += int((argmax[mask] == target[mask]).sum())
            self._images += 1

    def evaluate(self) -> dict:
        totals = [self._nll, self._count, self._class_correct, self._images, self._without_sequence]
        if self.distributed and comm.get_world_size() > 1:
            gathered = comm.gather(totals, dst=0)
            if not comm.is_main_process():
                return {}
            totals = [
                {k: sum(g[i][k] for g in gathered) for k in self.kinds} if i < 2 else sum(g[i] for g in gathered)
                for i in range(len(totals))
            ]
        nll, count, class_correct, images, without_sequence = totals
        if without_sequence:
            logger.warning(
                f"{without_sequence} images had no ground-truth sequence (no annotations, or a test loader "
                "without Pix2SeqDatasetMapper(use_annotations=True)); the likelihood leaves them out"
            )
        if images == 0:
            return {}
        results = {"images": float(images)}
        total_tokens = sum(count.values())
        results["nll"] = sum(nll.values()) / max(total_tokens, 1)
        results["perplexity"] = math.exp(results["nll"])
        for kind in self.kinds:
            if count[kind]:
                results[f"nll_{kind}"] = nll[kind] / count[kind]
                results[f"perplexity_{kind}"] = math.exp(results[f"nll_{kind}"])
        if count.get("class"):
            results["class_accuracy"] = 100.0 * class_correct / count["class"]
        return {"seq_likelihood": results}
