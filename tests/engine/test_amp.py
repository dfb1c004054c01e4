"""Mixed-precision training steps: float16 with gradient scaling and bfloat16, both runnable on the CPU."""

from __future__ import annotations

import math

import pytest
import torch

from pix2seq_d2 import Pix2SeqTrainer
from pix2seq_d2.engine.amp import MixedPrecisionTrainer
from pix2seq_d2.modeling.ema import unwrap_model
from pix2seq_d2.solver.precision import amp_dtype
from tests.helpers import tiny_cfg


def test_precision_names():
    assert amp_dtype("auto", "cuda") == torch.float16
    assert amp_dtype("auto", "cpu") == torch.bfloat16
    assert amp_dtype("float16", "cpu") == torch.float16
    with pytest.raises(ValueError, match="SOLVER.AMP.PRECISION"):
        amp_dtype("fp8", "cpu")


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_amp_training_steps_run_in_low_precision_and_give_finite_losses(two_images, tmp_path, precision):
    name, _ = two_images
    cfg = tiny_cfg(
        "DATASETS.TRAIN", (name,), "DATASETS.TEST", (name,), "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 3,
        "SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", precision, "MODEL.PIX2SEQ.MAX_OBJECTS_TEST", 2,
        "OUTPUT_DIR", str(tmp_path / "out"),
    )  # fmt: skip
    trainer = Pix2SeqTrainer(cfg)
    assert isinstance(trainer._trainer, MixedPrecisionTrainer)
    model = unwrap_model(trainer.model)
    seen_dtypes = set()
    handle = model.decoder.layers[0].ffn.linear1.register_forward_hook(
        lambda module, args, out: seen_dtypes.add(out.dtype) if module.training else None
    )
    before = model.decoder.token_embed.weight.detach().clone()
    trainer.train()
    handle.remove()

    assert seen_dtypes == {getattr(torch, precision)}  # autocast was on in every training step
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert not torch.equal(before, model.decoder.token_embed.weight)  # the optimizer stepped
    assert model.decoder.token_embed.weight.dtype == torch.float32  # master weights stay float32
    scaler = trainer._trainer.grad_scaler
    assert scaler.is_enabled() == (precision == "float16")  # bfloat16 needs no loss scaling
    if precision == "float16":
        assert "grad_scale" in trainer.storage.histories()
        saved = torch.load(tmp_path / "out" / "model_final.pth", weights_only=False)["trainer"]["_trainer"]
        assert saved["grad_scaler"]["scale"] == scaler.get_scale()  # the scaler is checkpointed
