"""Pose from landmarks: confidence gate -> EPnP + RANSAC -> confidence-weighted LM refinement.

This is the stage after heatmap decoding in the spacecraft pipeline (the SPEC2019 winner's
recipe). Bad data never raises: an image whose pose cannot be found comes back as a
:class:`PoseSolution` with ``success=False`` and a reason, so evaluation counts it and goes on.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy.optimize import least_squares

from lib.spacecraft.geometry import project_points, rvec_tvec_to_pose

__all__ = ["PoseSolution", "PoseBatch", "solve_pose", "solve_poses", "agreeing_landmarks",
           "pose_agreement", "consistent_poses", "relative_residuals"]

MIN_LANDMARKS = 4  # PnP needs four correspondences for a unique pose


@dataclass
class PoseSolution:
    """Result for one image; ``q`` / ``r`` are NaN when ``success`` is False.

    ``inliers`` indexes the input landmarks RANSAC kept; ``reproj_err_px`` is the RMS
    reprojection error over them for the returned pose.
    """

    success: bool
    q: np.ndarray = field(default_factory=lambda: np.full(4, np.nan))
    r: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    reason: str = ""
    num_used: int = 0
    inliers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    reproj_err_px: float = float("nan")
    refined: bool = False


@dataclass
class PoseBatch:
    """Poses of B images: q B x 4, r B x 3 (NaN rows for failures), success B, reasons B."""

    q: np.ndarray
    r: np.ndarray
    success: np.ndarray
    reasons: list[str]

    @property
    def num_failed(self) -> int:
        return int(np.count_nonzero(~self.success))


def _failure(reason: str, num_used: int = 0) -> PoseSolution:
    return PoseSolution(success=False, reason=reason, num_used=num_used)


def _projection_with_jacobian(
    params: np.ndarray, points_3d: np.ndarray, camera_matrix: np.ndarray, dist: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV projection (K x 2) and its Jacobian rows (2K x 6) w.r.t. (rvec, tvec)."""
    projected, jacobian = cv2.projectPoints(
        points_3d, params[:3].copy(), params[3:].copy(), camera_matrix, dist
    )
    return projected.reshape(-1, 2), jacobian[:, :6]


def _refine(
    rvec: np.ndarray,
    tvec: np.ndarray,
    points_3d: np.ndarray,
    points_2d: np.ndarray,
    weights: np.ndarray,
    camera_matrix: np.ndarray,
    dist: np.ndarray,
) -> np.ndarray | None:
    """Levenberg-Marquardt on sqrt(w) * (projection - observation); None if it breaks down."""
    sqrt_w = np.repeat(np.sqrt(weights), 2)

    def residuals(params: np.ndarray) -> np.ndarray:
        projected, _ = _projection_with_jacobian(params, points_3d, camera_matrix, dist)
        return sqrt_w * (projected - points_2d).reshape(-1)

    def jacobian(params: np.ndarray) -> np.ndarray:
        _, jac = _projection_with_jacobian(params, points_3d, camera_matrix, dist)
        return sqrt_w[:, None] * jac

    start = np.concatenate([rvec.reshape(3), tvec.reshape(3)])
    try:
        result = least_squares(residuals, start, jac=jacobian, method="lm")
    except (ValueError, cv2.error, np.linalg.LinAlgError):
        return None
    if not np.all(np.isfinite(result.x)) or result.x[5] <= 0:
        return None
    return result.x


