"""Keypoint NMS driven by Object Keypoint Similarity (OKS), as in the original HRNet repository.

OKS between a reference pose g and a candidate pose d, per joint j:
    e_j = ((xd_j - xg_j)^2 + (yd_j - yg_j)^2) / (2 * sigma_j)^2 / ((area_g + area_d) / 2 + eps) / 2
    oks = mean_j exp(-e_j)
With ``in_vis_thre`` set, only joints whose *candidate* visibility score exceeds it are averaged
(0 when none do). The original wrote ``list(vg > t) and list(vd > t)``, which in Python evaluates
to the candidate's list alone; we reproduce that behaviour, so the reference pose's visibilities
are ignored and the matrix below is not symmetric.

Poses come as the original's ``kpts_db``: a list of dicts with 'keypoints' (J x 3: x, y, score),
'score' and 'area'.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# The 17 per-keypoint constants of the COCO keypoint benchmark (nose, eyes, ears, shoulders,
# elbows, wrists, hips, knees, ankles), already divided by 10 as the COCO evaluation does.
# fmt: off
COCO_SIGMAS = np.array(
    [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87,
     0.89, 0.89]
) / 10.0
# fmt: on
COCO_SIGMAS.setflags(write=False)  # shared default: nobody may edit it in place


def oks_iou(
    g: Any,
    d: Any,
    a_g: float,
    a_d: Any,
    sigmas: Any = None,
    in_vis_thre: float | None = None,
) -> np.ndarray:
    """OKS of one reference pose ``g`` against each candidate in ``d``.

    g: 3J flat (x1, y1, v1, x2, ...) or J x 3; d: M x 3J or M x J x 3; a_g: area of g;
    a_d: M areas (or one scalar for all); sigmas: J values (default COCO); returns M values.
    Unlike the original, array-like sigmas (e.g. a list) are honoured, not silently replaced.
    """
    g_arr = np.asarray(g)
    d_arr = np.asarray(d)
    if g_arr.ndim == 1:
        if g_arr.size % 3:
            raise ValueError(f"oks_iou: flat g must hold 3 values per joint, got {g_arr.size}")
        g_arr = g_arr.reshape(-1, 3)
    if d_arr.ndim == 2:
        if d_arr.shape[1] % 3:
            raise ValueError(f"oks_iou: d must be M x 3J, got shape {d_arr.shape}")
        d_arr = d_arr.reshape(d_arr.shape[0], -1, 3)
    _check_pose_shape("oks_iou: g", g_arr.shape, expected_ndim=2)
    _check_pose_shape("oks_iou: d", d_arr.shape, expected_ndim=3)
    if d_arr.shape[1] != g_arr.shape[0]:
        raise ValueError(f"oks_iou: g has {g_arr.shape[0]} joints but d has {d_arr.shape[1]}")
    num_candidates = d_arr.shape[0]
    a_d_arr = np.asarray(a_d)
    if a_d_arr.ndim == 0:
        a_d_arr = np.full(num_candidates, a_d_arr, dtype=a_d_arr.dtype)
    if a_d_arr.shape != (num_candidates,):
        raise ValueError(
            f"oks_iou: a_d must hold one area per candidate ({num_candidates}), "
            f"got shape {a_d_arr.shape}"
        )
    sigmas_arr = _resolve_sigmas(sigmas, g_arr.shape[0])
    return _oks_block(g_arr[None], d_arr, np.asarray([a_g]), a_d_arr, sigmas_arr, in_vis_thre)[0]


def oks_nms(
    kpts_db: Sequence[dict],
    thresh: float,
    sigmas: Any = None,
    in_vis_thre: float | None = None,
) -> list[int]:
    """Greedy OKS NMS: indices into ``kpts_db`` of the kept poses, best score first.

    A pose is dropped when its OKS with an already kept pose is above ``thresh`` (the original
    keeps OKS <= thresh). The whole candidates x candidates OKS matrix is computed with numpy
    first; the greedy pass then only reads rows of it, so the keep list equals the original's
    per-candidate loop (``_oks_nms_loop``).
    """
    if len(kpts_db) == 0:
        return []
    scores, kpts, areas = _unpack_kpts_db(kpts_db)
    sigmas_arr = _resolve_sigmas(sigmas, kpts.shape[1])
    order = scores.argsort()[::-1]
    # survivors[p, q]: sorted pose q survives a pick of pose p
    survivors = _oks_survivors(kpts[order], areas[order], sigmas_arr, in_vis_thre, thresh)

    alive = np.ones(len(order), dtype=bool)
    keep: list[int] = []
    pos = 0
    while True:
        keep.append(int(order[pos]))
        alive[pos] = False
        alive[pos + 1 :] &= survivors[pos, pos + 1 :]
        remaining = np.flatnonzero(alive[pos + 1 :])
        if remaining.size == 0:
            return keep
        pos += 1 + int(remaining[0])


def soft_oks_nms(
    kpts_db: Sequence[dict],
    thresh: float,
    sigmas: Any = None,
    in_vis_thre: float | None = None,
    *,
    max_dets: int = 20,
) -> list[int]:
    """Soft OKS NMS: repeatedly pick the best-scored pose and decay the others' scores.

    After each pick every remaining pose is rescored ``score * exp(-oks^2 / thresh)`` against
    the pick and the remainder re-sorted; stops after ``max_dets`` picks (20 in the original).
    Returns the picked indices in pick order.
    """
    if len(kpts_db) == 0:
        return []
    scores, kpts, areas = _unpack_kpts_db(kpts_db)
    sigmas_arr = _resolve_sigmas(sigmas, kpts.shape[1])
    order = scores.argsort()[::-1]
    scores = scores[order]
    keep: list[int] = []
    while order.size > 0 and len(keep) < max_dets:
        best, order = order[0], order[1:]
        keep.append(int(best))
        oks = _oks_block(
            kpts[best][None], kpts[order], areas[best][None], areas[order], sigmas_arr, in_vis_thre
        )[0]
        scores = scores[1:] * np.exp(-(oks**2) / thresh)
        resort = scores.argsort()[::-1]
        order = order[resort]
        scores = scores[resort]
    return keep


def _oks_survivors(
    kpts: np.ndarray,
    areas: np.ndarray,
    sigmas: np.ndarray,
    in_vis_thre: float | None,
    thresh: float,
) -> np.ndarray:
    """N x N booleans ``oks <= thresh``, with the exponentials computed only where needed.

    OKS is a mean of exp(-e_j), so it cannot exceed exp(-min_j e_j): pairs whose closest joint
    is already below the threshold survive without evaluating the other exponentials (most
    pairs of a crowded image belong to different people). The remaining pairs get exactly the
    operations of ``_oks_block``, so the decisions equal the original's.
    """
    variances = (sigmas * 2) ** 2
    dx = kpts[None, :, :, 0] - kpts[:, None, :, 0]
    dy = kpts[None, :, :, 1] - kpts[:, None, :, 1]
    scale = (areas[:, None] + areas[None, :]) / 2 + np.spacing(1)
    e = (dx**2 + dy**2) / variances / scale[:, :, None] / 2
    # a hair of margin keeps a pair whose bound sits on the threshold for the exact test
    candidates = np.exp(-e.min(axis=-1)) > thresh * (1 - 1e-12)
    survivors = np.ones(candidates.shape, dtype=bool)
    rows, cols = np.nonzero(candidates)
    if rows.size:
        e_close = e[rows, cols]
        similarity = np.exp(-e_close)
        if in_vis_thre is None:
            oks = similarity.sum(axis=-1) / e.shape[-1]
        else:  # the original's quirk: only the candidate's visibilities select joints
            visible = kpts[cols, :, 2] > in_vis_thre
            counts = visible.sum(axis=-1)
            sums = np.where(visible, similarity, 0.0).sum(axis=-1)
            oks = np.divide(sums, counts, out=np.zeros(sums.shape), where=counts > 0)
        survivors[rows, cols] = oks <= thresh
    return survivors


def _oks_block(
    g_kpts: np.ndarray,
    d_kpts: np.ndarray,
    g_areas: np.ndarray,
    d_areas: np.ndarray,
    sigmas: np.ndarray,
    in_vis_thre: float | None,
) -> np.ndarray:
    """G x D OKS, element-wise the same float operations (and dtypes) as the original loop."""
    variances = (sigmas * 2) ** 2
    dx = d_kpts[None, :, :, 0] - g_kpts[:, None, :, 0]
    dy = d_kpts[None, :, :, 1] - g_kpts[:, None, :, 1]
    scale = (g_areas[:, None] + d_areas[None, :]) / 2 + np.spacing(1)
    e = (dx**2 + dy**2) / variances / scale[:, :, None] / 2
    similarity = np.exp(-e)
    if in_vis_thre is None:
        return similarity.sum(axis=-1) / e.shape[-1]
    # Original quirk kept on purpose: only the candidate's visibilities select joints.
    visible = np.broadcast_to(d_kpts[None, :, :, 2] > in_vis_thre, e.shape)
    counts = visible.sum(axis=-1)
    sums = np.where(visible, similarity, 0.0).sum(axis=-1)
    return np.divide(sums, counts, out=np.zeros(sums.shape), where=counts > 0)


def _unpack_kpts_db(kpts_db: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores (N,), keypoints (N x J x 3) and areas (N,), keeping the caller's dtypes."""
    for index, entry in enumerate(kpts_db):
        for key in ("keypoints", "score", "area"):
            if key not in entry:
                raise KeyError(f"kpts_db[{index}] has no '{key}' (needs keypoints, score, area)")
        shape = np.shape(entry["keypoints"])
        if len(shape) != 2 or shape[1] != 3:
            raise ValueError(f"kpts_db[{index}]['keypoints'] must be J x 3, got shape {shape}")
        if shape[0] != np.shape(kpts_db[0]["keypoints"])[0]:
            raise ValueError(
                f"kpts_db[{index}]['keypoints'] has {shape[0]} joints, "
                f"kpts_db[0] has {np.shape(kpts_db[0]['keypoints'])[0]}"
            )
    scores = np.array([entry["score"] for entry in kpts_db])
    kpts = np.array([entry["keypoints"] for entry in kpts_db])
    areas = np.array([entry["area"] for entry in kpts_db])
    for name, values in (("score", scores), ("area", areas)):
        if values.ndim != 1:
            raise ValueError(f"kpts_db: every '{name}' must be a scalar, got shape {values.shape}")
    return scores, kpts, areas


