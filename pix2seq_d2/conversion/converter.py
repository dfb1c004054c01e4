"""What every checkpoint conversion shares: tracking the source tensors, the result, the check
against the model the result's config builds, and writing ``OUTPUT.pth`` + ``OUTPUT.yaml``.

A source-specific mapping (:mod:`.official`, :mod:`.pretrained_pix2seq`) reads the architecture
from the tensors, takes every tensor it maps through :class:`SourceTensors` (so that one left
over is an error, unless it is on the source's explicit ignore list), and returns a
:class:`ConvertedCheckpoint`. :func:`check_against_model` then builds the model its config
describes and requires every parameter and buffer to be filled with a tensor of the right shape.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from pix2seq_d2.model_zoo import ConfigNotFoundError, shipped_config_file
from pix2seq_d2.utils.errors import UserError


class ConversionError(UserError, ValueError):
    """A checkpoint that cannot be converted; the message names the file and the tensors."""


class SourceTensors:
    """Named source tensors, read on demand; remembers which were taken and which are ignored."""

    def __init__(
        self, path: str, names: Iterable[str], read: Callable[[str], np.ndarray | torch.Tensor], ignore: Iterable[str]
    ):
        """``ignore``: regular expressions of names that are not part of the model (optimizer
        slots, step counters); they are listed in the result, never mapped."""
        self.path = path
        self._read = read
        patterns = [re.compile(p) for p in ignore]
        names = list(names)
        self.ignored = sorted(n for n in names if any(p.search(n) for p in patterns))
        self.names = sorted(set(names) - set(self.ignored))
        self.taken: set[str] = set()
        self.last_taken = ""

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def matching(self, pattern: str) -> list[re.Match]:
        """Regex full matches among the (not ignored) names, in name order."""
        compiled = re.compile(pattern)
        return [m for m in (compiled.fullmatch(n) for n in self.names) if m]

    def shape(self, name: str) -> tuple[int, ...]:
        """The tensor's shape, without copying its data (a TF tensor is a view of the mapped file)."""
        return tuple(self._read_known(name).shape)

    def _read_known(self, name: str) -> np.ndarray | torch.Tensor:
        if name not in self.names:
            raise ConversionError(f"{self.path}: tensor {name!r} is missing")
        return self._read(name)

    def peek(self, name: str) -> torch.Tensor:
        """A copy of the tensor, without marking it taken."""
        value = self._read_known(name)
        return torch.as_tensor(np.array(value)) if isinstance(value, np.ndarray) else value.detach().clone()

    def take(self, name: str) -> torch.Tensor:
        value = self.peek(name)
        self.taken.add(name)
        self.last_taken = name
        return value

    def weights(self) -> MappedWeights:
        """An empty state dict that remembers, per entry, the source tensor taken last before it was set."""
        return MappedWeights(self)

    def untaken(self) -> list[str]:
        return [n for n in self.names if n not in self.taken]


class MappedWeights(dict):
    """A converted state dict that knows which source tensor each entry came from (for error messages)."""

    def __init__(self, sources: SourceTensors):
        super().__init__()
        self.sources = sources
        self.origins: dict[str, str] = {}

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        self.origins[key] = self.sources.last_taken
        super().__setitem__(key, value)


@dataclass
class ConvertedCheckpoint:
    """A converted model: its weights, and the config that builds exactly that model."""

    source: str  # the file or folder converted
    source_kind: str  # "official" or "pretrained_pix2seq"
    state_dict: dict[str, torch.Tensor]
    base_config: str  # the shipped configs/official/*.yaml the written config is based on (absolute path)
    overrides: dict[str, object]  # config key -> value read from the checkpoint
    ignored: list[str] = field(default_factory=list)  # source tensors on the ignore list
    notes: list[str] = field(default_factory=list)  # facts a user should know (printed by the tool)

    def config(self):
        """The detectron2 config of the converted model (not frozen)."""
        from pix2seq_d2.config import load_config

        return load_config(self.base_config, [x for kv in self.overrides.items() for x in kv])


