"""Quaternion convention, projection and OpenCV / scipy conversions (lib/spacecraft/geometry.py)."""
import cv2
import numpy as np
import pytest

from lib.spacecraft.geometry import (
    dcm_to_quat,
    pose_to_rvec_tvec,
    project_points,
    quat_canonical,
    quat_normalize,
    quat_to_dcm,
    quat_to_scipy,
    random_quaternions,
    rvec_tvec_to_pose,
    scipy_to_quat,
)

FX = 0.0176 / 5.86e-6  # SPEED: 3003.41 px
K = np.array([[FX, 0.0, 960.0], [0.0, FX, 600.0], [0.0, 0.0, 1.0]])
HALF = np.sqrt(0.5)


def test_identity_projection_by_hand():
    pixel = project_points(np.array([[1.0, 0.0, 0.0]]), [1, 0, 0, 0], [0, 0, 10], K)
    np.testing.assert_allclose(pixel, [[960.0 + FX * 0.1, 600.0]], atol=1e-9)
    assert FX == pytest.approx(3003.41, abs=0.01)


def test_quarter_turn_about_z_by_hand():
    # q0 = q3 = sqrt(1/2): the spec formula gives dcm = [[0, 1, 0], [-1, 0, 0], [0, 0, 1]],
    # so the body x axis maps to dcm^T (1, 0, 0) = (0, 1, 0): one tenth of fx below the centre.
    q = [HALF, 0.0, 0.0, HALF]
    np.testing.assert_allclose(quat_to_dcm(q), [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-12)
    pixel = project_points(np.array([[1.0, 0.0, 0.0]]), q, [0, 0, 10], K)
    np.testing.assert_allclose(pixel, [[960.0, 600.0 + FX * 0.1]], atol=1e-9)


def test_quarter_turn_about_x_by_hand():
    # q0 = q1 = sqrt(1/2): dcm = [[1, 0, 0], [0, 0, 1], [0, -1, 0]]; body z -> camera -y.
    q = [HALF, HALF, 0.0, 0.0]
    np.testing.assert_allclose(quat_to_dcm(q), [[1, 0, 0], [0, 0, 1], [0, -1, 0]], atol=1e-12)
    pixels = project_points(np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), q, [0, 0, 10], K)
    np.testing.assert_allclose(pixels, [[960.0, 600.0 - FX * 0.1], [960.0, 600.0]], atol=1e-9)


def test_dcm_is_orthonormal_and_vectorised():
    q = random_quaternions(50, np.random.default_rng(0))
    dcm = quat_to_dcm(q)
    assert dcm.shape == (50, 3, 3)
    np.testing.assert_allclose(dcm @ np.swapaxes(dcm, 1, 2), np.broadcast_to(np.eye(3), dcm.shape),
                               atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(dcm), 1.0, atol=1e-12)
    np.testing.assert_allclose(dcm[7], quat_to_dcm(q[7]), atol=1e-15)


def test_round_trips_dcm_scipy_and_rvec():
    q = random_quaternions(30, np.random.default_rng(1))
    np.testing.assert_allclose(dcm_to_quat(quat_to_dcm(q)), q, atol=1e-12)
    np.testing.assert_allclose(scipy_to_quat(quat_to_scipy(q)), q, atol=1e-12)
    # scipy's matrix (scalar-last input) is R_cam_from_body = dcm^T.
    np.testing.assert_allclose(quat_to_scipy(q).as_matrix(), np.swapaxes(quat_to_dcm(q), 1, 2),
                               atol=1e-12)
    r = np.array([0.3, -0.2, 8.0])
    rvec, tvec = pose_to_rvec_tvec(q[0], r)
    rotation, _ = cv2.Rodrigues(rvec)
    np.testing.assert_allclose(rotation, quat_to_dcm(q[0]).T, atol=1e-12)
    np.testing.assert_allclose(tvec, r)
    q_back, r_back = rvec_tvec_to_pose(rvec.reshape(3, 1), tvec.reshape(3, 1))
    np.testing.assert_allclose(q_back, q[0], atol=1e-12)
    np.testing.assert_allclose(r_back, r)


def test_q_and_minus_q_are_the_same_attitude():
    q = random_quaternions(5, np.random.default_rng(2))
    np.testing.assert_allclose(quat_to_dcm(-q), quat_to_dcm(q), atol=1e-15)
    np.testing.assert_allclose(quat_canonical(-q), q, atol=1e-15)
    points = np.random.default_rng(3).uniform(-0.5, 0.5, (7, 3))
    np.testing.assert_allclose(project_points(points, -q[0], [0, 0, 9], K),
                               project_points(points, q[0], [0, 0, 9], K), atol=1e-9)


def test_projection_matches_opencv_with_distortion():
    rng = np.random.default_rng(4)
    points = rng.uniform(-0.6, 0.6, (11, 3))
    q = random_quaternions(1, rng)[0]
    r = np.array([0.4, -0.3, 7.0])
    dist = np.array([-0.22, 0.11, 0.001, -0.002, 0.03])
    rvec, tvec = pose_to_rvec_tvec(q, r)
    expected, _ = cv2.projectPoints(points, rvec, tvec, K, dist)
    np.testing.assert_allclose(project_points(points, q, r, K, dist), expected.reshape(-1, 2),
                               atol=1e-8)


def test_batched_projection_equals_one_by_one():
    rng = np.random.default_rng(5)
    points = rng.uniform(-0.5, 0.5, (6, 3))
    q = random_quaternions(4, rng)
    r = np.column_stack([rng.uniform(-1, 1, (4, 2)), rng.uniform(5, 10, 4)])
    batch = project_points(points, q, r, K)
    assert batch.shape == (4, 6, 2)
    for i in range(4):
        np.testing.assert_allclose(batch[i], project_points(points, q[i], r[i], K), atol=1e-9)


def test_points_behind_camera_are_nan():
    pixels = project_points(np.array([[0.0, 0.0, -20.0], [0.0, 0.0, 0.0]]), [1, 0, 0, 0],
                            [0, 0, 10], K)
    assert np.all(np.isnan(pixels[0])) and np.all(np.isfinite(pixels[1]))


def test_zero_quaternion_is_a_clear_error():
    with pytest.raises(ValueError, match="zero"):
        quat_normalize([0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="shape"):
        quat_to_dcm([1.0, 0.0, 0.0])


def test_random_quaternions_are_uniform_on_so3():
    q = random_quaternions(20000, np.random.default_rng(6))
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-12)
    assert np.all(q[:, 0] >= 0)
    # Uniform rotations: E[R] = 0 and P(angle < 90 deg) = (pi/2 - 1) / pi = 0.1817.
    assert np.abs(quat_to_dcm(q).mean(axis=0)).max() < 0.02
    angle = 2 * np.arccos(np.clip(q[:, 0], 0, 1))
    assert np.mean(angle < np.pi / 2) == pytest.approx((np.pi / 2 - 1) / np.pi, abs=0.01)
