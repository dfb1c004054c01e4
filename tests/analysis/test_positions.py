"""Per-position counts of new and repeated finds (pix2seq_d2/analysis/positions.py)."""

from __future__ import annotations

import pytest
import torch

from pix2seq_d2.analysis.positions import PositionStats, new_and_repeated

GT = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]])


def test_first_match_is_new_later_matches_of_the_same_box_are_repeats():
    preds = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # gt 0: new
            [1.0, 1.0, 10.0, 10.0],  # gt 0 again (IoU 0.81): repeat
            [50.0, 50.0, 60.0, 60.0],  # nothing
            [20.0, 20.0, 38.0, 40.0],  # gt 1 (IoU 0.9): new
            [20.0, 20.0, 40.0, 65.0],  # gt 1 again but IoU 400 / 900 = 0.44 < 0.5: nothing
        ]
    )
    assert new_and_repeated(preds, GT).tolist() == [1, 2, 0, 1, 0]
    assert new_and_repeated(preds, GT, iou_thresh=0.4).tolist() == [1, 2, 0, 1, 2]


def test_no_predictions_or_no_ground_truth():
    assert new_and_repeated(torch.zeros(0, 4), GT).tolist() == []
    assert new_and_repeated(GT, torch.zeros(0, 4)).tolist() == [0, 0]


def test_stats_are_fractions_of_images_and_skip_positions_without_an_object():
    stats = PositionStats(num_positions=3)
    # image 1: finds gt 0, then an invalid position that would have matched gt 1, then gt 1
    stats.add(
        torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0], [20.0, 20.0, 40.0, 40.0]]),
        GT,
        valid=torch.tensor([True, False, True]),
    )
    # image 2: two objects, the second a repeat
    stats.add(torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]]), GT)
    rows = stats.rows()
    assert [r["emitted"] for r in rows] == [1.0, 0.5, 0.5]
    assert [r["new"] for r in rows] == [1.0, 0.0, 0.5]  # the invalid box did not use up gt 1
    assert [r["repeated"] for r in rows] == [0.0, 0.5, 0.0]


def test_more_predictions_than_tracked_positions_is_an_error():
    with pytest.raises(ValueError, match="3 predictions but only 2 positions"):
        PositionStats(num_positions=2).add(torch.zeros(3, 4), GT)
