"""The configuration reference (``docs/configuration.md``), generated from the owners of its facts.

* the keys Pix2Seq adds and their defaults: a config built by :func:`~.defaults.add_pix2seq_config`;
* what each key (and each node) means: the comment above or beside its line in :mod:`.defaults`, read with
  :mod:`ast` and :mod:`tokenize` (a key without a comment takes the reason of its rule);
* the allowed values and when they are checked: the rule table of the start-up checks (:mod:`.rules`).

:func:`reference_markdown` renders them as markdown; ``tools/generate_config_reference.py`` writes it to
``docs/configuration.md`` and ``tests/docs/test_configuration_reference.py`` fails when that file differs
from what this module gives now. A key that has neither a comment nor a rule is an error
(:class:`UndocumentedKeyError`), so that a new key cannot go undocumented.
"""

from __future__ import annotations

import ast
import inspect
import io
import re
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from detectron2.config import get_cfg

from . import defaults
from .loading import config_items
from .rules import RULES, rule_table

__all__ = [
    "GENERATOR",
    "REFERENCE_PATH",
    "KeyDoc",
    "UndocumentedKeyError",
    "added_keys",
    "documented_keys",
    "reference_markdown",
    "source_comments",
]

REFERENCE_PATH = "docs/configuration.md"  # relative to the repository root
GENERATOR = "python tools/generate_config_reference.py"
_SECTION_HEADER = re.compile(r"^-{2,}.*-{2,}$")  # "# ---- tokenizer ----": a divider, not documentation
_DIRECTIVE = re.compile(r"^(noqa|fmt:|type:)")


class UndocumentedKeyError(ValueError):
    """A key added by ``add_pix2seq_config`` with neither a comment in ``defaults.py`` nor a rule."""


@dataclass(frozen=True)
class KeyDoc:
    """One row of the reference: a key, its default, and what documents it."""

    key: str
    default: Any
    comment: str  # from defaults.py; "" when the key has none
    rules: tuple[dict[str, str], ...]  # its rows of rule_table()

    @property
    def meaning(self) -> str:
        return self.comment or "; ".join(r["why"] for r in self.rules)


# ---- reading defaults.py --------------------------------------------------------------------------
def _comment_lines(source: str) -> tuple[dict[int, str], set[int]]:
    """Line number -> comment text, and the line numbers that hold code."""
    comments, code = {}, set()
    skip = (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string[1:].strip()
            if not _DIRECTIVE.match(text):
                comments[tok.start[0]] = text
        elif tok.type not in skip:
            code.update(range(tok.start[0], tok.end[0] + 1))
    return comments, code


def _comment_of(stmt: ast.stmt, comments: dict[int, str], code: set[int]) -> str:
    """The comment lines right above ``stmt`` (up to a blank line, code or a section divider), then its
    inline comment, as one paragraph."""
    above, line = [], stmt.lineno - 1
    while line in comments and line not in code and not _SECTION_HEADER.match(comments[line]):
        above.append(comments[line])
        line -= 1
    inline = [comments[n] for n in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1) if n in comments]
    return " ".join([*reversed(above), *inline])


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """``cfg.MODEL.PIX2SEQ.X`` or ``p.X`` (``p`` an alias of a node) -> "MODEL.PIX2SEQ.X"; else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    base = "" if node.id == "cfg" else aliases.get(node.id)
    if base is None:
        return None
    return ".".join(([base] if base else []) + parts[::-1])


def _is_node(value: ast.expr) -> bool:
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in ("CN", "CfgNode")


def source_comments(source: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """The comments of ``defaults.py`` (or ``source``): (key -> comment, node -> comment), in source order.

    Assignments ``cfg.A.B = value`` and ``p.B = value`` (with ``p = cfg.A`` earlier in the same function)
    are read; ``X = CN()`` is a node, anything else a key."""
    source = inspect.getsource(defaults) if source is None else source
    comments, code = _comment_lines(source)
    keys: dict[str, str] = {}
    nodes: dict[str, str] = {}
    for func in ast.walk(ast.parse(source)):
        if not isinstance(func, ast.FunctionDef):
            continue
        aliases: dict[str, str] = {}
        for stmt in func.body:
            if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1):
                continue
            target = stmt.targets[0]
            if isinstance(target, ast.Name):
                path = _dotted(stmt.value, aliases)
                if path:
                    aliases[target.id] = path
                continue
            key = _dotted(target, aliases)
            if key is not None:
                (nodes if _is_node(stmt.value) else keys)[key] = _comment_of(stmt, comments, code)
    return keys, nodes


# ---- the keys ------------------------------------------------------------------------------------
def added_keys() -> dict[str, Any]:
    """Every key ``add_pix2seq_config`` adds to (or changes in) detectron2's config -> its default."""
    base = config_items(get_cfg(), nodes=False)
    cfg = get_cfg()
    defaults.add_pix2seq_config(cfg)
    added = config_items(cfg, nodes=False)
    return {key: value for key, value in added.items() if key not in base or base[key] != value}


def _rules_by_key() -> dict[str, tuple[dict[str, str], ...]]:
    out: dict[str, list[dict[str, str]]] = {}
    for row in rule_table():
        out.setdefault(row["key"], []).append(row)
    return {key: tuple(rows) for key, rows in out.items()}


