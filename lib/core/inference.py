"""Decoding heatmaps into keypoint coordinates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from lib.utils.transforms import transform_preds

SUBPIXEL_METHODS = ("quarter", "dark")


def _as_numpy(heatmaps) -> np.ndarray:
    if not isinstance(heatmaps, np.ndarray):  # a torch tensor, possibly on the GPU
        heatmaps = heatmaps.detach().float().cpu().numpy()
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be N x J x H x W, got shape {heatmaps.shape}")
    return heatmaps


def get_max_preds(batch_heatmaps) -> tuple[np.ndarray, np.ndarray]:
    """Argmax of each heatmap: coords N x J x 2 (x, y) in heatmap pixels and maxvals N x J x 1.

    Coordinates are 0 where the maximum is not positive, as in the original.
    """
    heatmaps = _as_numpy(batch_heatmaps)
    n, j, _, width = heatmaps.shape
    flat = heatmaps.reshape(n, j, -1)
    idx = flat.argmax(axis=2)
    maxvals = np.take_along_axis(flat, idx[..., None], axis=2)

    preds = np.empty((n, j, 2), dtype=np.float32)
    preds[..., 0] = idx % width
    preds[..., 1] = idx // width
    preds *= (maxvals > 0.0).astype(np.float32)
    return preds, maxvals


def quarter_offset(heatmaps: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Move each argmax a quarter pixel towards its higher neighbour in x and in y.

    Only for maxima strictly inside the border (1 < px < W-1 and 1 < py < H-1), as the
    original's POST_PROCESS; returns new coordinates.
    """
    n, j, height, width = heatmaps.shape
    px = np.floor(coords[..., 0] + 0.5).astype(np.int64)
    py = np.floor(coords[..., 1] + 0.5).astype(np.int64)
    inside = (px > 1) & (px < width - 1) & (py > 1) & (py < height - 1)
    px_c = np.clip(px, 1, width - 2)
    py_c = np.clip(py, 1, height - 2)
    ni, ji = np.meshgrid(np.arange(n), np.arange(j), indexing="ij")
    diff = np.stack([
        heatmaps[ni, ji, py_c, px_c + 1] - heatmaps[ni, ji, py_c, px_c - 1],
        heatmaps[ni, ji, py_c + 1, px_c] - heatmaps[ni, ji, py_c - 1, px_c],
    ], axis=-1)
    return coords + np.sign(diff) * 0.25 * inside[..., None]


def dark_offset(heatmaps: np.ndarray, coords: np.ndarray, sigma: float) -> np.ndarray:
    """Refine each argmax by one Newton step on the log of the Gaussian-smoothed heatmap.

    A Gaussian blob's log is a quadratic, whose peak one Newton step from any point finds
    exactly; smoothing (sigma, the targets' own width) makes the network's blob closer to a
    Gaussian and keeps its maximum. Central differences need the argmax one pixel inside the
    border; elsewhere, or where the curvature is not that of a peak, coordinates stay put.
    The step is clipped to one pixel.
    """
    n, j, height, width = heatmaps.shape
    peak = heatmaps.reshape(n, j, -1).max(axis=2)[..., None, None]
    smooth = gaussian_filter(heatmaps.astype(np.float64), sigma=(0, 0, sigma, sigma),
                             mode="constant", truncate=3.0)
    smooth *= np.maximum(peak, 0.0) / np.maximum(smooth.reshape(n, j, -1).max(axis=2),
                                                 1e-12)[..., None, None]
    log = np.log(np.maximum(smooth, 1e-10))

    px = np.rint(coords[..., 0]).astype(np.int64)
    py = np.rint(coords[..., 1]).astype(np.int64)
    inside = (px >= 1) & (px <= width - 2) & (py >= 1) & (py <= height - 2)
    x, y = np.clip(px, 1, width - 2), np.clip(py, 1, height - 2)
    ni, ji = np.meshgrid(np.arange(n), np.arange(j), indexing="ij")

    def at(dy: int, dx: int) -> np.ndarray:
        return log[ni, ji, y + dy, x + dx]

    centre = at(0, 0)
    gx, gy = 0.5 * (at(0, 1) - at(0, -1)), 0.5 * (at(1, 0) - at(-1, 0))
    hxx = at(0, 1) - 2 * centre + at(0, -1)
    hyy = at(1, 0) - 2 * centre + at(-1, 0)
    hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = hxx * hyy - hxy * hxy
    is_peak = inside & (hxx < 0) & (det > 1e-12) & (peak[..., 0, 0] > 0)
    safe = np.where(is_peak, det, 1.0)
    step = np.stack([-(hyy * gx - hxy * gy) / safe, -(hxx * gy - hxy * gx) / safe], axis=-1)
    return coords + np.clip(step, -1.0, 1.0) * is_peak[..., None]


def check_subpixel_method(config) -> str:
    """TEST.SUBPIXEL_METHOD, checked when a run starts rather than at its first validation."""
    method = config.TEST.get("SUBPIXEL_METHOD", "quarter")
    if method not in SUBPIXEL_METHODS:
        raise ValueError(f"TEST.SUBPIXEL_METHOD must be one of {SUBPIXEL_METHODS}, "
                         f"got {method!r}")
    return method


def get_final_preds(config, batch_heatmaps, center: Sequence, scale: Sequence
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints in image pixels (N x J x 2) and their scores (N x J x 1).

    With TEST.POST_PROCESS the argmax gets its sub-pixel step (TEST.SUBPIXEL_METHOD:
    the original's quarter pixel, or DARK); then each sample's coordinates are mapped back
    through its crop (center, scale).
    """
    heatmaps = _as_numpy(batch_heatmaps)
    coords, maxvals = get_max_preds(heatmaps)
    height, width = heatmaps.shape[2:]
    if config.TEST.POST_PROCESS:
        if check_subpixel_method(config) == "dark":
            coords = dark_offset(heatmaps, coords, float(config.MODEL.SIGMA)).astype(np.float32)
        else:
            coords = quarter_offset(heatmaps, coords).astype(np.float32)

    preds = np.empty(coords.shape, dtype=np.float64)
    for i in range(coords.shape[0]):
        preds[i] = transform_preds(coords[i], center[i], scale[i], [width, height])
    return preds, maxvals