def solve_pose(
    landmarks_2d: np.ndarray,
    confidences: np.ndarray | None,
    landmarks_3d: np.ndarray,
    camera_matrix: np.ndarray,
    dist_coeffs: np.ndarray | None = None,
    conf_threshold: float = 0.1,
    ransac_reproj_err: float = 5.0,
    ransac_iterations: int = 100,
    ransac_confidence: float = 0.99,
    refine: bool = True,
    ransac_retries: int = 0,
) -> PoseSolution:
    """Pose (q, r) of one image from N decoded landmarks (full-image pixels) and confidences.

    Landmarks whose confidence is at or below ``conf_threshold`` (or whose coordinates are not
    finite) are dropped; ``cv2.solvePnPRansac`` with EPnP gives the initial pose and inliers,
    then LM refines (rvec, tvec) on the inliers with residuals weighted by sqrt(confidence).
    Where RANSAC finds no pose, up to ``ransac_retries`` more tries double the tolerance each
    time. ``confidences=None`` means all ones.
    """
    points_2d = np.asarray(landmarks_2d, dtype=np.float64)
    points_3d = np.asarray(landmarks_3d, dtype=np.float64)
    if points_2d.ndim != 2 or points_2d.shape[1] != 2:
        raise ValueError(f"landmarks_2d must be N x 2, got {points_2d.shape}")
    if points_3d.shape != (len(points_2d), 3):
        raise ValueError(f"landmarks_3d must be {len(points_2d)} x 3, got {points_3d.shape}")
    conf = (
        np.ones(len(points_2d))
        if confidences is None
        else np.asarray(confidences, dtype=np.float64).reshape(-1)
    )
    if conf.shape != (len(points_2d),):
        raise ValueError(f"confidences must hold {len(points_2d)} values, got {conf.shape}")
    camera_matrix = np.asarray(camera_matrix, dtype=np.float64)
    dist = np.zeros(5) if dist_coeffs is None else np.asarray(dist_coeffs, np.float64).reshape(-1)

    usable = np.flatnonzero(
        np.isfinite(conf) & (conf > conf_threshold) & np.all(np.isfinite(points_2d), axis=1)
    )
    if len(usable) < MIN_LANDMARKS:
        return _failure(
            f"only {len(usable)} landmarks above confidence {conf_threshold} "
            f"(need {MIN_LANDMARKS})",
            len(usable),
        )
    spread = float(np.sqrt(np.sum(np.var(points_2d[usable], axis=0))))
    if spread < 1.0:
        return _failure(f"usable landmarks collapse to one point (spread {spread:.2g} px)",
                        len(usable))
    for attempt in range(max(int(ransac_retries), 0) + 1):
        # each retry doubles the tolerance: a pose from looser inliers beats none at all
        solution = _ransac_pose(points_2d, points_3d, conf, usable, camera_matrix, dist,
                                ransac_reproj_err * 2**attempt, ransac_iterations,
                                ransac_confidence, refine)
        if solution.success:
            break
    return solution


