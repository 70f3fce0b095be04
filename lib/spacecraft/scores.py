"""Spacecraft pose scores: rotation / translation errors, the ESA score and its SPEC2021 variant.

Definitions (docs/spacecraft.md): ``e_q = 2 arccos(min(1, |<q_gt, q_est>|))``
(radians, blind to the q / -q sign), ``e_t = ||r_gt - r_est|| / ||r_gt||``, score = e_q + e_t,
averaged over images; lower is better. An image whose pose could not be estimated is scored with
the documented worst case: e_q = pi and the estimate r = 0, so e_t = 1 (absolute error ||r_gt||).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

__all__ = [
    "rotation_error",
    "translation_error",
    "PoseErrors",
    "pose_errors",
    "esa_score",
    "esa_score_spec2021",
    "pose_score_summary",
    "landmark_pixel_error",
]


def _unit(q: np.ndarray, name: str) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64).reshape(-1, 4)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    if np.any(~np.isfinite(norm) | (norm < 1e-12)):
        raise ValueError(f"{name}: quaternions must be finite with non-zero norm")
    return q / norm


def rotation_error(q_gt: np.ndarray, q_est: np.ndarray) -> np.ndarray:
    """Per-image angle (radians) between attitudes: 2 arccos(min(1, |<q_gt, q_est>|)), N."""
    dot = np.abs(np.sum(_unit(q_gt, "q_gt") * _unit(q_est, "q_est"), axis=1))
    return 2.0 * np.arccos(np.minimum(1.0, dot))


def translation_error(r_gt: np.ndarray, r_est: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image (||r_gt - r_est|| in metres, the same divided by ||r_gt||), each N."""
    r_gt = np.asarray(r_gt, dtype=np.float64).reshape(-1, 3)
    r_est = np.asarray(r_est, dtype=np.float64).reshape(-1, 3)
    distance = np.linalg.norm(r_gt, axis=1)
    if np.any(distance <= 0):
        raise ValueError("r_gt: a ground-truth position of zero norm has no relative error")
    absolute = np.linalg.norm(r_gt - r_est, axis=1)
    return absolute, absolute / distance


@dataclass(frozen=True)
class PoseErrors:
    """Per-image errors (arrays of N) with failures already set to the worst case."""

    rot_rad: np.ndarray
    trans_m: np.ndarray
    trans_rel: np.ndarray
    failed: np.ndarray


def pose_errors(
    q_gt: np.ndarray,
    r_gt: np.ndarray,
    q_est: np.ndarray,
    r_est: np.ndarray,
    success: np.ndarray | None = None,
) -> PoseErrors:
    """Errors of N estimates; failed images get e_q = pi and r_est = 0 (e_t = 1, ||r_gt|| m).

    An image fails where ``success`` is False or its estimate is not finite / has a zero
    quaternion, so a NaN placeholder from the solver is never mistaken for a pose.
    """
    q_gt = np.asarray(q_gt, dtype=np.float64).reshape(-1, 4)
    r_gt = np.asarray(r_gt, dtype=np.float64).reshape(-1, 3)
    q_est = np.asarray(q_est, dtype=np.float64).reshape(-1, 4)
    r_est = np.asarray(r_est, dtype=np.float64).reshape(-1, 3)
    n = len(q_gt)
    if not len(r_gt) == len(q_est) == len(r_est) == n:
        raise ValueError(
            f"pose arrays disagree in length: q_gt {n}, r_gt {len(r_gt)}, "
            f"q_est {len(q_est)}, r_est {len(r_est)}"
        )
    ok = np.ones(n, dtype=bool) if success is None else np.asarray(success, dtype=bool).copy()
    if ok.shape != (n,):
        raise ValueError(f"success must hold {n} flags, got shape {ok.shape}")
    ok &= np.all(np.isfinite(q_est), axis=1) & np.all(np.isfinite(r_est), axis=1)
    ok &= np.linalg.norm(np.nan_to_num(q_est), axis=1) > 1e-12
    q_safe = np.where(ok[:, None], q_est, q_gt)
    r_safe = np.where(ok[:, None], r_est, 0.0)
    rot = np.where(ok, rotation_error(q_gt, q_safe), np.pi)
    trans_m, trans_rel = translation_error(r_gt, r_safe)
    return PoseErrors(rot, trans_m, trans_rel, ~ok)


def esa_score(rot_rad: np.ndarray, trans_rel: np.ndarray) -> np.ndarray:
    """Per-image SPEC2019 score e_q + e_t (radians + fraction)."""
    return np.asarray(rot_rad, dtype=np.float64) + np.asarray(trans_rel, dtype=np.float64)


def esa_score_spec2021(
    rot_rad: np.ndarray,
    trans_rel: np.ndarray,
    rot_precision_deg: float = 0.169,
    trans_precision_rel: float = 0.002173,
) -> np.ndarray:
    """Per-image SPEC2021 score: each term below the labels' own precision counts as 0.

    The defaults are the SPEC2021 thresholds: 0.169 degrees and 2.173 mm per metre.
    """
    rot = np.asarray(rot_rad, dtype=np.float64)
    trans = np.asarray(trans_rel, dtype=np.float64)
    rot = np.where(rot < np.deg2rad(rot_precision_deg), 0.0, rot)
    trans = np.where(trans < trans_precision_rel, 0.0, trans)
    return rot + trans


def pose_score_summary(
    q_gt: np.ndarray,
    r_gt: np.ndarray,
    q_est: np.ndarray,
    r_est: np.ndarray,
    success: np.ndarray | None = None,
) -> OrderedDict:
    """Data-set scores, in the order the tables print them (failures as the worst case)."""
    errors = pose_errors(q_gt, r_gt, q_est, r_est, success)
    if errors.rot_rad.size == 0:
        raise ValueError("no images to score")
    rot_deg = np.rad2deg(errors.rot_rad)
    return OrderedDict(
        [
            ("ESA score", float(np.mean(esa_score(errors.rot_rad, errors.trans_rel)))),
            (
                "ESA score (SPEC2021)",
                float(np.mean(esa_score_spec2021(errors.rot_rad, errors.trans_rel))),
            ),
            ("rot err mean (deg)", float(np.mean(rot_deg))),
            ("rot err median (deg)", float(np.median(rot_deg))),
            ("trans err mean (m)", float(np.mean(errors.trans_m))),
            ("trans err median (m)", float(np.median(errors.trans_m))),
            ("trans err mean (rel)", float(np.mean(errors.trans_rel))),
        ]
    )


def landmark_pixel_error(pred: np.ndarray, gt: np.ndarray, vis: np.ndarray | None = None) -> float:
    """Mean Euclidean distance in pixels over visible landmarks (N x K x 2); NaN if none visible.

    ``vis`` is N x K (or N x K x C as joints_vis, first channel used); a landmark counts where
    it is > 0.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.shape[-1] != 2:
        raise ValueError(
            f"pred and gt must have the same (..., 2) shape, got {pred.shape}, {gt.shape}"
        )
    distance = np.linalg.norm(pred - gt, axis=-1)
    mask = np.ones(distance.shape, dtype=bool)
    if vis is not None:
        vis = np.asarray(vis)
        if vis.ndim == distance.ndim + 1:
            vis = vis[..., 0]
        if vis.shape != distance.shape:
            raise ValueError(f"vis must have shape {distance.shape}, got {vis.shape}")
        mask = vis > 0
    if not np.any(mask):
        return float("nan")
    return float(np.mean(distance[mask]))
