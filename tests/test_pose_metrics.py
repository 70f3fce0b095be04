"""Scores on constructed pose pairs with known values (lib/spacecraft/scores.py)."""
import numpy as np
import pytest

from lib.spacecraft.scores import (
    esa_score,
    esa_score_spec2021,
    landmark_pixel_error,
    pose_errors,
    pose_score_summary,
    rotation_error,
    translation_error,
)


def about_z(degrees):
    half = np.deg2rad(degrees) / 2
    return np.array([np.cos(half), 0.0, 0.0, np.sin(half)])


IDENTITY = np.array([1.0, 0.0, 0.0, 0.0])


def test_rotation_error_known_angles_and_sign_invariance():
    q_est = np.stack([about_z(10.0), -about_z(10.0), about_z(180.0), IDENTITY * 3.0])
    q_gt = np.tile(IDENTITY, (4, 1))
    np.testing.assert_allclose(np.rad2deg(rotation_error(q_gt, q_est)), [10, 10, 180, 0],
                               atol=1e-6)


def test_translation_error_absolute_and_relative():
    absolute, relative = translation_error([[0, 0, 10], [3, 4, 0]], [[0, 0.1, 10], [0, 0, 0]])
    np.testing.assert_allclose(absolute, [0.1, 5.0])
    np.testing.assert_allclose(relative, [0.01, 1.0])
    with pytest.raises(ValueError, match="zero norm"):
        translation_error([[0, 0, 0]], [[0, 0, 1]])


def test_esa_score_is_rotation_radians_plus_relative_translation():
    assert esa_score(np.deg2rad(10.0), 0.01) == pytest.approx(np.deg2rad(10.0) + 0.01)


def test_spec2021_zeroes_each_term_below_label_precision():
    rot = np.deg2rad([0.1, 0.2, 0.1, 0.2])
    trans = np.array([0.001, 0.001, 0.003, 0.003])
    np.testing.assert_allclose(
        esa_score_spec2021(rot, trans), [0.0, np.deg2rad(0.2), 0.003, np.deg2rad(0.2) + 0.003]
    )
    np.testing.assert_allclose(esa_score(rot, trans), rot + trans)


def test_failures_get_the_worst_case():
    q_gt = np.tile(IDENTITY, (3, 1))
    r_gt = np.array([[0, 0, 10.0], [0, 0, 20.0], [0, 0, 5.0]])
    q_est = np.array([IDENTITY, IDENTITY, [np.nan] * 4])
    r_est = np.array([[0, 0, 10.0], [0, 0, 20.0], [np.nan] * 3])
    errors = pose_errors(q_gt, r_gt, q_est, r_est, success=[True, False, True])
    np.testing.assert_allclose(errors.rot_rad, [0.0, np.pi, np.pi])
    np.testing.assert_allclose(errors.trans_rel, [0.0, 1.0, 1.0])
    np.testing.assert_allclose(errors.trans_m, [0.0, 20.0, 5.0])
    assert errors.failed.tolist() == [False, True, True]


def test_summary_names_order_and_values():
    q_gt = np.tile(IDENTITY, (2, 1))
    r_gt = np.array([[0, 0, 10.0], [0, 0, 4.0]])
    q_est = np.stack([about_z(10.0), -about_z(0.1)])  # second is within SPEC2021 precision
    r_est = np.array([[0, 0.1, 10.0], [0, 0.004, 4.0]])  # 1 % and 0.1 %
    summary = pose_score_summary(q_gt, r_gt, q_est, r_est)
    assert list(summary) == [
        "ESA score", "ESA score (SPEC2021)", "rot err mean (deg)", "rot err median (deg)",
        "trans err mean (m)", "trans err median (m)", "trans err mean (rel)",
    ]
    expected_esa = (np.deg2rad(10.0) + 0.01 + np.deg2rad(0.1) + 0.001) / 2
    assert summary["ESA score"] == pytest.approx(expected_esa)
    assert summary["ESA score (SPEC2021)"] == pytest.approx((np.deg2rad(10.0) + 0.01) / 2)
    assert summary["rot err mean (deg)"] == pytest.approx(5.05)
    assert summary["rot err median (deg)"] == pytest.approx(5.05)
    assert summary["trans err mean (m)"] == pytest.approx(0.052)
    assert summary["trans err mean (rel)"] == pytest.approx(0.0055)


def test_summary_with_a_failure_is_worse_by_the_worst_case():
    q_gt = np.tile(IDENTITY, (2, 1))
    r_gt = np.array([[0, 0, 10.0], [0, 0, 4.0]])
    summary = pose_score_summary(q_gt, r_gt, q_gt, r_gt, success=np.array([True, False]))
    assert summary["ESA score"] == pytest.approx((np.pi + 1.0) / 2)
    assert summary["rot err median (deg)"] == pytest.approx(90.0)


def test_landmark_pixel_error_over_visible_only():
    gt = np.zeros((2, 3, 2))
    pred = np.array([[[3, 4], [0, 1], [100, 0]], [[0, 0], [6, 8], [50, 50]]], dtype=float)
    vis = np.array([[1, 1, 0], [1, 1, 0]])
    assert landmark_pixel_error(pred, gt, vis) == pytest.approx((5 + 1 + 0 + 10) / 4)
    vis3 = np.repeat(vis[..., None], 3, axis=2)  # joints_vis layout
    assert landmark_pixel_error(pred, gt, vis3) == pytest.approx(4.0)
    assert np.isnan(landmark_pixel_error(pred, gt, np.zeros((2, 3))))
