"""Pix2Seq R-50 at 640 px as a LazyConfig (configs/pix2seq_R50.yaml): the paper's model with 1000
coordinate bins (the official fine-tuned R-50 640 px checkpoint has 39.1 COCO val AP).

ImageNet R-50 from the detectron2 model zoo, d=256 / 8 heads / 6+6 layers / FFN 1024 (from
common/models/pix2seq.py), drop path 0.1, large-scale jitter 0.3-2.0 + flip + colour distortion
(common/data/coco.py), sequence augmentation, AdamW lr 3e-3 / weight decay 0.05, batch 128 for 300
epochs of COCO train2017, and at test nucleus sampling (top-p 0.4) of 100 objects ranked by class
probability.

    python tools/lazyconfig_train_net.py --config-file configs/lazy/pix2seq_R50.py --num-gpus 8

Unlike the yaml path (SOLVER.REFERENCE_WORLD_SIZE), nothing is rescaled for another number of GPUs:
``dataloader.train.total_batch_size`` is the batch over all of them, whatever their number.
"""

from detectron2.config import LazyCall as L

from pix2seq_d2.tasks.sequence_augmentation import SequenceAugmentation

from .common.data.coco import dataloader
from .common.models.pix2seq import model
from .common.optim import AdamW as optimizer
from .common.schedule import lr_multiplier
from .common.train import train

# ---- model ----
model.encoder.drop_path = 0.1  # the decoder follows the encoder
model.task.tokenizer.num_classes = 80
model.task.tokenizer.num_bins = 1000
model.task.tokenizer.eos_weight = 0.1  # the official release weighs EOS 0.1 with sequence augmentation
# Sequence-augmented models decode a fixed number of objects (100), ranked by class probability.
model.task.decoding.strategy = "sample"
model.task.decoding.top_p = 0.4
model.task.decoding.seed = 0  # reproducible evaluation
model.task.decoding.stop_at_eos = False
model.task.score_mode = "class"

# ---- data: sequence augmentation (noise objects fill every sequence up to max_objects, input classes
# corrupted with "rand_n_fake_cls", as in the official release) ----
model.task.sequence_augmentation = L(SequenceAugmentation)(
    max_objects="${..max_objects}",
    noise_class_weight=1.0,
    class_corruption="rand_n_fake_cls",
    jitter=0.2,
    duplicate_jitter=0.05,
)
dataloader.train.total_batch_size = 128
dataloader.train.num_workers = 4

# ---- optimisation: 300 epochs of COCO train2017 (118k images) at batch 128 = 924 iterations per epoch;
# 10 epochs of warmup, then linear decay to 1% ----
optimizer.lr = 0.003
optimizer.params.weight_decay = 0.05
lr_multiplier.warmup_length.warmup_iters = 9240

# ---- training ----
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.max_iter = 277200
train.checkpointer.period = 9240  # every 10 epochs
train.eval_period = 46200  # every 50 epochs
train.device = "cuda"
train.output_dir = "output/pix2seq_R50_lazy"
# float16 mixed precision halves activation memory on GPUs: train.amp.enabled=True.