def _ransac_pose(points_2d: np.ndarray, points_3d: np.ndarray, conf: np.ndarray,
                 usable: np.ndarray, camera_matrix: np.ndarray, dist: np.ndarray,
                 ransac_reproj_err: float, ransac_iterations: int, ransac_confidence: float,
                 refine: bool) -> PoseSolution:
    """EPnP + RANSAC at one tolerance, then the weighted LM refinement of the inliers."""
    try:
        found, rvec, tvec, inliers = cv2.solvePnPRansac(
            points_3d[usable],
            points_2d[usable],
            camera_matrix,
            dist,
            iterationsCount=int(ransac_iterations),
            reprojectionError=float(ransac_reproj_err),
            confidence=float(ransac_confidence),
            flags=cv2.SOLVEPNP_EPNP,
        )
    except cv2.error as err:
        first_line = str(err).strip().splitlines()[-1] if str(err).strip() else "cv2.error"
        return _failure(f"solvePnPRansac failed: {first_line}", len(usable))
    if not found or inliers is None:
        return _failure("RANSAC found no consensus pose", len(usable))
    inlier_index = usable[np.asarray(inliers).reshape(-1)]
    if len(inlier_index) < MIN_LANDMARKS:
        return _failure(
            f"RANSAC kept {len(inlier_index)} inliers (need {MIN_LANDMARKS})", len(usable)
        )
    inlier_spread = float(np.sqrt(np.sum(np.var(points_2d[inlier_index], axis=0))))
    if inlier_spread <= 2 * ransac_reproj_err:
        # Inliers within the tolerance of one another fit a spacecraft shrunk to a point,
        # arbitrarily far away: no pose can be told from them.
        return _failure(f"RANSAC inliers too close together to fix a pose (spread "
                        f"{inlier_spread:.3g} px)", len(usable))
    params = np.concatenate([np.asarray(rvec).reshape(3), np.asarray(tvec).reshape(3)])
    if not np.all(np.isfinite(params)) or params[5] <= 0:
        return _failure("RANSAC pose is not finite or lies behind the camera", len(usable))

    refined = False
    if refine:
        better = _refine(
            params[:3], params[3:], points_3d[inlier_index], points_2d[inlier_index],
            np.maximum(conf[inlier_index], 1e-6), camera_matrix, dist,
        )
        if better is not None:
            params, refined = better, True
    projected, _ = _projection_with_jacobian(params, points_3d[inlier_index], camera_matrix, dist)
    rms = float(np.sqrt(np.mean(np.sum((projected - points_2d[inlier_index]) ** 2, axis=1))))
    if not rms <= ransac_reproj_err:
        # OpenCV accepts a minimal set (4 points) without checking it; so do we, here.
        return _failure(
            f"pose does not fit its inliers (RMS {rms:.3g} px > {ransac_reproj_err} px)",
            len(usable),
        )
    q, r = rvec_tvec_to_pose(params[:3], params[3:])
    return PoseSolution(
        success=True, q=q, r=r, num_used=len(usable), inliers=inlier_index,
        reproj_err_px=rms, refined=refined,
    )


def pnp_options(cfg: Any) -> dict[str, Any]:
    """The solver's keyword arguments from the TEST.PNP_* keys of a config."""
    return dict(conf_threshold=cfg.TEST.PNP_CONF_THRE,
                ransac_reproj_err=cfg.TEST.PNP_RANSAC_REPROJ_ERR,
                ransac_iterations=cfg.TEST.PNP_RANSAC_ITERS,
                ransac_confidence=cfg.TEST.PNP_RANSAC_CONFIDENCE,
                ransac_retries=cfg.TEST.PNP_RANSAC_RETRIES,
                refine=cfg.TEST.PNP_REFINE)


def solve_poses(
    landmarks_2d: np.ndarray,
    confidences: np.ndarray | None,
    landmarks_3d: np.ndarray,
    camera_matrix: np.ndarray,
    dist_coeffs: np.ndarray | None = None,
    **options: float | int | bool,
) -> PoseBatch:
    """:func:`solve_pose` for B images (landmarks B x N x 2, confidences B x N or None)."""
    points_2d = np.asarray(landmarks_2d, dtype=np.float64)
    if points_2d.ndim != 3 or points_2d.shape[2] != 2:
        raise ValueError(f"landmarks_2d must be B x N x 2, got {points_2d.shape}")
    batch = len(points_2d)
    conf = None if confidences is None else np.asarray(confidences, dtype=np.float64)
    if conf is not None:
        conf = conf.reshape(batch, -1)
    q = np.full((batch, 4), np.nan)
    r = np.full((batch, 3), np.nan)
    success = np.zeros(batch, dtype=bool)
    reasons = [""] * batch

    def solve(index: int) -> PoseSolution:
        return solve_pose(points_2d[index], None if conf is None else conf[index],
                          landmarks_3d, camera_matrix, dist_coeffs, **options)

    # OpenCV's RANSAC lets the GIL go and seeds its generator per call: threads give the same
    # poses, on as many threads as OpenCV may use
    threads = min(cv2.getNumThreads(), batch)
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            solutions = list(pool.map(solve, range(batch)))
    else:
        solutions = [solve(index) for index in range(batch)]
    for index, solution in enumerate(solutions):
        success[index] = solution.success
        reasons[index] = solution.reason
        if solution.success:
            q[index], r[index] = solution.q, solution.r
    return PoseBatch(q, r, success, reasons)


