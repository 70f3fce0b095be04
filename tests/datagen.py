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


def fixture_cfg(dataset: str, root: str | os.PathLike, overrides: dict[str, Any] | None = None,
                image_size: tuple[int, int] = (96, 128),
                heatmap_size: tuple[int, int] = (24, 32)) -> Any:
    """A frozen copy of the default config pointing at a fixture: DATASET.DATASET / ROOT,
    NUM_JOINTS of the data set, small input and heatmap sizes (w, h), the COCO test set name,
    then ``overrides`` with dotted keys (``{"TEST.USE_GT_BBOX": True}``), merged as on the
    command line (an unknown key is an error naming it; values are not checked)."""
    from lib.config import default_config, merge_from_list

    cfg = default_config()
    base = {"DATASET.DATASET": dataset, "DATASET.ROOT": os.fspath(root),
            "MODEL.NUM_JOINTS": 17 if dataset == "coco" else 16,
            "MODEL.IMAGE_SIZE": list(image_size), "MODEL.HEATMAP_SIZE": list(heatmap_size)}
    if dataset == "coco":
        base.update({"DATASET.TRAIN_SET": "train2017", "DATASET.TEST_SET": "val2017"})
    merged = {**base, **(overrides or {})}
    merge_from_list(cfg, [item for pair in merged.items() for item in pair], check=False)
    cfg.freeze()
    return cfg
