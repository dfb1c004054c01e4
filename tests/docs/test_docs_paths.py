"""Every file the README and the guides in docs/ point to exists: relative markdown links, and the paths of the
package, the tools, the configs and the tests they name. A module that moves, or a guide that is renamed,
fails here instead of leaving the docs pointing at nothing."""

from __future__ import annotations

import glob
import itertools
import os
import re

from tests.helpers import REPO_ROOT

# Paths the docs name that are not in the repository on purpose: the file the reader writes.
NOT_IN_REPO = {"configs/mydata.yaml"}
LINK = re.compile(r"\]\(([^)\s]+)\)")
# A repository path: starts a word (not inside another path such as .venv/share/detectron2/tools/).
REPO_PATH = re.compile(r"(?<![\w./$-])((?:pix2seq_d2|tools|configs|tests)/[\w./{},*-]*[\w*}/])")


def markdown_files() -> list[str]:
    docs = sorted(glob.glob(os.path.join(REPO_ROOT, "docs", "**", "*.md"), recursive=True))
    return [os.path.join(REPO_ROOT, "README.md"), *docs]


def expand_braces(path: str) -> list[str]:
    """``a_{x,y}.yaml`` -> ``a_x.yaml``, ``a_y.yaml`` (every group, in combination)."""
    parts = re.split(r"\{([^{}]*)\}", path)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def anchors(md_path: str) -> set[str]:
    """GitHub's anchors of a markdown file's headings: lower case, punctuation dropped, spaces -> "-",
    repeats numbered; fenced code blocks skipped."""
    out: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in open(md_path, encoding="utf-8"):
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not re.match(r"^#{1,6} ", line):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def exists(path: str) -> bool:
    full = os.path.join(REPO_ROOT, path)
    return bool(glob.glob(full)) if "*" in path else os.path.exists(full)


def test_expand_braces():
    assert expand_braces("c/p_{a,b}_{1,2}.yaml") == ["c/p_a_1.yaml", "c/p_a_2.yaml", "c/p_b_1.yaml", "c/p_b_2.yaml"]
    assert expand_braces("tools/x.py") == ["tools/x.py"]


def test_anchors_follow_github(tmp_path):
    md = tmp_path / "a.md"
    md.write_text("# Python API: `Pix2SeqPredictor`\n## MODEL.PIX2SEQ.DECODE\n```\n# not a heading\n```\n## X\n## X\n")
    assert anchors(str(md)) == {"python-api-pix2seqpredictor", "modelpix2seqdecode", "x", "x-1"}


def test_repo_path_pattern_skips_paths_inside_other_paths():
    text = "see `tools/demo.py`, .venv/share/detectron2/tools/ and PATH/TO/detectron2/tools/deploy/x.py"
    assert REPO_PATH.findall(text) == ["tools/demo.py"]


def test_every_link_and_named_path_in_the_docs_exists():
    missing = []
    for md in markdown_files():
        text = open(md, encoding="utf-8").read()
        here = os.path.relpath(md, REPO_ROOT)
        for target in LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # a URL
            file, _, anchor = target.partition("#")
            resolved = os.path.normpath(os.path.join(os.path.dirname(md), file)) if file else md
            if not os.path.exists(resolved):
                missing.append(f"{here}: link {target}")
            elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
                missing.append(f"{here}: link {target} (no such heading)")
        for path in REPO_PATH.findall(text):
            for one in expand_braces(path.rstrip(".")):
                if one not in NOT_IN_REPO and not exists(one):
                    missing.append(f"{here}: {one}")
    assert not missing, "the docs point to files that do not exist:\n" + "\n".join(missing)
