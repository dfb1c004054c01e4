"""Where Pix2SeqTrainer and MixedPrecisionTrainer write detectron2 code again (no public hook does what they
need; their comments say why), these tests fail when detectron2 changes the code they mirror, so that the
copies are looked at again. (That the evaluation hook evaluates the EMA weights, with EvalHook's public
constructor, is tested by a real training run: tests/modeling/test_ema.py.)"""

from __future__ import annotations

import hashlib
import inspect

from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer

from pix2seq_d2.engine.amp import MixedPrecisionTrainer

# sha256 (first 16 hex digits) of the detectron2 sources the copies mirror (detectron2 main a59f056)
MIRRORED = {
    DefaultTrainer.__init__: "d7a2d86462019047",  # Pix2SeqTrainer.__init__
    AMPTrainer.run_step: "91c3c4daeb6174ab",  # MixedPrecisionTrainer.run_step
}


def test_detectron2_code_our_copies_mirror_is_unchanged():
    changed = [
        f"{fn.__qualname__} ({inspect.getsourcefile(fn)})"
        for fn, digest in MIRRORED.items()
        if hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16] != digest
    ]
    assert not changed, (
        f"detectron2 changed {changed}: compare it with Pix2SeqTrainer.__init__ / MixedPrecisionTrainer.run_step, "
        "which write it again with the changes their comments list, carry its changes over, then update MIRRORED"
    )


def test_the_protected_names_the_copies_use_still_exist():
    assert isinstance(inspect.getattr_static(SimpleTrainer, "_data_loader_iter"), property)
    assert callable(SimpleTrainer._write_metrics) and callable(SimpleTrainer.reset_data_loader)
    # DefaultTrainer.train checks TEST.EXPECTED_RESULTS against what the evaluation function kept here
    assert "_last_eval_results" in inspect.getsource(DefaultTrainer.train)
    assert "_last_eval_results" in inspect.getsource(DefaultTrainer.build_hooks)
    assert issubclass(MixedPrecisionTrainer, AMPTrainer)
