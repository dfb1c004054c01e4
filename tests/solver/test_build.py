"""AdamW parameter groups, global-norm clipping and the warmup + linear decay schedule."""

from __future__ import annotations

import pytest
import torch
from detectron2.modeling import build_model

from pix2seq_d2.solver.build import build_lr_scheduler, build_optimizer, optimizer_param_groups
from tests.helpers import tiny_cfg


def test_no_weight_decay_on_norms_biases_and_embeddings():
    model = build_model(tiny_cfg())
    decay, no_decay = optimizer_param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert id(model.decoder.token_embed.weight) in no_decay_ids
    assert id(model.decoder.pos_embed.weight) in no_decay_ids
    assert id(model.decoder.norm.weight) in no_decay_ids and id(model.decoder.norm.bias) in no_decay_ids
    assert id(model.backbone.stem.conv1.norm.weight) in no_decay_ids
    assert id(model.encoder.layers[0].ffn.linear1.weight) in {id(p) for p in decay["params"]}
    n_params = sum(1 for p in model.parameters() if p.requires_grad)
    assert len(decay["params"]) + len(no_decay["params"]) == n_params


def test_full_model_clipping_bounds_the_global_gradient_norm():
    cfg = tiny_cfg(
        "SOLVER.CLIP_GRADIENTS.ENABLED",
        True,
        "SOLVER.CLIP_GRADIENTS.CLIP_TYPE",
        "full_model",
        "SOLVER.CLIP_GRADIENTS.CLIP_VALUE",
        0.5,
        "SOLVER.BASE_LR",
        0.0,
        "SOLVER.WEIGHT_DECAY",
        0.0,
    )
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))]
    model = torch.nn.Module()
    model.a, model.b = params
    optimizer = build_optimizer(cfg, model)
    params[0].grad = torch.full((3,), 10.0)
    params[1].grad = torch.full((4,), -10.0)
    optimizer.step()
    total = torch.cat([p.grad for p in params]).norm()
    assert total.item() == pytest.approx(0.5, rel=1e-4)


def test_warmup_then_linear_decay_to_the_end_factor():
    cfg = tiny_cfg(
        "SOLVER.BASE_LR",
        1.0,
        "SOLVER.MAX_ITER",
        100,
        "SOLVER.WARMUP_ITERS",
        10,
        "SOLVER.WARMUP_FACTOR",
        0.001,
        "SOLVER.END_LR_FACTOR",
        0.01,
    )
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.001, rel=1e-3)
    assert lrs[5] < lrs[9] < 1.0
    assert lrs[10] == pytest.approx(1 - 0.99 * 0.10, rel=1e-3)  # on the linear ramp from 1 to 0.01
    assert lrs[99] == pytest.approx(1 - 0.99 * 0.99, rel=1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_other_optimizers_are_rejected_clearly():
    with pytest.raises(ValueError, match="AdamW"):
        build_optimizer(tiny_cfg("SOLVER.OPTIMIZER", "SGD"), torch.nn.Linear(2, 2))
