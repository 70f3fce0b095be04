"""Any images with boxes around the objects, cropped exactly as a data set's test split is.

Inference on new images (tools/infer.py) goes through this class so that its crops, colour
order and normalisation are those of tools/test.py, number for number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lib.dataset.JointsDataset import JointsDataset
from lib.utils.image_io import ImageCache


class ImageBoxesDataset(JointsDataset):
    """One item per (image path, box (x, y, w, h), score); no labels, zero targets.

    With ``whole_image`` each box is taken as the image itself and cropped unpadded, as the
    spacecraft's coarse model sees it (DATASET.SPEED_FULL_IMAGE). An ``image_cache`` shared
    between such data sets decodes each image once for all of them (the two-stage crop search
    crops the same images some fifteen times). ``gammas`` (one per item) are the tone curves the
    crops are seen through (JointsDataset's record key 'gamma'; none: 1)."""

    def __init__(self, cfg: Any, items: Sequence[tuple[str, Sequence[float], float]],
                 flip_pairs: list[list[int]] | None, transform: Callable | None = None,
                 read_grayscale: bool = False, whole_image: bool = False,
                 image_cache: ImageCache | None = None,
                 gammas: Sequence[float] | None = None) -> None:
        self.num_joints = cfg.MODEL.NUM_JOINTS
        self.flip_pairs = flip_pairs
        self.read_grayscale = read_grayscale
        super().__init__(cfg, "", "inference", False, transform)
        if image_cache is not None:
            self.image_cache = image_cache
        zeros = np.zeros((self.num_joints, 3), dtype=np.float64)
        if gammas is not None and len(gammas) != len(items):
            raise ValueError(f"{len(items)} items but {len(gammas)} gammas")
        for index, (path, box, score) in enumerate(items):
            if whole_image:
                center, scale = self._image_center_scale(box[2], box[3])
            else:
                center, scale = self._box_to_center_scale(*box)
            self.db.append({"image": path, "center": center, "scale": scale,
                            "score": float(score), "joints_3d": zeros,
                            "joints_3d_vis": zeros})
            if gammas is not None:
                self.db[-1]["gamma"] = float(gammas[index])

    def evaluate(self, cfg: Any, preds: np.ndarray, output_dir: str, *args: Any,
                 **kwargs: Any) -> tuple[dict[str, float], float]:
        raise NotImplementedError("images without labels have nothing to evaluate")
