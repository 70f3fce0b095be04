"""Test data: the synthetic COCO and MPII data sets (their writers live in
``lib.dataset.fixtures``, which benchmarks use too) and a config pointing at one."""

from __future__ import annotations

import os
from typing import Any

from lib.dataset.fixtures import (
    COCO_KEYPOINT_NAMES,
    MPII_JOINT_NAMES,
    make_coco_fixture,
    make_mpii_fixture,
)

__all__ = [
    "COCO_KEYPOINT_NAMES",
    "MPII_JOINT_NAMES",
    "fixture_cfg",
    "make_coco_fixture",
    "make_mpii_fixture",
]


def fixture_cfg(dataset: str, root: str | os.PathLike, image_size: tuple[int, int] = (96, 128),
                heatmap_size: tuple[int, int] = (24, 32), **overrides: Any) -> Any:
    """A frozen copy of the default config pointing at a fixture: DATASET.DATASET / ROOT,
    NUM_JOINTS of the data set, small input and heatmap sizes (w, h), the COCO test set name,
    then ``overrides`` given as ``SECTION__KEY=value`` (e.g. ``TEST__USE_GT_BBOX=True``)."""
    from lib.config import cfg as default_cfg

    cfg = default_cfg.clone()
    cfg.defrost()
    cfg.DATASET.DATASET = dataset
    cfg.DATASET.ROOT = os.fspath(root)
    cfg.MODEL.NUM_JOINTS = 17 if dataset == "coco" else 16
    cfg.MODEL.IMAGE_SIZE = list(image_size)
    cfg.MODEL.HEATMAP_SIZE = list(heatmap_size)
    if dataset == "coco":
        cfg.DATASET.TRAIN_SET, cfg.DATASET.TEST_SET = "train2017", "val2017"
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split("__")
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise KeyError(f"fixture_cfg: unknown config key {key.replace('__', '.')}")
        node[leaf] = value
    cfg.freeze()
    return cfg
