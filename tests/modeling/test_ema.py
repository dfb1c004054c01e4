"""The exponential moving average of the weights: its update rule, and that it is checkpointed and evaluated."""

from __future__ import annotations

import torch
from torch import nn

from pix2seq_d2 import Pix2SeqTrainer
from pix2seq_d2.modeling.ema import ModelEMA, unwrap_model, use_ema_weights
from tests.helpers import tiny_cfg


def test_update_follows_the_warmed_up_decay():
    model = nn.Linear(3, 2)
    ema = ModelEMA(model, decay=0.99)
    w0 = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # first update: decay min(0.99, 1/10)
    torch.testing.assert_close(ema.shadow["weight"], 0.1 * w0 + 0.9 * (w0 + 1.0))
    for _ in range(1000):
        ema.update(model)
    assert ema.current_decay() == 0.99  # warm-up over: the configured decay
    torch.testing.assert_close(ema.shadow["weight"], w0 + 1.0)  # converged to constant weights


def test_swapped_into_evaluates_the_average_and_restores_the_raw_weights():
    model = nn.Linear(3, 2)
    ema = ModelEMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.mul_(3.0)
    raw = model.weight.detach().clone()
    with ema.swapped_into(model):
        torch.testing.assert_close(model.weight, ema.shadow["weight"])
        assert not torch.equal(model.weight, raw)
    assert torch.equal(model.weight, raw)


class RecordingTrainer(Pix2SeqTrainer):
    """Records the weights every evaluation sees."""

    evaluated: list[dict] = []

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        cls.evaluated.append({k: v.detach().clone() for k, v in unwrap_model(model).state_dict().items()})
        return {}


def test_training_evaluates_and_checkpoints_the_average(two_images, tmp_path):
    name, _ = two_images
    cfg = tiny_cfg(
        "DATASETS.TRAIN", (name,), "DATASETS.TEST", (name,), "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 4,
        "SOLVER.BASE_LR", 1e-2, "MODEL.EMA.ENABLED", True, "MODEL.EMA.DECAY", 0.9,
        "OUTPUT_DIR", str(tmp_path / "out"),
    )  # fmt: skip
    RecordingTrainer.evaluated = []
    trainer = RecordingTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()

    assert len(RecordingTrainer.evaluated) == 1  # the final evaluation
    seen = RecordingTrainer.evaluated[0]
    checkpoint = torch.load(tmp_path / "out" / "model_final.pth", weights_only=False)
    assert checkpoint["ema"]["updates"] == 4
    raw_now = unwrap_model(trainer.model).state_dict()
    for key, value in checkpoint["ema"]["shadow"].items():
        torch.testing.assert_close(seen[key], value.to(seen[key].dtype))  # evaluated = the average
        assert torch.equal(raw_now[key], checkpoint["model"][key])  # raw weights restored afterwards
    weight = "decoder.layers.0.ffn.linear1.weight"
    assert not torch.allclose(seen[weight], raw_now[weight])  # the average is not the raw weights

    # --eval-only's path: the "ema" entry left over by the checkpointer is loaded into a fresh model.
    fresh = Pix2SeqTrainer.build_model(cfg)
    assert use_ema_weights(fresh, {"ema": checkpoint["ema"]})
    torch.testing.assert_close(fresh.state_dict()[weight], seen[weight])

    # Resuming restores the average and its update count.
    resumed = Pix2SeqTrainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.ema.updates == 4
    torch.testing.assert_close(resumed.ema.shadow[weight], checkpoint["ema"]["shadow"][weight])