def finish(converted: ConvertedCheckpoint, sources: SourceTensors) -> ConvertedCheckpoint:
    """Every source tensor is mapped or ignored, and the model the config builds is filled exactly."""
    left = sources.untaken()
    if left:
        raise ConversionError(
            f"{sources.path}: {len(left)} tensor(s) match no model parameter and are not on the ignore list: "
            + ", ".join(left)
        )
    check_against_model(converted)
    return converted


def check_against_model(converted: ConvertedCheckpoint) -> None:
    """Build the model of ``converted.config()`` and require its state dict's names and shapes."""
    from detectron2.modeling import build_model

    cfg = converted.config()
    cfg.MODEL.DEVICE = "cpu"
    expected = {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in converted.state_dict.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    origins = getattr(converted.state_dict, "origins", {})
    wrong = sorted(
        f"{k}" + (f" from {origins[k]!r}" if k in origins else "") + f" (checkpoint {got[k]}, model {expected[k]})"
        for k in set(got) & set(expected)
        if got[k] != expected[k]
    )
    problems = [
        f"model parameters not filled: {', '.join(missing)}" if missing else "",
        f"converted tensors the model does not have: {', '.join(unexpected)}" if unexpected else "",
        f"wrong shapes: {', '.join(wrong)}" if wrong else "",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise ConversionError(f"{converted.source}: the converted weights do not fit the model: " + "; ".join(problems))


def family_config(name: str, image_size: int) -> str:
    """The shipped ``configs/official/<name>_<size>.yaml``, or the 640 one when there is none for this size:
    an absolute path that exists in editable and non-editable installs alike (``OUTPUT.yaml``'s ``_BASE_``)."""
    try:
        return shipped_config_file(f"official/{name}_{image_size}.yaml")
    except ConfigNotFoundError:
        return shipped_config_file(f"official/{name}_640.yaml")


def _yaml_value(value: object) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    return repr(value)


def config_yaml(converted: ConvertedCheckpoint, weights: str | None = None) -> str:
    """The text of ``OUTPUT.yaml``: ``_BASE_`` on the matching official config + what the tensors say."""
    tree: dict = {}
    for key, value in converted.overrides.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    if weights:
        tree.setdefault("MODEL", {})["WEIGHTS"] = weights

    def lines(node: Mapping, indent: int) -> list[str]:
        out = []
        for key, value in node.items():
            if isinstance(value, Mapping):
                out += [" " * indent + f"{key}:"] + lines(value, indent + 2)
            else:
                out.append(" " * indent + f"{key}: {_yaml_value(value)}")
        return out

    header = [
        f"# Converted by tools/convert_pix2seq_checkpoint.py --source {converted.source_kind} from",
        f"# {converted.source}. Architecture keys below were read from the checkpoint's tensors.",
        *[f"# {note}" for note in converted.notes],
        f'_BASE_: "{converted.base_config}"',
    ]
    return "\n".join(header + lines(tree, 0)) + "\n"


def write_converted(converted: ConvertedCheckpoint, output: str) -> tuple[str, str]:
    """Write ``OUTPUT.pth`` (``{"model": state_dict}``, loadable with ``weights_only=True``) and
    ``OUTPUT.yaml`` (its config, with ``MODEL.WEIGHTS`` pointing at the .pth) -> both paths."""
    stem = output[: -len(".pth")] if output.endswith(".pth") else output
    pth, yaml = stem + ".pth", stem + ".yaml"
    os.makedirs(os.path.dirname(os.path.abspath(pth)), exist_ok=True)
    state = {k: v.contiguous() for k, v in converted.state_dict.items()}
    torch.save({"model": state, "__author__": f"pix2seq_d2 conversion of {converted.source}"}, pth)
    with open(yaml, "w") as f:
        f.write(config_yaml(converted, weights=os.path.abspath(pth)))
    return pth, yaml
