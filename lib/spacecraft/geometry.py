"""Scalar-first quaternion geometry shared by the spacecraft data set, generator and pose solver.

Conventions (SPEED / SPEED+, see docs/spacecraft.md): a quaternion is ``[q0, q1, q2, q3]``
with the scalar first; ``dcm(q)`` is the direction cosine matrix of the spec and a body-frame
point ``p`` lies at ``dcm(q)^T p + r`` in the camera frame (x right, y down, z forward).
OpenCV's pose is therefore ``R_cam_from_body = dcm(q)^T``, ``rvec = Rodrigues(R)``, ``tvec = r``.
scipy's ``Rotation`` stores quaternions scalar-last; :func:`quat_to_scipy` and
:func:`scipy_to_quat` are the only places that reorder components.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = [
    "quat_normalize",
    "quat_canonical",
    "quat_to_dcm",
    "dcm_to_quat",
    "quat_to_scipy",
    "scipy_to_quat",
    "pose_to_rvec_tvec",
    "rvec_tvec_to_pose",
    "body_to_camera",
    "project_points",
    "random_quaternions",
]


def _as_quat_array(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    if q.shape[-1:] != (4,) or q.ndim > 2:
        raise ValueError(f"quaternion(s) must have shape (4,) or (N, 4), got {q.shape}")
    return q


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """Unit quaternion(s) of shape like ``q``; a zero or non-finite norm is a ValueError."""
    q = _as_quat_array(q)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    bad = ~np.isfinite(norm) | (norm < 1e-12)
    if np.any(bad):
        rows = np.flatnonzero(bad.reshape(-1)).tolist()
        raise ValueError(
            f"quaternion of zero or non-finite norm cannot be normalised (rows {rows})"
        )
    return q / norm


def quat_canonical(q: np.ndarray) -> np.ndarray:
    """Unit quaternion(s) with q0 >= 0, the representative of the q / -q pair used in outputs."""
    q = quat_normalize(q)
    return np.where(q[..., :1] < 0, -q, q)


def quat_to_dcm(q: np.ndarray) -> np.ndarray:
    """Direction cosine matrix of the spec, (3, 3) for one quaternion or (N, 3, 3) for N x 4.

    The quaternion is normalised first, so a slightly off-unit label gives a proper rotation.
    """
    q0, q1, q2, q3 = np.moveaxis(quat_normalize(q), -1, 0)
    dcm = np.stack(
        [
            np.stack([q0**2 + q1**2 - q2**2 - q3**2, 2 * (q1 * q2 + q0 * q3),
                      2 * (q1 * q3 - q0 * q2)], axis=-1),
            np.stack([2 * (q1 * q2 - q0 * q3), q0**2 - q1**2 + q2**2 - q3**2,
                      2 * (q2 * q3 + q0 * q1)], axis=-1),
            np.stack([2 * (q1 * q3 + q0 * q2), 2 * (q2 * q3 - q0 * q1),
                      q0**2 - q1**2 - q2**2 + q3**2], axis=-1),
        ],
        axis=-2,
    )
    return dcm


def quat_to_scipy(q: np.ndarray) -> Rotation:
    """scipy Rotation whose matrix is ``R_cam_from_body = dcm(q)^T`` (scalar-last reorder here)."""
    q = quat_normalize(q)
    return Rotation.from_quat(np.concatenate([q[..., 1:], q[..., :1]], axis=-1))


def scipy_to_quat(rotation: Rotation) -> np.ndarray:
    """Scalar-first canonical (q0 >= 0) quaternion(s) of a scipy Rotation; quat_to_scipy inverse."""
    xyzw = np.asarray(rotation.as_quat(), dtype=np.float64)
    return quat_canonical(np.concatenate([xyzw[..., 3:], xyzw[..., :3]], axis=-1))


def dcm_to_quat(dcm: np.ndarray) -> np.ndarray:
    """Canonical scalar-first quaternion(s) of a (N x) 3 x 3 direction cosine matrix.

    A slightly non-orthogonal matrix is projected to the nearest rotation by scipy.
    """
    dcm = np.asarray(dcm, dtype=np.float64)
    if dcm.shape[-2:] != (3, 3) or dcm.ndim > 3:
        raise ValueError(f"dcm must have shape (3, 3) or (N, 3, 3), got {dcm.shape}")
    return scipy_to_quat(Rotation.from_matrix(np.swapaxes(dcm, -1, -2)))


def pose_to_rvec_tvec(q: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV (rvec, tvec) of a pose: rvec = Rodrigues(dcm(q)^T), tvec = r; shapes (…, 3)."""
    rvec = quat_to_scipy(q).as_rotvec()
    tvec = np.asarray(r, dtype=np.float64).reshape(rvec.shape).copy()
    return rvec, tvec