def _resolve_sigmas(sigmas: Any, num_joints: int) -> np.ndarray:
    """Per-joint sigmas (COCO's when None), checked against the number of joints."""
    sigmas_arr = COCO_SIGMAS if sigmas is None else np.asarray(sigmas, dtype=np.float64)
    if sigmas_arr.shape != (num_joints,):
        source = "default COCO sigmas" if sigmas is None else "sigmas"
        raise ValueError(
            f"{source} have shape {sigmas_arr.shape} but the poses have {num_joints} joints"
        )
    return sigmas_arr


def _check_pose_shape(name: str, shape: tuple[int, ...], expected_ndim: int) -> None:
    if len(shape) != expected_ndim or shape[-1] != 3:
        raise ValueError(f"{name} must hold (x, y, score) triples per joint, got shape {shape}")


def _oks_iou_loop(g, d, a_g, a_d, sigmas=None, in_vis_thre=None) -> np.ndarray:
    """Reference: the original one-candidate-at-a-time OKS (flat g of 3J, d of M x 3J)."""
    sigmas_arr = COCO_SIGMAS if sigmas is None else np.asarray(sigmas)
    variances = (sigmas_arr * 2) ** 2
    xg, yg = g[0::3], g[1::3]
    result = np.zeros(d.shape[0])
    for n_d in range(d.shape[0]):
        xd, yd, vd = d[n_d, 0::3], d[n_d, 1::3], d[n_d, 2::3]
        scale = (a_g + a_d[n_d]) / 2 + np.spacing(1)
        e = ((xd - xg) ** 2 + (yd - yg) ** 2) / variances / scale / 2
        if in_vis_thre is not None:
            e = e[vd > in_vis_thre]
        result[n_d] = np.sum(np.exp(-e)) / e.shape[0] if e.shape[0] != 0 else 0.0
    return result


def _oks_nms_loop(kpts_db, thresh, sigmas=None, in_vis_thre=None) -> list[int]:
    """Reference: the original greedy loop, one OKS row computed per kept pose, Python inner loop.

    Kept for tests and ``tools/bench_nms.py``; use ``oks_nms``.
    """
    if len(kpts_db) == 0:
        return []
    scores = np.array([entry["score"] for entry in kpts_db])
    kpts = np.array([np.asarray(entry["keypoints"]).flatten() for entry in kpts_db])
    areas = np.array([entry["area"] for entry in kpts_db])
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        overlap = _oks_iou_loop(
            kpts[best], kpts[rest], areas[best], areas[rest], sigmas, in_vis_thre
        )
        order = rest[overlap <= thresh]
    return keep
