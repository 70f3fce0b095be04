"""The heatmap codec: keypoints -> Gaussian target heatmaps (training) and heatmaps ->
keypoints in image pixels (testing), side by side so that both sides of the convention (peak at
int(joint / stride + 0.5), sigma, crop geometry) are read in one place.

Ground floor of ``lib`` (numpy, SciPy and ``lib.utils.transforms``): the data sets encode with
it and ``lib.core.inference`` decodes with it. Torch tensors are accepted by duck typing, so
this module does not import torch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from lib.utils.transforms import transform_preds

__all__ = [
    "SUBPIXEL_METHODS",
    "dark_offset",
    "decode_heatmaps",
    "gaussian_patch",
    "generate_gaussian_targets",
    "get_max_preds",
    "quarter_offset",
]

SUBPIXEL_METHODS = ("quarter", "dark")


# --------------------------------------------------------------------------------------------
# Encoding: Gaussian targets
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def gaussian_patch(sigma: float) -> np.ndarray:
    """The unnormalised Gaussian (peak 1) of the original, float32, side 2 * 3 sigma + 1
    (read-only: one array is shared by every call with this sigma)."""
    tmp_size = sigma * 3
    size = 2 * tmp_size + 1
    x = np.arange(0, size, 1, np.float32)
    y = x[:, np.newaxis]
    x0 = y0 = size // 2
    patch = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
    patch.setflags(write=False)
    return patch


def generate_gaussian_targets(
    joints: np.ndarray,
    joints_vis: np.ndarray,
    image_size: Sequence[int],
    heatmap_size: Sequence[int],
    sigma: float,
    subpixel: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps J x H x W (float32) and weights J x 1 for joints in input-image pixels.

    The original's rules, for all joints at once: the peak sits at int(joint / stride + 0.5)
    (int truncates towards zero), the window spans int(mu - 3 sigma) .. int(mu + 3 sigma + 1),
    the weight is the visibility, set to 0 when the window lies entirely outside the heatmap,
    and only joints with weight > 0.5 are drawn. Values are copied from ``gaussian_patch``, so
    they equal the per-joint loop bit for bit.

    ``subpixel``: the same window and weights, but the Gaussian is centred on the joint's exact
    heatmap position joint / stride (DARK's unbiased encoding, Zhang et al. CVPR 2020). The
    rounded peak teaches a network up to half a heatmap pixel of error per axis, which at a
    32-pixel heatmap is a large part of a landmark's error.
    """
    width, height = int(heatmap_size[0]), int(heatmap_size[1])
    num_joints = len(joints)
    tmp_size = sigma * 3
    stride = np.asarray(image_size) / np.asarray(heatmap_size)

    target_weight = np.asarray(joints_vis)[:, :1].astype(np.float32)
    mu_x = np.trunc(joints[:, 0] / stride[0] + 0.5)
    mu_y = np.trunc(joints[:, 1] / stride[1] + 0.5)
    ul_x = np.trunc(mu_x - tmp_size).astype(np.int64)
    ul_y = np.trunc(mu_y - tmp_size).astype(np.int64)
    br_x = np.trunc(mu_x + tmp_size + 1).astype(np.int64)
    br_y = np.trunc(mu_y + tmp_size + 1).astype(np.int64)
    outside = (ul_x >= width) | (ul_y >= height) | (br_x < 0) | (br_y < 0)
    target_weight[outside] = 0

    patch = gaussian_patch(sigma)
    offsets = np.arange(patch.shape[0])
    if subpixel:  # per joint: the window's separable Gaussian about the exact centre
        exact_x = joints[:, 0] / stride[0]
        exact_y = joints[:, 1] / stride[1]
        gauss_x = np.exp(-((ul_x[:, None] + offsets - exact_x[:, None]) ** 2) / (2 * sigma**2))
        gauss_y = np.exp(-((ul_y[:, None] + offsets - exact_y[:, None]) ** 2) / (2 * sigma**2))
        patches = (gauss_y[:, :, None] * gauss_x[:, None, :]).astype(np.float32)  # J x S x S
    else:
        patches = np.broadcast_to(patch, (num_joints, *patch.shape))
    cols = ul_x[:, None] + offsets  # J x S heatmap columns covered by each joint's patch
    rows = ul_y[:, None] + offsets
    col_ok = (cols >= 0) & (cols < np.minimum(br_x, width)[:, None])
    row_ok = (rows >= 0) & (rows < np.minimum(br_y, height)[:, None])
    drawn = (target_weight[:, 0] > 0.5)[:, None, None]
    inside = row_ok[:, :, None] & col_ok[:, None, :] & drawn  # J x S x S

    target = np.zeros((num_joints, height, width), dtype=np.float32)
    joint_index, patch_row, patch_col = np.nonzero(inside)
    target[joint_index, rows[joint_index, patch_row], cols[joint_index, patch_col]] = patches[
        joint_index, patch_row, patch_col
    ]
    return target, target_weight


# --------------------------------------------------------------------------------------------
# Decoding: argmax, sub-pixel refinement, back to the image
# --------------------------------------------------------------------------------------------
def _as_numpy(heatmaps: Any) -> np.ndarray:
    if not isinstance(heatmaps, np.ndarray):  # a torch tensor, possibly on the GPU
        heatmaps = heatmaps.detach().float().cpu().numpy()
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be N x J x H x W, got shape {heatmaps.shape}")
    return heatmaps


def get_max_preds(batch_heatmaps: Any) -> tuple[np.ndarray, np.ndarray]:
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


def decode_heatmaps(batch_heatmaps: Any, center: Sequence, scale: Sequence,
                    subpixel_method: str | None = None, sigma: float | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints in image pixels (N x J x 2, float64) and their scores (N x J x 1).

    The argmax, then ``subpixel_method`` ('quarter': the original's quarter pixel; 'dark':
    DARK, which needs the targets' ``sigma``; None: none), then each sample's coordinates
    mapped back through its crop (``center[i]``, ``scale[i]``).
    """
    heatmaps = _as_numpy(batch_heatmaps)
    coords, maxvals = get_max_preds(heatmaps)
    height, width = heatmaps.shape[2:]
    if subpixel_method == "dark":
        if sigma is None:
            raise ValueError("decode_heatmaps: the 'dark' refinement needs the targets' sigma")
        coords = dark_offset(heatmaps, coords, float(sigma)).astype(np.float32)
    elif subpixel_method == "quarter":
        coords = quarter_offset(heatmaps, coords).astype(np.float32)
    elif subpixel_method is not None:
        raise ValueError(f"sub-pixel method must be one of {SUBPIXEL_METHODS} or None, "
                         f"got {subpixel_method!r}")

    preds = np.empty(coords.shape, dtype=np.float64)
    for i in range(coords.shape[0]):
        preds[i] = transform_preds(coords[i], center[i], scale[i], [width, height])
    return preds, maxvals