def relative_residuals(landmarks: np.ndarray, poses: PoseBatch, landmarks_3d: np.ndarray,
                       camera_matrix: np.ndarray, dist_coeffs: np.ndarray | None) -> np.ndarray:
    """N x J: how far each image's PnP pose reprojects each landmark (N x J x 2+, image pixels)
    from it, over the size (sqrt(w h)) of the landmarks' box; inf where PnP failed.
    Size-relative, so near and far spacecraft compare."""
    points = np.asarray(landmarks, dtype=np.float64)
    residuals = np.full(points.shape[:2], np.inf)
    for index in np.flatnonzero(poses.success):
        projected = project_points(landmarks_3d, poses.q[index], poses.r[index], camera_matrix,
                                   dist_coeffs)
        size = np.sqrt(np.prod(np.ptp(points[index, :, :2], axis=0)))
        distance = np.linalg.norm(projected - points[index, :, :2], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            residuals[index] = np.where(distance > 0, distance / size, 0.0)
    return residuals


def agreeing_landmarks(landmarks: np.ndarray, poses: PoseBatch, landmarks_3d: np.ndarray,
                       camera_matrix: np.ndarray, dist_coeffs: np.ndarray | None,
                       tolerance: float) -> np.ndarray:
    """N x J: which landmarks each image's PnP pose reprojects within ``tolerance`` x the size
    of the landmarks' box (:func:`relative_residuals`); all False where PnP failed."""
    return relative_residuals(landmarks, poses, landmarks_3d, camera_matrix,
                              dist_coeffs) <= tolerance


def pose_agreement(landmarks: np.ndarray, poses: PoseBatch, landmarks_3d: np.ndarray,
                   camera_matrix: np.ndarray, dist_coeffs: np.ndarray | None,
                   tolerance: float) -> np.ndarray:
    """How well each image's landmarks N x J x 3 back their own PnP pose: their confidences,
    each weighted by exp(-u^2 / 2) of its reprojection residual u in units of ``tolerance`` x
    the size of the landmarks' box; 0 where PnP failed. Graded, not a count of the
    :func:`agreeing_landmarks`: the landmarks of a young model often all miss by more than
    the tolerance, and a count then ties every crop at 0 (in the slow host's demo, the first
    candidate, a 15 px box on a part of the spacecraft, won so: ESA 2.6 for that image)."""
    scaled = relative_residuals(landmarks, poses, landmarks_3d, camera_matrix,
                                dist_coeffs) / tolerance
    return np.sum(np.asarray(landmarks)[:, :, 2] * np.exp(-0.5 * np.square(scaled)), axis=1)


def consistent_poses(landmarks: np.ndarray, poses: PoseBatch, landmarks_3d: np.ndarray,
                     camera_matrix: np.ndarray, dist_coeffs: np.ndarray | None,
                     tolerance: float, min_agreeing: float, max_distance: float = 0.0
                     ) -> np.ndarray:
    """N bools: the images whose pose is worth a pseudo-label, i.e. PnP succeeded, at least
    the fraction ``min_agreeing`` of the landmarks agree with it (:func:`agreeing_landmarks`),
    and it lies in front of the camera within ``max_distance`` metres (0: no limit). A
    wrong pose rarely explains most landmarks of a young model at once."""
    agree = agreeing_landmarks(landmarks, poses, landmarks_3d, camera_matrix, dist_coeffs,
                               tolerance)
    enough = agree.mean(axis=1) >= min_agreeing if agree.shape[1] else np.zeros(len(agree), bool)
    with np.errstate(invalid="ignore"):
        distance = np.linalg.norm(poses.r, axis=1)
        placed = (poses.r[:, 2] > 0) & ((distance <= max_distance) if max_distance > 0
                                        else np.isfinite(distance))
    return poses.success & enough & placed