def rvec_tvec_to_pose(rvec: np.ndarray, tvec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q, r) of an OpenCV pose; inverse of :func:`pose_to_rvec_tvec`, q canonical (q0 >= 0)."""
    rvec = np.asarray(rvec, dtype=np.float64)
    rvec = rvec.reshape(-1, 3) if rvec.size > 3 else rvec.reshape(3)
    q = scipy_to_quat(Rotation.from_rotvec(rvec))
    return q, np.asarray(tvec, dtype=np.float64).reshape(rvec.shape).copy()


def body_to_camera(points_body: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Camera-frame coordinates ``dcm(q)^T p + r`` of body points.

    ``points_body`` is M x 3. One pose (q (4,), r (3,)) gives M x 3; N poses (N x 4, N x 3)
    give N x M x 3.
    """
    points = np.asarray(points_body, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points_body must have shape (M, 3), got {points.shape}")
    dcm = quat_to_dcm(q)
    r = np.asarray(r, dtype=np.float64)
    if r.shape != dcm.shape[:-2] + (3,):
        raise ValueError(f"r must have shape {dcm.shape[:-2] + (3,)} to match q, got {r.shape}")
    # p_cam[m, i] = sum_j dcm[j, i] p[m, j]  (dcm transposed)
    return np.einsum("...ji,mj->...mi", dcm, points) + r[..., None, :]


def _distort(
    x: np.ndarray, y: np.ndarray, dist_coeffs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's radial / tangential / thin-prism distortion of normalised coordinates."""
    k = np.zeros(12)
    if dist_coeffs.size not in (4, 5, 8, 12):
        raise ValueError(
            f"dist_coeffs must hold 4, 5, 8 or 12 values (OpenCV order), got {dist_coeffs.size}"
        )
    k[: dist_coeffs.size] = dist_coeffs
    k1, k2, p1, p2, k3, k4, k5, k6, s1, s2, s3, s4 = k
    r2 = x * x + y * y
    r4 = r2 * r2
    r6 = r4 * r2
    radial = (1 + k1 * r2 + k2 * r4 + k3 * r6) / (1 + k4 * r2 + k5 * r4 + k6 * r6)
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) + s1 * r2 + s2 * r4
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y + s3 * r2 + s4 * r4
    return xd, yd


def project_points(
    points_body: np.ndarray,
    q: np.ndarray,
    r: np.ndarray,
    camera_matrix: np.ndarray,
    dist_coeffs: np.ndarray | None = None,
) -> np.ndarray:
    """Pixel coordinates of body points under pose (q, r): M x 2, or N x M x 2 for N poses.

    Pinhole ``K p_cam / z`` with OpenCV's distortion model when ``dist_coeffs`` are given
    (4, 5, 8 or 12 coefficients). Pixel centres sit at integer coordinates, as in OpenCV.
    Points at or behind the camera plane (z <= 0) have no image and come back as NaN.
    """
    camera_matrix = np.asarray(camera_matrix, dtype=np.float64)
    if camera_matrix.shape != (3, 3):
        raise ValueError(f"camera_matrix must be 3 x 3, got {camera_matrix.shape}")
    p_cam = body_to_camera(points_body, q, r)
    z = p_cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(z > 0, p_cam[..., 0] / z, np.nan)
        y = np.where(z > 0, p_cam[..., 1] / z, np.nan)
    if dist_coeffs is not None:
        dist = np.asarray(dist_coeffs, dtype=np.float64).reshape(-1)
        if np.any(dist != 0):
            x, y = _distort(x, y, dist)
    u = camera_matrix[0, 0] * x + camera_matrix[0, 1] * y + camera_matrix[0, 2]
    v = camera_matrix[1, 1] * y + camera_matrix[1, 2]
    return np.stack([u, v], axis=-1)


def random_quaternions(n: int, rng: np.random.Generator) -> np.ndarray:
    """n x 4 unit quaternions uniform on SO(3) (normalised 4-D Gaussians), canonical q0 >= 0."""
    samples = rng.standard_normal((n, 4))
    # A Gaussian 4-vector of (numerically) zero norm has probability zero; redraw it anyway.
    tiny = np.linalg.norm(samples, axis=1) < 1e-9
    while np.any(tiny):
        samples[tiny] = rng.standard_normal((int(tiny.sum()), 4))
        tiny = np.linalg.norm(samples, axis=1) < 1e-9
    return quat_canonical(samples)
