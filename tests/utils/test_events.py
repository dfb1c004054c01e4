"""current_training_iteration: the open EventStorage's iteration, None outside a trainer."""

from __future__ import annotations

from detectron2.utils.events import EventStorage

from pix2seq_d2.utils.events import current_training_iteration


def test_the_iteration_of_the_open_event_storage():
    assert current_training_iteration() is None
    with EventStorage(start_iter=12) as storage:
        assert current_training_iteration() == 12
        storage.iter = 13
        assert current_training_iteration() == 13
    assert current_training_iteration() is None
