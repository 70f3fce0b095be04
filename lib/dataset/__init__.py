"""Keypoint data sets. ``build_dataset`` picks one by cfg.DATASET.DATASET from ``register``;
the original's lowercase names (``lib.dataset.coco``, ``lib.dataset.mpii``) are kept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lib.dataset.coco import COCODataset
from lib.dataset.coco import COCODataset as coco
from lib.dataset.JointsDataset import DatasetFormatError, JointsDataset
from lib.dataset.mpii import MPIIDataset
from lib.dataset.mpii import MPIIDataset as mpii
from lib.dataset.speed import SpeedDataset
from lib.dataset.speed import SpeedDataset as speed


class UnknownDatasetError(KeyError):
    """cfg.DATASET.DATASET names no registered data set."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


# cfg.DATASET.DATASET name -> data set class; a new data set is one line here.
register: dict[str, type[JointsDataset]] = {
    "coco": COCODataset,
    "mpii": MPIIDataset,
    "speed": SpeedDataset,
}


def build_dataset(cfg: Any, image_set: str, is_train: bool,
                  transform: Callable | None = None, **kwargs: Any) -> JointsDataset:
    """The data set named by cfg.DATASET.DATASET, rooted at cfg.DATASET.ROOT; ``kwargs`` go to
    its constructor (for data sets that take more than the common arguments)."""
    name = cfg.DATASET.DATASET
    if name not in register:
        raise UnknownDatasetError(
            f"DATASET.DATASET '{name}' is unknown; valid names: {', '.join(sorted(register))}")
    return register[name](cfg, cfg.DATASET.ROOT, image_set, is_train, transform, **kwargs)


__all__ = [
    "COCODataset",
    "DatasetFormatError",
    "JointsDataset",
    "MPIIDataset",
    "UnknownDatasetError",
    "build_dataset",
    "coco",
    "mpii",
    "register",
    "SpeedDataset",
    "speed",
]
