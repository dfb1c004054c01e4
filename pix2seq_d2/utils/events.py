"""The state of the running detectron2 trainer, as other code may ask it."""

from __future__ import annotations

from detectron2.utils.events import get_event_storage

__all__ = ["current_training_iteration"]


def current_training_iteration() -> int | None:
    """The iteration of the running detectron2 trainer (its open ``EventStorage``), None outside one."""
    try:
        return get_event_storage().iter
    except (AssertionError, IndexError):  # detectron2 asserts that an EventStorage is open; none is
        return None
