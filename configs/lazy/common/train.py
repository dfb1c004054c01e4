"""Training settings read by tools/lazyconfig_train_net.py (detectron2's ``configs/common/train.py`` plus
Pix2Seq's extras: the weight EMA, the AMP precision and the seed that makes resumes exact)."""

train = dict(
    output_dir="./output",
    # Weights loaded before training (a detectron2 model-zoo ".pkl" or one of our ".pth" checkpoints);
    # also what --eval-only evaluates. "": train from scratch.
    init_checkpoint="",
    max_iter=90000,
    # Mixed precision (SOLVER.AMP): "auto" is float16 with gradient scaling on a GPU and bfloat16
    # (no scaling) on the CPU; "float16" / "bfloat16" force one (see pix2seq_d2/engine/amp.py).
    amp=dict(enabled=False, precision="auto"),
    # DistributedDataParallel options, for several workers (detectron2's create_ddp_model).
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    # detectron2's PeriodicCheckpointer; max_to_keep None keeps every checkpoint (as the yaml path).
    checkpointer=dict(period=5000, max_to_keep=None),
    # Evaluate every eval_period iterations (0: only after the last one) with dataloader.test/evaluator.
    eval_period=0,
    log_period=20,  # metrics printed and written to metrics.json every this many iterations
    device="cuda",
    # Seeds the initial weights (plus the worker's rank), the training data stream and every step's
    # dropout; < 0: drawn at random (the data stream's seed is still saved in checkpoints).
    seed=-1,
    # An exponential moving average of the weights (MODEL.EMA), updated every step, saved in
    # checkpoints as "ema" and evaluated instead of the raw weights (see pix2seq_d2/modeling/ema.py).
    ema=dict(enabled=False, decay=0.9999),
    cudnn_benchmark=False,
)
