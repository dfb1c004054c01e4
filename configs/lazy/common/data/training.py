"""The training half of a Pix2Seq LazyConfig's ``dataloader``: the resumable train loader (exact
resume: data order and augmentation continue where a run stopped) with the Pix2Seq training mapper,
as ``Pix2SeqTrainer.build_train_loader`` builds it from a yaml config. The mapper takes the model's
task (``${model.task}``), which makes the training sequences."""

from detectron2.config import LazyCall as L

from pix2seq_d2.data.dataset_mapper import Pix2SeqDatasetMapper
from pix2seq_d2.data.resumable_loader import resumable_train_loader


def train_loader(names: str, augmentations: list, total_batch_size: int, num_workers: int):
    """``dataloader.train``: dataset ``names`` through ``augmentations``, ``total_batch_size`` images per
    step over all workers (SOLVER.IMS_PER_BATCH), ``num_workers`` loader processes per worker."""
    return L(resumable_train_loader)(
        names=names,
        mapper=L(Pix2SeqDatasetMapper)(
            is_train=True,
            augmentations=augmentations,
            image_format="BGR",
            task="${model.task}",  # its object order, MAX_OBJECTS and sequence augmentation
            num_views=1,
        ),
        total_batch_size=total_batch_size,
        seed="${train.seed}",
        num_workers=num_workers,
        aspect_ratio_grouping=True,
        filter_empty=True,
        sampler="TrainingSampler",
        num_classes="${model.task.tokenizer.num_classes}",  # annotations are checked against it first
    )
