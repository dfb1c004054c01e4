"""A training data loader that resumes exactly where a killed run stopped.

detectron2's train loader restarts its index stream (and its augmentation randomness) when a
run is resumed, so a resumed run sees other images than an uninterrupted one would have.
:class:`ResumableTrainLoader` makes every batch a pure function of ``(seed, iteration)``:

* **Order.** The global index stream is the one of detectron2's samplers
  (``TrainingSampler``, ``RepeatFactorTrainingSampler``, ``RandomSubsetTrainingSampler``)
  built with the run's seed, sharded over ranks like them (rank ``r`` of ``W`` takes
  positions ``r, r+W, ...``) and cut into per-rank batches of ``IMS_PER_BATCH / W``.
  ``start_at(iteration)`` continues at batch ``iteration`` by replaying the stream of
  indices (no image is read while replaying).
* **Aspect-ratio grouping** (``DATALOADER.ASPECT_RATIO_GROUPING``) groups indices by the
  dataset dicts' ``width > height`` before any image is loaded, with the same two buckets as
  detectron2; the replay rebuilds the partly filled buckets, so grouping stays exact.
  (Dicts without ``width``/``height`` all go to the first bucket.)
* **Augmentation.** Each sample is mapped with Python's, numpy's and torch's global RNGs
  seeded from ``(seed, stream position, attempt)`` and restored afterwards, in the main
  process and in ``DataLoader`` workers alike, so random flips, crops and object orders do
  not depend on when the run started, nor on ``NUM_WORKERS``.
* **Bad images.** A sample whose mapper raises
  :class:`~pix2seq_d2.data.image_io.BadInputError` (or returns None) is logged with its file
  and replaced by another index drawn from ``(seed, position)``; training stops with an
  error if no image of the dataset can be read.
* **Workers.** ``DataLoader`` worker ``w`` of ``N`` maps batches ``w, w+N, ...`` and the
  loader returns them in order; its base seed comes from a private generator, so creating
  the iterator does not consume the global torch RNG.

The seed is ``SEED`` when it is >= 0, otherwise drawn once (shared by all ranks) and saved
in checkpoints (:meth:`ResumableTrainLoader.state_dict`), as is the per-iteration seeding of
the global RNGs that the trainer does for dropout (:func:`iteration_seed`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetFromList, build_detection_train_loader
from detectron2.data.samplers import RandomSubsetTrainingSampler, RepeatFactorTrainingSampler, TrainingSampler
from detectron2.utils import comm
from torch.utils.data import DataLoader, IterableDataset, Sampler, get_worker_info

from pix2seq_d2.data.annotation_checks import check_category_ids, explain_dataset_error
from pix2seq_d2.data.datasets import EmptyDatasetError, checked_dataset_dicts
from pix2seq_d2.data.image_io import BadInputError
from pix2seq_d2.utils.seeding import mix_seed, sample_seed, seeded_rngs

__all__ = [
    "ResumableTrainLoader",
    "build_resumable_train_loader",
    "index_batches",
    "load_train_dataset_dicts",
    "resumable_train_loader",
]

logger = logging.getLogger(__name__)

SUPPORTED_SAMPLERS = ("TrainingSampler", "RepeatFactorTrainingSampler", "RandomSubsetTrainingSampler")


def index_batches(
    stream: Iterator[int],
    batch_size: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    group_ids: np.ndarray | None = None,
    start: int = 0,
) -> Iterator[list[tuple[int, int]]]:
    """Rank ``rank``'s batches of ``(stream position, dataset index)`` from the global index
    ``stream``, from batch number ``start`` on; with ``group_ids`` a batch only holds indices
    of one group (filled in stream order, like detectron2's ``AspectRatioGroupedDataset``)."""
    mine = itertools.islice(enumerate(stream), rank, None, world_size)
    if group_ids is None:
        mine = itertools.islice(mine, start * batch_size, None)
        while True:
            yield list(itertools.islice(mine, batch_size))
    buckets: list[list[tuple[int, int]]] = [[] for _ in range(int(group_ids.max(initial=0)) + 1)]
    number = 0
    for position, index in mine:
        bucket = buckets[group_ids[index]]
        bucket.append((position, index))
        if len(bucket) == batch_size:
            if number >= start:
                yield bucket[:]
            number += 1
            bucket.clear()


def _identity(batch):
    return batch


class _ResumableBatches(IterableDataset):
    """Mapped batches ``start, start+1, ...`` of one rank; sharded by batch over DataLoader workers."""

    def __init__(self, loader: ResumableTrainLoader):
        self.dataset = loader.dataset
        self.mapper = loader.mapper
        self.sampler = loader.sampler
        self.seed = loader.seed
        self.batch_size = loader.batch_size
        self.group_ids = loader.group_ids
        self.start = loader.start_iteration
        self.rank, self.world_size = loader.rank, loader.world_size
        self._bad: set[int] = set()

    def __iter__(self) -> Iterator[list[dict]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        batches = index_batches(
            self.sampler._infinite_indices(),  # the sampler's global stream, before its rank sharding
            self.batch_size,
            rank=self.rank,
            world_size=self.world_size,
            group_ids=self.group_ids,
            start=self.start,
        )
        for batch in itertools.islice(batches, worker, None, workers):
            yield [self.map_sample(position, index) for position, index in batch]

    def map_sample(self, position: int, index: int) -> dict:
        """The mapped sample at ``position``; a bad image is replaced by a deterministic other one."""
        replacements = None
        for attempt in itertools.count():
            if index not in self._bad:
                record = self.dataset[index]
                with seeded_rngs(sample_seed(self.seed, position, attempt)):
                    try:
                        mapped = self.mapper(record)
                        reason = "the mapper returned None"
                    except BadInputError as e:
                        mapped, reason = None, str(e)
                    except Exception as e:
                        if hasattr(e, "add_note"):  # Python >= 3.11: the traceback names the image
                            e.add_note(f"(while mapping training image {record.get('file_name')}, index {index})")
                        raise
                if mapped is not None:
                    return mapped
                self._bad.add(index)
                logger.warning(f"Skipping training image {record.get('file_name')} (dataset index {index}): {reason}")
            if replacements is None:
                generator = torch.Generator().manual_seed(sample_seed(self.seed, position, -1))
                replacements = iter(torch.randperm(len(self.dataset), generator=generator).tolist())
            index = next(replacements, None)
            if index is None:
                raise RuntimeError(
                    f"None of the {len(self.dataset)} training images could be used (see the warnings above)"
                )
        raise AssertionError("unreachable")


class ResumableTrainLoader:
    """Iterable of per-rank training batches (lists of mapped dicts) that can start at any iteration.

    Built by :func:`build_resumable_train_loader`; see the module docstring for the guarantees.
    """

    def __init__(
        self,
        dataset_dicts: list[dict],
        mapper: Callable[[dict], dict | None],
        *,
        make_sampler: Callable[[int], Sampler],
        seed: int,
        batch_size: int,
        aspect_ratio_grouping: bool = True,
        num_workers: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        """
        Args:
            dataset_dicts: the training set (detectron2 dataset dicts).
            mapper: dataset dict -> model input; may raise ``BadInputError`` or return None to skip.
            make_sampler: seed -> a detectron2 training sampler over ``dataset_dicts``.
            seed: seed of the sampler and of every sample's augmentation.
            batch_size: images per batch of this rank.
            aspect_ratio_grouping: batches of only landscape or only portrait images.
            num_workers: ``DataLoader`` worker processes (0: map in the main process).
            rank, world_size: this process among the training processes (default: detectron2's comm).
        """
        if not dataset_dicts:
            raise ValueError("the training set is empty")
        self.dataset = DatasetFromList(dataset_dicts, copy=False, serialize=True)
        self.mapper = mapper
        self.make_sampler = make_sampler
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.rank = comm.get_rank() if rank is None else rank
        self.world_size = comm.get_world_size() if world_size is None else world_size
        self.group_ids = None
        if aspect_ratio_grouping:
            self.group_ids = np.array(
                [int(d.get("width", 1) <= d.get("height", 0)) for d in dataset_dicts], dtype=np.int64
            )
        self.start_iteration = 0
        self.seed = seed
        self.sampler = make_sampler(seed)

    def start_at(self, iteration: int) -> None:
        """The next iterator starts with the batch of training iteration ``iteration``."""
        self.start_iteration = int(iteration)

    def state_dict(self) -> dict:
        return {"seed": int(self.seed)}

    def load_state_dict(self, state: dict) -> None:
        """Use the seed of the checkpointed run (it matters when ``SEED`` < 0 drew a random one)."""
        seed = int(state["seed"])
        if seed != self.seed:
            self.seed = seed
            self.sampler = self.make_sampler(seed)

    def __iter__(self) -> Iterator[list[dict]]:
        logger.info(
            f"Training data starts at batch {self.start_iteration} of the stream with seed {self.seed} "
            f"({self.batch_size} images per batch on rank {self.rank} of {self.world_size})"
        )
        generator = torch.Generator().manual_seed(mix_seed(self.seed, 3))  # DataLoader's base seed, not the global RNG
        loader = DataLoader(
            _ResumableBatches(self),
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=_identity,
            generator=generator,
        )
        return iter(loader)


def load_train_dataset_dicts(names: str | Sequence[str], filter_empty: bool = True) -> list[dict]:
    """The dicts of the registered datasets ``names`` as detectron2's train loader gets them
    (:func:`~pix2seq_d2.data.datasets.checked_dataset_dicts`: ``get_detection_dataset_dicts``, with datasets
    registered by ``register_coco_instances`` read by the checked COCO reader), with clear errors for an
    empty training set and for a COCO json that detectron2's own reader fails on (a dataset registered with
    a function that calls it). The cause of a failed load is found by looking at the datasets, not at the
    text of detectron2's error."""
    names = (names,) if isinstance(names, str) else tuple(names)
    if not names:
        raise ValueError("DATASETS.TRAIN is empty: name at least one registered dataset to train on")
    try:
        dicts = checked_dataset_dicts(names, filter_empty)
    except KeyError as e:
        explanation = explain_dataset_error(names)
        if explanation:
            raise ValueError(f"Cannot load the training set {names}: {explanation}") from e
        raise
    except EmptyDatasetError:  # a dataset without images: named below as the training set
        dicts = []
    except AssertionError:  # no dataset is empty, so filtering left no image (or another detectron2 assertion)
        if not filter_empty:
            raise
        dicts = []
    if isinstance(dicts, list) and not dicts:
        hint = ""
        if filter_empty:
            hint = " (DATALOADER.FILTER_EMPTY_ANNOTATIONS removed every image without a non-crowd annotation)"
        raise EmptyDatasetError(
            f"The training set {names} has no images{hint}: check the dataset's registration and files"
        )
    return dicts


def _sampler_factory(
    name: str, dicts: list[dict], repeat_threshold: float, repeat_sqrt: bool, random_subset_ratio: float
) -> Callable[[int], Sampler] | None:
    """seed -> the detectron2 training sampler ``name`` over ``dicts``; None for a sampler exact resume does not
    support."""
    if name == "TrainingSampler":
        return lambda seed: TrainingSampler(len(dicts), shuffle=True, seed=seed)
    if name == "RepeatFactorTrainingSampler":
        factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            dicts, repeat_threshold, sqrt=repeat_sqrt
        )
        return lambda seed: RepeatFactorTrainingSampler(factors, seed=seed)
    if name == "RandomSubsetTrainingSampler":
        return lambda seed: RandomSubsetTrainingSampler(
            len(dicts), random_subset_ratio, seed_shuffle=seed, seed_subset=seed
        )
    return None


def resumable_train_loader(
    names: str | Sequence[str],
    mapper: Callable[[dict], dict | None],
    *,
    total_batch_size: int,
    seed: int = -1,
    num_workers: int = 0,
    aspect_ratio_grouping: bool = True,
    filter_empty: bool = True,
    sampler: str = "TrainingSampler",
    repeat_threshold: float = 0.0,
    repeat_sqrt: bool = True,
    random_subset_ratio: float = 0.8,
    num_classes: int | None = None,
) -> ResumableTrainLoader:
    """The exact-resume training loader of the registered datasets ``names`` (every batch a function of
    ``(seed, iteration)``): ``total_batch_size`` over all workers; ``seed`` < 0 draws one, shared by all
    workers and saved in checkpoints; ``sampler`` one of :data:`SUPPORTED_SAMPLERS`; the other arguments
    are the ``DATALOADER.*`` keys of the same names; ``num_classes``: every annotation's category is
    checked against it first. LazyConfigs call it with explicit arguments; :func:`build_resumable_train_loader`
    with a config's."""
    dicts = load_train_dataset_dicts(names, filter_empty)
    if not isinstance(dicts, list):
        raise ValueError(f"the training set {names} is a torch Dataset: it has no dicts to resume a stream of")
    return _resumable_loader(
        dicts, mapper, _sampler_factory(sampler, dicts, repeat_threshold, repeat_sqrt, random_subset_ratio),
        sampler=sampler, names=names, total_batch_size=total_batch_size, seed=seed, num_workers=num_workers,
        aspect_ratio_grouping=aspect_ratio_grouping, num_classes=num_classes,
    )  # fmt: skip


def _resumable_loader(
    dicts: list[dict],
    mapper: Callable,
    make_sampler: Callable[[int], Sampler] | None,
    *,
    sampler: str,
    names: str | Sequence[str],
    total_batch_size: int,
    seed: int,
    num_workers: int,
    aspect_ratio_grouping: bool,
    num_classes: int | None,
) -> ResumableTrainLoader:
    if make_sampler is None:
        raise ValueError(f"exact resume supports the samplers {SUPPORTED_SAMPLERS}, not {sampler!r}")
    if num_classes is not None:
        check_category_ids(dicts, num_classes, (names,) if isinstance(names, str) else names)
    world_size = comm.get_world_size()
    if total_batch_size < 1 or total_batch_size % world_size:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH={total_batch_size} must be a positive multiple of the {world_size} workers"
        )
    return ResumableTrainLoader(
        dicts,
        mapper,
        make_sampler=make_sampler,
        seed=seed if seed >= 0 else comm.shared_random_seed(),
        batch_size=total_batch_size // world_size,
        aspect_ratio_grouping=aspect_ratio_grouping,
        num_workers=num_workers,
    )


def build_resumable_train_loader(cfg: CfgNode, mapper: Callable, num_classes: int | None = None):
    """The training loader of ``cfg`` (``DATASETS.TRAIN``, ``DATALOADER.*``, ``SOLVER.IMS_PER_BATCH``,
    ``SEED``): a :class:`ResumableTrainLoader`, or detectron2's loader (with a warning: no exact resume)
    for a torch Dataset or a sampler it does not support.

    ``num_classes``: if given, every annotation's category id is checked against it first.
    """
    d = cfg.DATALOADER
    dicts = load_train_dataset_dicts(cfg.DATASETS.TRAIN, d.FILTER_EMPTY_ANNOTATIONS)
    if not isinstance(dicts, list):  # a registered torch Dataset: no dicts to index
        logger.warning("The training set is a torch Dataset: using detectron2's loader (resume restarts its stream)")
        return build_detection_train_loader(cfg, mapper=mapper, dataset=dicts)
    # DATALOADER.RANDOM_SUBSET_RATIO is missing from some detectron2 builds' defaults (only its sampler reads it)
    subset_ratio = d.get("RANDOM_SUBSET_RATIO", 0.8)
    make_sampler = _sampler_factory(d.SAMPLER_TRAIN, dicts, d.REPEAT_THRESHOLD, d.REPEAT_SQRT, subset_ratio)
    if make_sampler is None:
        if num_classes is not None:
            check_category_ids(dicts, num_classes, cfg.DATASETS.TRAIN)
        logger.warning(
            f"DATALOADER.SAMPLER_TRAIN={d.SAMPLER_TRAIN!r}: using detectron2's loader, whose data "
            f"stream restarts on resume (exact resume supports {', '.join(SUPPORTED_SAMPLERS)})"
        )
        return build_detection_train_loader(cfg, mapper=mapper, dataset=dicts)
    return _resumable_loader(
        dicts, mapper, make_sampler, sampler=d.SAMPLER_TRAIN, names=cfg.DATASETS.TRAIN,
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH, seed=cfg.SEED, num_workers=d.NUM_WORKERS,
        aspect_ratio_grouping=d.ASPECT_RATIO_GROUPING, num_classes=num_classes,
    )  # fmt: skip