def documented_keys() -> list[KeyDoc]:
    """Every key ``add_pix2seq_config`` adds, in ``defaults.py``'s order, with default, comment and rules.

    Raises :class:`UndocumentedKeyError` naming the keys that have neither a comment nor a rule."""
    comments, _ = source_comments()
    rules = _rules_by_key()
    added = added_keys()
    order = {key: i for i, key in enumerate(comments)}
    docs = [
        KeyDoc(key, added[key], comments.get(key, ""), rules.get(key, ()))
        for key in sorted(added, key=lambda k: (order.get(k, len(order)), k))
    ]
    missing = [d.key for d in docs if not d.meaning]
    if missing:
        raise UndocumentedKeyError(
            f"config keys without documentation: {', '.join(missing)}. Add a comment above or beside each in "
            "pix2seq_d2/config/defaults.py (or a rule in pix2seq_d2/config/rules.py), then run " + GENERATOR
        )
    return docs


# ---- markdown ------------------------------------------------------------------------------------
_ABSENT = object()  # a rule's key that this detectron2's config does not have


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _value(value: Any) -> str:
    if value is _ABSENT:
        return "—"
    return f'`"{value}"`' if isinstance(value, str) else f"`{value!r}`"


def _allowed(rules: Iterable[dict[str, str]]) -> str:
    return "; ".join(r["allowed"] for r in rules) or "—"


def _checked(rules: Iterable[dict[str, str]]) -> str:
    return "; ".join(r["scope"] + (f", if {r['when']}" if r["when"] else "") for r in rules) or "—"


def _group(node: str) -> str:
    """The section a node belongs to: ``MODEL.X`` for model nodes, else the top-level node."""
    parts = node.split(".")
    return ".".join(parts[:2]) if parts[0] == "MODEL" else parts[0]


_INTRO = """\
# Configuration reference

<!-- Generated by `{generator}` from pix2seq_d2/config/defaults.py (keys, defaults, comments) and
pix2seq_d2/config/rules.py (allowed values, when checked). Do not edit by hand: edit those files and run the
generator; tests/docs/test_configuration_reference.py fails while this file is out of date. -->

Every key pix2seq_d2 adds to detectron2's config, with its default and what it means, and the detectron2
keys its start-up checks cover. Everything else is standard detectron2 (`INPUT.*`, `DATASETS.*`, `SOLVER.*`,
`TEST.*`, ...). Set keys in a yaml config or on the command line (`KEY VALUE` pairs after the other arguments
of `tools/train_net.py`, after `--opts` for `tools/demo.py`). A key that does not exist is an error naming its
file and the closest existing keys. The LazyConfigs of `configs/lazy/` set the same things as constructor
arguments instead (see [training](training.md#lazyconfig-python-configs)).

Every setting is checked before anything is built, whenever a config is prepared: training, `--eval-only`,
the predictor and the demo, export and the other tools (`pix2seq_d2/config/prepare.py`). The rule table
(`pix2seq_d2/config/rules.py`, {num_rules} rules) gives the columns below; cross-key checks
(`pix2seq_d2/config/checks.py`), the datasets and the schedule come after it. All problems are reported
together in one error, each with its key, value and allowed range (see [reliability](reliability.md)).

- **Allowed**: what the rule table accepts. "—": the key has no rule in the table; the cross-key checks or the
  code that reads the key check it.
- **Checked**: "always" (training and everything else) or "training" (only when training); "if ...": only
  when that holds; "warning": logged, and the run goes on.
"""


def reference_markdown() -> str:
    """The whole of ``docs/configuration.md``."""
    docs = documented_keys()
    _, node_comments = source_comments()
    parents: dict[str, list[KeyDoc]] = {}
    for doc in docs:
        parents.setdefault(doc.key.rsplit(".", 1)[0], []).append(doc)
    first = {node: i for i, node in enumerate(parents)}
    group_first: dict[str, int] = {}
    top_first: dict[str, int] = {}
    for node in parents:  # MODEL.* first, then INPUT, ...; each group's own node before its children
        group_first.setdefault(_group(node), first[node])
        top_first.setdefault(node.split(".")[0], first[node])
    ordered = sorted(
        parents, key=lambda n: (top_first[n.split(".")[0]], group_first[_group(n)], n != _group(n), first[n])
    )

    out = [_INTRO.format(generator=GENERATOR, num_rules=len(RULES))]
    for node in ordered:
        level = "##" if node == _group(node) or _group(node) not in parents else "###"
        out.append(f"{level} {node}\n")
        if node_comments.get(node):
            out.append(node_comments[node] + "\n")
        out.append("| key | default | allowed | checked | meaning |\n|---|---|---|---|---|")
        for doc in parents[node]:
            cells = (f"`{doc.key}`", _value(doc.default), _allowed(doc.rules), _checked(doc.rules), doc.meaning)
            out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        out.append("")

    added = {doc.key for doc in docs}
    d2_defaults = config_items(get_cfg(), nodes=False)
    others: dict[str, list[dict[str, str]]] = {}
    for row in rule_table():
        if row["key"] not in added:
            others.setdefault(row["key"], []).append(row)
    out.append("## detectron2 keys the start-up checks cover\n")
    out.append("Their defaults are detectron2's (\"—\": not in this detectron2's config).\n")
    out.append("| key | default | allowed | checked | why |\n|---|---|---|---|---|")
    for key, rows in others.items():
        cells = (f"`{key}`", _value(d2_defaults.get(key, _ABSENT)), _allowed(rows), _checked(rows),
                 "; ".join(r["why"] for r in rows))  # fmt: skip
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(out) + "\n"
