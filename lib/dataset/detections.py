"""Person (or any object) detections in the COCO results format, read once for every user.

A detection file is a JSON list of objects with ``bbox`` [x, y, w, h] (image pixels, top-left
corner) and ``score``, usually ``image_id`` and ``category_id`` too (``file_name`` names the
image where there is no COCO id). The COCO data set (TEST.COCO_BBOX_FILE) and tools/infer.py
(--bbox-file) read it through :func:`read_detections`; the spacecraft's box file is its own
format (lib.spacecraft.files).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from lib.dataset.JointsDataset import DatasetFormatError
from lib.utils.io import read_json

__all__ = ["read_detections", "group_by_image"]


def read_detections(path: str, required: Sequence[str] = ("bbox", "score"),
                    what: str = "detection file") -> list[dict[str, Any]]:
    """The detections of ``path``, each checked to hold the ``required`` fields, a ``bbox`` of
    4 finite numbers and a numeric ``score``; errors name the file and the detection's index."""
    entries = read_json(path, what, DatasetFormatError)
    if not isinstance(entries, list):
        raise DatasetFormatError(f"{what} must hold a list of detections, got "
                                 f"{type(entries).__name__}: {path}")
    for index, det in enumerate(entries):
        for field in required:
            if not isinstance(det, dict) or field not in det:
                raise DatasetFormatError(f"{path}: detection {index} has no '{field}' field "
                                         f"(needed: {', '.join(required)})")
        box = det.get("bbox")
        if box is not None and (not isinstance(box, list) or len(box) != 4 or not all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in box)):
            raise DatasetFormatError(f"{path}: detection {index} has a bbox of {box!r}, "
                                     f"expected 4 numbers (x, y, w, h)")
        score = det.get("score")
        if score is not None and not isinstance(score, (int, float)):
            raise DatasetFormatError(f"{path}: detection {index} has a score of {score!r}, "
                                     f"expected a number")
    return entries


def group_by_image(path: str, category_id: int | None = 1
                   ) -> dict[str, list[tuple[list[float], float]]]:
    """(box, score) lists keyed by image file name: ``file_name`` when given, else the 12-digit
    COCO name of ``image_id``. Only ``category_id`` (person) is kept where the field is set."""
    grouped: dict[str, list[tuple[list[float], float]]] = {}
    for index, det in enumerate(read_detections(path)):
        if category_id is not None and det.get("category_id", category_id) != category_id:
            continue
        if "file_name" in det:
            key = os.path.basename(str(det["file_name"]))
        elif "image_id" in det:
            key = f"{int(det['image_id']):012d}.jpg"
        else:
            raise DatasetFormatError(f"{path}: detection {index} names no 'file_name' or "
                                     f"'image_id'")
        grouped.setdefault(key, []).append(([float(v) for v in det["bbox"]], float(det["score"])))
    return grouped
