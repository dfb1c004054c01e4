"""The quickstart as a LazyConfig (configs/quickstart/pix2seq_shapes.yaml): a small Pix2Seq trained from
scratch on the CPU on the embedded synthetic ``shapes_train`` dataset (96 px images, 3 classes, 1-4
objects each) and evaluated with COCO AP/AR and the sequence likelihood on ``shapes_val``.

    python tools/lazyconfig_train_net.py --config-file configs/lazy/pix2seq_shapes.py
    python tools/lazyconfig_train_net.py --config-file configs/lazy/pix2seq_shapes.py train.max_iter=100

It builds the same model as the yaml config (parameter for parameter) and trains it the same way.
"""

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import ResNet

from pix2seq_d2.modeling.backbone.small_resnet import ConvStem, small_resnet_stages

from .common.data.shapes import dataloader  # noqa: F401 (an entry of this config)
from .common.models.pix2seq import model
from .common.optim import AdamW as optimizer
from .common.schedule import lr_multiplier
from .common.train import train

# ---- model: a narrow ResNet and a small transformer, one coordinate bin per pixel ----
# The small ResNet (MODEL.SMALL_RESNET): a 3x3 stride-2 stem, then BasicBlock stages res2..res5.
model.backbone = L(ResNet)(
    stem=L(ConvStem)(in_channels=3, out_channels=16, norm="BN"),
    stages=L(small_resnet_stages)(
        in_channels="${..stem.out_channels}", widths=[16, 32, 64, 128], depths=[1, 1, 1, 1], norm="BN"
    ),
    out_features=["res4"],
    freeze_at=0,
)
model.in_feature = "res4"  # stride 8: a 12x12 grid for 96 px images
model.pixel_mean = [127.5, 127.5, 127.5]
model.pixel_std = [64.0, 64.0, 64.0]
model.encoder.num_layers = 2
model.encoder.dim = 128
model.encoder.num_heads = 4
model.encoder.ffn_dim = 256
model.encoder.dropout = 0.0  # the decoder follows the encoder's width, heads, FFN and dropout
model.decoder.num_layers = 2
model.task.max_objects = 10
model.task.tokenizer.num_classes = 3
model.task.tokenizer.num_bins = 96  # one bin per pixel

# ---- data: see common/data/shapes.py ----

# ---- optimisation: AdamW at 1e-3, 100 iterations of warmup, then linear decay over 3000 iterations ----
optimizer.lr = 0.001
lr_multiplier.warmup_length.warmup_iters = 100

# ---- training ----
train.max_iter = 3000
train.checkpointer.period = 1000000  # only the final checkpoint
train.eval_period = 0  # evaluate once, after the last iteration
train.device = "cpu"
train.seed = 0
train.output_dir = "output/quickstart_lazy"
