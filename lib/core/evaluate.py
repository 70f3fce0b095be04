"""Training-time accuracy: PCK computed on heatmap argmaxes."""

from __future__ import annotations

import numpy as np

from lib.core.inference import get_max_preds


def calc_dists(preds: np.ndarray, target: np.ndarray, normalize: np.ndarray) -> np.ndarray:
    """Normalised distances J x N; -1 where the target joint is absent (x or y <= 1)."""
    preds = preds.astype(np.float32)
    target = target.astype(np.float32)
    valid = (target[..., 0] > 1) & (target[..., 1] > 1)
    norm = normalize[:, None, :]
    dists = np.linalg.norm(preds / norm - target / norm, axis=2)
    return np.where(valid, dists, -1.0).T


def dist_acc(dists: np.ndarray, thr: float = 0.5) -> float:
    """Fraction of the valid distances below `thr`; -1 when none is valid."""
    valid = dists != -1
    if not valid.any():
        return -1
    return float((dists[valid] < thr).sum()) / valid.sum()


def accuracy(output, target, hm_type: str = "gaussian", thr: float = 0.5
             ) -> tuple[np.ndarray, float, int, np.ndarray]:
    """PCK of the heatmap argmaxes against the target's argmaxes.

    Returns (acc, avg_acc, cnt, pred): acc holds the average first and then each joint's
    accuracy (-1 for joints with no visible target). Distances are normalised by a tenth of
    the heatmap size; like the original, x is divided by H/10 and y by W/10.
    """
    if hm_type != "gaussian":
        raise ValueError(f"accuracy supports hm_type 'gaussian' only, got {hm_type!r}")
    pred, _ = get_max_preds(output)
    target, _ = get_max_preds(target)
    h, w = output.shape[2], output.shape[3]
    norm = np.ones((pred.shape[0], 2)) * np.array([h, w]) / 10

    dists = calc_dists(pred, target, norm)
    num_joints = dists.shape[0]
    acc = np.zeros(num_joints + 1)
    for j in range(num_joints):
        acc[j + 1] = dist_acc(dists[j], thr)
    counted = acc[1:] >= 0
    cnt = int(counted.sum())
    avg_acc = float(acc[1:][counted].mean()) if cnt else 0.0
    if cnt:
        acc[0] = avg_acc
    return acc, avg_acc, cnt, pred
