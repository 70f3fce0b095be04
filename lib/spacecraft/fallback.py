"""A pose for every image: guesses for the images whose PnP failed.

A submission needs a pose in every row, and the score counts whatever the row holds, so a
failed image should get the best guess there is rather than the identity. The guesses, tried in
this order for each failed image:

1. EPnP on every landmark with finite coordinates, confidence ignored (no RANSAC): the decoded
   landmarks usually still carry the pose when RANSAC found no consensus at its tolerance;
2. the coarse model's landmarks (two-stage runs), through the same solver, then EPnP;
3. the prior pose: the training set's mean attitude and position (or, without one, the mean of
   the images solved in this batch, else the identity at the origin).

With ``max_distance`` (TEST.SPEED_MAX_DISTANCE) a pose farther from the camera than that is no
pose at all: a solved one counts as failed and a guess is passed over. EPnP on a handful of
landmarks bunched together can put the spacecraft kilometres away, and one such row costs the
mean score more than a hundred good ones gain.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from lib.spacecraft.geometry import rvec_tvec_to_pose
from lib.spacecraft.pose_solver import MIN_LANDMARKS, PoseBatch, solve_pose

__all__ = ["POSE_SOURCES", "FilledPoses", "mean_pose", "epnp_pose", "fill_failed_poses"]

# Where each image's written pose came from (FilledPoses.source indexes this tuple).
POSE_SOURCES = ("PnP", "EPnP on all landmarks", "coarse landmarks", "prior pose")


@dataclass(frozen=True)
class FilledPoses:
    """q N x 4 and r N x 3, all finite, and per image the index into POSE_SOURCES."""

    q: np.ndarray
    r: np.ndarray
    source: np.ndarray

    def counts(self) -> OrderedDict:
        """Images per fallback source (PnP itself left out), in POSE_SOURCES order."""
        return OrderedDict((name, int(np.count_nonzero(self.source == index)))
                           for index, name in enumerate(POSE_SOURCES) if index > 0)


def mean_pose(q: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean attitude (the unit eigenvector of the largest eigenvalue of sum q q^T, which
    ignores the q / -q sign; scalar part made non-negative) and the mean position."""
    q = np.asarray(q, dtype=np.float64).reshape(-1, 4)
    r = np.asarray(r, dtype=np.float64).reshape(-1, 3)
    if len(q) == 0 or len(r) == 0:
        raise ValueError("the mean pose of no poses is undefined")
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    _, vectors = np.linalg.eigh(q.T @ q)
    average = vectors[:, -1]
    return (average if average[0] >= 0 else -average), r.mean(axis=0)


def epnp_pose(points_2d: np.ndarray, points_3d: np.ndarray, camera_matrix: np.ndarray,
              dist_coeffs: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(q, r) by EPnP on every landmark with finite coordinates, or None where there are fewer
    than four, OpenCV refuses them, or the pose is not finite or lies behind the camera."""
    points_2d = np.asarray(points_2d, dtype=np.float64)
    finite = np.all(np.isfinite(points_2d), axis=1)
    if np.count_nonzero(finite) < MIN_LANDMARKS:
        return None
    dist = np.zeros(5) if dist_coeffs is None else np.asarray(dist_coeffs, np.float64)
    try:
        found, rvec, tvec = cv2.solvePnP(np.asarray(points_3d, np.float64)[finite],
                                         points_2d[finite], np.asarray(camera_matrix, np.float64),
                                         dist, flags=cv2.SOLVEPNP_EPNP)
    except cv2.error:
        return None
    params = np.concatenate([np.asarray(rvec).reshape(3), np.asarray(tvec).reshape(3)])
    if not found or not np.all(np.isfinite(params)) or params[5] <= 0:
        return None
    return rvec_tvec_to_pose(params[:3], params[3:])


def fill_failed_poses(poses: PoseBatch, landmarks: np.ndarray, landmarks_3d: np.ndarray,
                      camera_matrix: np.ndarray, dist_coeffs: np.ndarray | None,
                      coarse_landmarks: np.ndarray | None = None,
                      prior: tuple[np.ndarray, np.ndarray] | None = None,
                      max_distance: float = 0.0, **pnp_options: Any) -> FilledPoses:
    """Every image's pose: the solver's where it succeeded, else the first guess that works
    (module docstring). ``landmarks`` (and ``coarse_landmarks``) are N x J x 3 (x, y, conf);
    ``max_distance`` > 0 refuses poses farther away (metres); ``pnp_options`` are the solver's
    keyword arguments (lib.spacecraft.pose_solver.pnp_options) for the coarse landmarks."""
    q = np.array(poses.q, dtype=np.float64)
    r = np.array(poses.r, dtype=np.float64)
    source = np.zeros(len(q), dtype=np.int64)

    def plausible(guess: tuple[np.ndarray, np.ndarray] | None
                  ) -> tuple[np.ndarray, np.ndarray] | None:
        too_far = guess is not None and max_distance > 0 and np.linalg.norm(guess[1]) > max_distance
        return None if too_far else guess

    solved = np.asarray(poses.success, dtype=bool).copy()
    if max_distance > 0:
        solved &= np.linalg.norm(r, axis=1) <= max_distance
    failed = np.flatnonzero(~solved)
    if len(failed) == 0:
        return FilledPoses(q, r, source)
    if prior is None:
        prior = (mean_pose(q[solved], r[solved]) if solved.any()
                 else (np.array([1.0, 0.0, 0.0, 0.0]), np.zeros(3)))
    for index in failed:
        guess, origin = plausible(epnp_pose(landmarks[index, :, :2], landmarks_3d,
                                            camera_matrix, dist_coeffs)), 1
        if guess is None and coarse_landmarks is not None:
            coarse = coarse_landmarks[index]
            solution = solve_pose(coarse[:, :2], coarse[:, 2], landmarks_3d, camera_matrix,
                                  dist_coeffs, **pnp_options)
            guess = plausible((solution.q, solution.r) if solution.success else None)
            guess = guess or plausible(epnp_pose(coarse[:, :2], landmarks_3d, camera_matrix,
                                                 dist_coeffs))
            origin = 2
        if guess is None:
            guess, origin = prior, 3
        q[index], r[index] = guess
        source[index] = origin
    return FilledPoses(q, r, source)
