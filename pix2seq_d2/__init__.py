"""Pix2Seq (object detection, and every other vision task, as a token sequence) as a Detectron2 extension.

Importing the package registers the ``Pix2Seq`` meta-architecture, the ``build_small_resnet_backbone``,
``build_pix2seq_resnet_backbone`` and ``build_pix2seq_vit_backbone`` backbones, the tasks, and the
embedded ``shapes_*`` datasets (generated on first use under ``$DETECTRON2_DATASETS/pix2seq_shapes``).

The subpackages, lowest first (each imports only those before it; tests/test_package_layout.py checks):
``utils``, ``tasks`` (vocabulary, tasks, training sequences), ``data``, ``modeling``, ``solver``,
``checkpoint``, ``evaluation``, ``config``, ``export``, ``model_zoo``, ``conversion``, ``analysis``,
``engine``. docs/architecture.md draws the data flow.
"""

import warnings

# detectron2's modeling and engine (through fvcore.nn and box_regression) script a few helpers with
# torch.jit.script when they are imported; torch deprecates torch.jit.script with a FutureWarning that
# nobody but detectron2 can act on. Import them here once, silenced, so that every command (and every user
# who imports pix2seq_d2 first) starts with a clean console. tests/test_package_layout.py checks it.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script(_method)?` is deprecated", category=FutureWarning)
    import detectron2.engine  # noqa: F401
    import detectron2.modeling  # noqa: F401

from pix2seq_d2 import model_zoo  # noqa: E402
from pix2seq_d2.config import add_pix2seq_config  # noqa: E402
from pix2seq_d2.data import Pix2SeqDatasetMapper  # noqa: E402
from pix2seq_d2.data.datasets import (  # noqa: E402
    ensure_coco_metadata,
    load_coco_json_checked,
    register_coco_datasets,
    register_coco_json,
    register_shapes_datasets,
)
from pix2seq_d2.engine import Pix2SeqPredictor, Pix2SeqTrainer  # noqa: E402
from pix2seq_d2.modeling import (  # noqa: E402
    Pix2Seq,
    build_pix2seq_resnet_backbone,
    build_pix2seq_vit_backbone,
    build_small_resnet_backbone,
)
from pix2seq_d2.tasks import TASK_REGISTRY, DetectionTask, Pix2SeqTokenizer, Task, build_task  # noqa: E402

register_shapes_datasets()

__all__ = [
    "TASK_REGISTRY",
    "DetectionTask",
    "Task",
    "add_pix2seq_config",
    "build_task",
    "model_zoo",
    "Pix2Seq",
    "Pix2SeqDatasetMapper",
    "Pix2SeqPredictor",
    "Pix2SeqTokenizer",
    "Pix2SeqTrainer",
    "build_pix2seq_resnet_backbone",
    "build_pix2seq_vit_backbone",
    "build_small_resnet_backbone",
    "ensure_coco_metadata",
    "load_coco_json_checked",
    "register_coco_datasets",
    "register_coco_json",
    "register_shapes_datasets",
]
