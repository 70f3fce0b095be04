"""The DEBUG image savers: batches with joints drawn, and heatmap grids.

Behind the DEBUG flags, training and validation write `<prefix>_gt.jpg`, `<prefix>_pred.jpg`,
`<prefix>_hm_gt.jpg` and `<prefix>_hm_pred.jpg` as the original does.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import torch
import torchvision


def _to_uint8_images(batch_image: torch.Tensor) -> np.ndarray:
    """N x 3 x H x W float images, min-max normalised per batch, as N x H x W x 3 uint8."""
    images = batch_image.detach().float().cpu()
    lo, hi = images.min(), images.max()
    images = (images - lo) / max(float(hi - lo), 1e-5)
    return (images.mul(255).clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()).copy()


def save_batch_image_with_joints(batch_image: torch.Tensor, batch_joints, batch_joints_vis,
                                 file_name: str, nrow: int = 8, padding: int = 2) -> None:
    """A grid of the batch's images with a dot on every visible joint (joints in input pixels)."""
    grid = torchvision.utils.make_grid(batch_image.detach().float().cpu(), nrow, padding,
                                       normalize=True)
    canvas = grid.mul(255).clamp(0, 255).byte().permute(1, 2, 0).numpy().copy()
    joints = np.asarray(batch_joints)
    vis = np.asarray(batch_joints_vis)
    n, _, height, width = batch_image.shape
    cols = min(nrow, n)
    cell_h, cell_w = height + padding, width + padding
    for k in range(n):
        y0, x0 = (k // cols) * cell_h + padding, (k % cols) * cell_w + padding
        for (x, y), v in zip(joints[k, :, :2], vis[k, :, 0], strict=True):
            if v and np.isfinite(x) and np.isfinite(y):  # a diverged model predicts NaN
                cv2.circle(canvas, (int(x0 + x), int(y0 + y)), 2, (255, 0, 0), 2)
    _write(file_name, canvas)


def save_batch_heatmaps(batch_image: torch.Tensor, batch_heatmaps: torch.Tensor,
                        file_name: str, normalize: bool = True) -> None:
    """One row per sample: the resized image, then each joint's heatmap blended over it."""
    heatmaps = batch_heatmaps.detach().float().cpu().clamp(0, 1).mul(255).byte().numpy()
    images = _to_uint8_images(batch_image) if normalize else batch_image
    n, j, hm_h, hm_w = heatmaps.shape
    canvas = np.zeros((n * hm_h, (j + 1) * hm_w, 3), dtype=np.uint8)
    for k in range(n):
        small = cv2.resize(np.ascontiguousarray(images[k]), (hm_w, hm_h))
        rows = slice(k * hm_h, (k + 1) * hm_h)
        canvas[rows, :hm_w] = small
        for p in range(j):
            colored = cv2.applyColorMap(heatmaps[k, p], cv2.COLORMAP_JET)
            blended = (colored * 0.7 + small * 0.3).astype(np.uint8)
            y, x = np.unravel_index(int(heatmaps[k, p].argmax()), (hm_h, hm_w))
            cv2.circle(blended, (int(x), int(y)), 1, (0, 0, 255), 1)
            canvas[rows, (p + 1) * hm_w:(p + 2) * hm_w] = blended
    _write(file_name, canvas)


def save_debug_images(config, input: torch.Tensor, meta: dict, target: torch.Tensor,
                      joints_pred: np.ndarray, output: torch.Tensor, prefix: str) -> None:
    """Write the debug pictures that the DEBUG flags ask for (nothing when DEBUG is off)."""
    if not config.DEBUG.DEBUG:
        return
    if config.DEBUG.SAVE_BATCH_IMAGES_GT:
        save_batch_image_with_joints(input, meta["joints"], meta["joints_vis"],
                                     f"{prefix}_gt.jpg")
    if config.DEBUG.SAVE_BATCH_IMAGES_PRED:
        save_batch_image_with_joints(input, joints_pred, meta["joints_vis"],
                                     f"{prefix}_pred.jpg")
    if config.DEBUG.SAVE_HEATMAPS_GT:
        save_batch_heatmaps(input, target, f"{prefix}_hm_gt.jpg")
    if config.DEBUG.SAVE_HEATMAPS_PRED:
        save_batch_heatmaps(input, output, f"{prefix}_hm_pred.jpg")


def _write(file_name: str, rgb: np.ndarray) -> None:
    os.makedirs(os.path.dirname(file_name) or ".", exist_ok=True)
    if not cv2.imwrite(file_name, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write debug image {file_name}")


__all__ = ["save_batch_image_with_joints", "save_batch_heatmaps", "save_debug_images"]
