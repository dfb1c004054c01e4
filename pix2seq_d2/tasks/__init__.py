"""The sequence/task layer: every vision task written as a token sequence in one shared vocabulary.

* :mod:`.vocabulary`: the vocabulary layouts (where specials, task prompts, classes and coordinates lie);
* :mod:`.tokenizer`: :class:`Pix2SeqTokenizer`, the shared token space and coordinate quantiser, and
  :class:`TokenSequences`, a training example's input/target/weight;
* :mod:`.base`: the :class:`Task` seam and ``TASK_REGISTRY`` (``MODEL.PIX2SEQ.TASKS``); docs/tasks.md says
  how a new task is added;
* :mod:`.decoding_options`: a task's :class:`DecodingOptions` and the token-selection rules' registry;
* :mod:`.detection`: :class:`DetectionTask`, with its training sequences (:mod:`.training_sequences`) and
  sequence augmentation (:mod:`.sequence_augmentation`).
"""

from pix2seq_d2.tasks.tokenizer import Pix2SeqTokenizer, TokenSequences, box_scale

from .base import TASK_REGISTRY, ResponseRecorder, Task, build_task
from .decoding_options import TOKEN_SELECTOR_REGISTRY, DecodingOptions
from .detection import DecodedObjects, DetectionTask
from .sequence_augmentation import SequenceAugmentation
from .training_sequences import ObjectBatch, SequenceDraws, TrainingSequenceBuilder
from .vocabulary import VOCABULARY_LAYOUT_REGISTRY, VocabularyLayout

__all__ = [
    "TASK_REGISTRY",
    "TOKEN_SELECTOR_REGISTRY",
    "VOCABULARY_LAYOUT_REGISTRY",
    "DecodedObjects",
    "DecodingOptions",
    "DetectionTask",
    "ObjectBatch",
    "Pix2SeqTokenizer",
    "ResponseRecorder",
    "SequenceAugmentation",
    "SequenceDraws",
    "Task",
    "TokenSequences",
    "TrainingSequenceBuilder",
    "VocabularyLayout",
    "box_scale",
    "build_task",
]
