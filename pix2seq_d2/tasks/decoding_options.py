"""How a task's sequences are decoded: :class:`DecodingOptions` (``MODEL.PIX2SEQ.DECODE``), owned by the task
(each task has its own defaults), and the registry of token-selection rules the decoding engine
(:mod:`pix2seq_d2.modeling.decoding`) runs: "greedy" and "sample" are registered there, "beam" is beam
search. A new rule registered in ``TOKEN_SELECTOR_REGISTRY`` becomes a valid ``DECODE.STRATEGY``."""

from __future__ import annotations

from dataclasses import dataclass

from detectron2.config import CfgNode
from detectron2.utils.registry import Registry

__all__ = ["BOX_SOURCES", "DecodingOptions", "TOKEN_SELECTOR_REGISTRY", "TOP_P_RULES"]

TOP_P_RULES = ("at_least", "at_most")
BOX_SOURCES = ("generated", "argmax")

TOKEN_SELECTOR_REGISTRY = Registry("PIX2SEQ_TOKEN_SELECTOR")
TOKEN_SELECTOR_REGISTRY.__doc__ = """Rules that pick the next token from grammar-masked logits.
Each is called as ``select(logits [N, V], options, generator) -> tokens [N]``."""


@dataclass(frozen=True)
class DecodingOptions:
    """How to decode; built from ``MODEL.PIX2SEQ.DECODE`` by :meth:`from_config`."""

    strategy: str = "greedy"  # "greedy", "sample" or "beam"
    temperature: float = 1.0  # sample: logits / temperature (0 = greedy)
    top_k: int = 0  # sample: keep the k most likely allowed tokens (0 = all)
    top_p: float = 0.4  # sample: keep the smallest set with this much probability (nucleus; paper: 0.4)
    beam_size: int = 4  # beam: hypotheses kept per image
    length_penalty: float = 1.0  # beam: finished hypotheses rank by logprob / num_objects**penalty
    max_objects: int = 100  # objects decoded at most per image
    stop_at_eos: bool = True  # False: ignore EOS and decode exactly max_objects objects
    allow_noise_class: bool = False  # let class slots take the noise (fake) class token
    seed: int = -1  # sample: seed of the sampling generator (< 0: torch's global RNG)
    grammar: bool = True  # False: no slot constraints (decode as the peers do)
    top_p_rule: str = "at_least"  # "at_least" (smallest set with >= top_p) or "at_most" (official)
    box_from: str = "generated"  # boxes from the "generated" tokens or each slot's "argmax" coordinate

    @classmethod
    def from_config(cls, cfg: CfgNode) -> DecodingOptions:
        d = cfg.MODEL.PIX2SEQ.DECODE
        return cls(
            strategy=d.STRATEGY,
            temperature=d.TEMPERATURE,
            top_k=d.TOP_K,
            top_p=d.TOP_P,
            beam_size=d.BEAM_SIZE,
            length_penalty=d.LENGTH_PENALTY,
            max_objects=cfg.MODEL.PIX2SEQ.MAX_OBJECTS_TEST,
            stop_at_eos=d.STOP_AT_EOS,
            allow_noise_class=d.ALLOW_NOISE_CLASS,
            seed=d.SEED,
            grammar=d.GRAMMAR,
            top_p_rule=d.TOP_P_RULE,
            box_from=d.BOX_FROM,
        )

    def __post_init__(self):
        if self.strategy != "beam" and self.strategy not in TOKEN_SELECTOR_REGISTRY:
            known = ["beam", *(name for name, _ in TOKEN_SELECTOR_REGISTRY)]
            raise ValueError(f"unknown decoding strategy {self.strategy!r}; known: {known}")
        if self.top_p_rule not in TOP_P_RULES or self.box_from not in BOX_SOURCES:
            raise ValueError(f"top_p_rule must be one of {TOP_P_RULES} and box_from one of {BOX_SOURCES}: {self}")
        # "at_most" keeps at least the most likely token, so top_p = 0 is meaningful there (greedy).
        p_ok = 0 <= self.top_p <= 1 if self.top_p_rule == "at_most" else 0 < self.top_p <= 1
        if self.temperature < 0 or not p_ok or self.top_k < 0 or self.beam_size < 1:
            raise ValueError(f"invalid decoding options: {self}")
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")
