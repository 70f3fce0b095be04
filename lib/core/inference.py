"""Decoding heatmaps into keypoint coordinates, configured by cfg.TEST.

The codec itself lives in ``lib.utils.heatmap_codec`` (beside the target encoding); this
module keeps the original's entry points, which user scripts import from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lib.utils.heatmap_codec import (
    SUBPIXEL_METHODS,
    dark_offset,
    decode_heatmaps,
    get_max_preds,
    quarter_offset,
)

__all__ = [
    "SUBPIXEL_METHODS",
    "check_subpixel_method",
    "dark_offset",
    "get_final_preds",
    "get_max_preds",
    "quarter_offset",
]


def check_subpixel_method(config: Any) -> str:
    """TEST.SUBPIXEL_METHOD, checked when a run starts rather than at its first validation."""
    method = config.TEST.get("SUBPIXEL_METHOD", "quarter")
    if method not in SUBPIXEL_METHODS:
        raise ValueError(f"TEST.SUBPIXEL_METHOD must be one of {SUBPIXEL_METHODS}, "
                         f"got {method!r}")
    return method


def get_final_preds(config: Any, batch_heatmaps: Any, center: Sequence, scale: Sequence
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints in image pixels (N x J x 2) and their scores (N x J x 1).

    With TEST.POST_PROCESS the argmax gets its sub-pixel step (TEST.SUBPIXEL_METHOD:
    the original's quarter pixel, or DARK with MODEL.SIGMA); then each sample's coordinates
    are mapped back through its crop (center, scale).
    """
    method = check_subpixel_method(config) if config.TEST.POST_PROCESS else None
    sigma = float(config.MODEL.SIGMA) if method == "dark" else None
    return decode_heatmaps(batch_heatmaps, center, scale, method, sigma)
