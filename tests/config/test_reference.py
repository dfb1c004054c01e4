"""The configuration reference's generator: comments read from defaults.py, every key documented, the rule
table's conditions in words."""

from __future__ import annotations

import pytest

from pix2seq_d2.config import reference
from pix2seq_d2.config.reference import UndocumentedKeyError, added_keys, documented_keys, source_comments
from pix2seq_d2.config.rules import rule_table

SOURCE = """
def add(cfg):
    cfg.MODEL.X = CN()
    p = cfg.MODEL.X
    # ---- a section divider ----
    # What A is,
    # on two lines.
    p.A = 1
    p.B = 2  # what B is

    p.C = 3
    # The node Y.
    p.Y = CN()
    d = p.Y
    d.D = "x"  # what D is
    cfg.SOLVER.E = 0.5  # noqa: E501
"""


def test_source_comments_reads_blocks_inline_comments_aliases_and_nodes():
    keys, nodes = source_comments(SOURCE)
    assert keys == {
        "MODEL.X.A": "What A is, on two lines.",
        "MODEL.X.B": "what B is",
        "MODEL.X.C": "",
        "MODEL.X.Y.D": "what D is",
        "SOLVER.E": "",
    }
    assert nodes == {"MODEL.X": "", "MODEL.X.Y": "The node Y."}


def test_every_key_added_by_add_pix2seq_config_is_documented_in_source_order():
    docs = documented_keys()
    assert {d.key for d in docs} == set(added_keys())
    assert all(d.meaning for d in docs)
    assert docs[0].key == "MODEL.PIX2SEQ.TASKS"  # the first key add_pix2seq_config sets
    num_classes = next(d for d in docs if d.key == "MODEL.PIX2SEQ.NUM_CLASSES")
    assert "len(thing_classes)" in num_classes.comment


def test_a_key_without_comment_or_rule_is_an_error(monkeypatch):
    keys, nodes = source_comments()
    keys = dict(keys, **{"MODEL.SMALL_RESNET.NORM": ""})
    monkeypatch.setattr(reference, "source_comments", lambda source=None: (keys, nodes))
    with pytest.raises(UndocumentedKeyError, match=r"MODEL\.SMALL_RESNET\.NORM.*generate_config_reference"):
        documented_keys()


def test_rule_table_says_when_a_conditional_rule_applies():
    rows = {row["key"]: row for row in rule_table()}
    assert rows["MODEL.PIX2SEQ.SEQ_AUG.JITTER"]["when"] == "MODEL.PIX2SEQ.SEQ_AUG.ENABLED is True"
    assert rows["MODEL.PIX2SEQ.NUM_BINS"]["when"] == ""
    norm = rows["SOLVER.CLIP_GRADIENTS.NORM_TYPE"]["when"]
    assert norm == "SOLVER.CLIP_GRADIENTS.ENABLED is True and SOLVER.CLIP_GRADIENTS.CLIP_TYPE is 'norm'"
