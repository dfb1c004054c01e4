"""Data: reading images (:mod:`.image_io`) and checking annotations (:mod:`.annotation_checks`), the
training augmentations (:mod:`.transforms`), the dataset mapper that turns a dataset dict into the
model's inputs (:mod:`.dataset_mapper`), the exact-resume training loader (:mod:`.resumable_loader`)
and the datasets (:mod:`.datasets`)."""

from .dataset_mapper import Pix2SeqDatasetMapper, expand_views
from .image_io import IMAGE_FORMATS, BadInputError, read_image_checked, read_image_file
from .resumable_loader import ResumableTrainLoader, build_resumable_train_loader, resumable_train_loader
from .transforms import build_pix2seq_augmentation, build_test_resize

__all__ = [
    "IMAGE_FORMATS",
    "BadInputError",
    "Pix2SeqDatasetMapper",
    "ResumableTrainLoader",
    "build_pix2seq_augmentation",
    "build_resumable_train_loader",
    "build_test_resize",
    "expand_views",
    "read_image_checked",
    "read_image_file",
    "resumable_train_loader",
]
