"""AdamW as Pix2Seq trains with it (SOLVER.OPTIMIZER "ADAMW" in configs/Base-Pix2Seq.yaml).

No weight decay on norms, biases and embeddings (every 1-D parameter and every ``nn.Embedding``),
and gradients clipped to a global norm of 1.0 over the whole model before every step.
tools/lazyconfig_train_net.py sets ``optimizer.params.model`` to the model before instantiating it.
"""

from detectron2.config import LazyCall as L

from pix2seq_d2.solver.build import build_adamw, optimizer_param_groups

AdamW = L(build_adamw)(
    # Two parameter groups: with weight_decay, and without (norms, biases, embeddings).
    params=L(optimizer_param_groups)(weight_decay=0.05),
    lr=0.001,
    betas=(0.9, 0.999),
    # SOLVER.CLIP_GRADIENTS: "full_model" clips the global norm over all parameters; detectron2's
    # per-parameter "value" / "norm" (with norm_type) are also accepted.
    clip_gradients=dict(enabled=True, clip_type="full_model", clip_value=1.0, norm_type=2.0),
)
