"""A pose for every image: the fallback guesses for failed PnP, and one scoring path (the score
evaluate() prints is the score of the file it writes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torchvision.transforms as T

from lib.dataset.speed import ORACLE_SUFFIX, SpeedDataset, submission_path
from lib.spacecraft.fallback import POSE_SOURCES, epnp_pose, fill_failed_poses, mean_pose
from lib.spacecraft.files import speed_camera
from lib.spacecraft.geometry import project_points
from lib.spacecraft.pose_solver import solve_poses

NORMALIZE = T.Compose([T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
CAMERA = speed_camera(640, 400)
BODY = np.array([[0.37, 0.385, 0.32], [-0.37, 0.385, 0.32], [-0.37, -0.385, 0.32],
                 [0.37, -0.385, 0.32], [0.37, -0.264, 0.0], [-0.37, -0.264, 0.0],
                 [-0.37, 0.304, 0.0], [0.37, 0.304, 0.0], [-0.54, 0.49, 0.25],
                 [0.54, 0.49, 0.26], [0.31, -0.58, 0.25]])


def z_rotation(degrees: float) -> np.ndarray:
    half = np.deg2rad(degrees) / 2
    return np.array([np.cos(half), 0.0, 0.0, np.sin(half)])


def landmarks_at(q: np.ndarray, r: np.ndarray, confidence: float = 1.0) -> np.ndarray:
    """J x 3: the exact projections of BODY at (q, r) and a confidence."""
    pixels = project_points(BODY, q, r, CAMERA.matrix, None)
    return np.column_stack([pixels, np.full(len(BODY), confidence)])


def test_mean_pose_is_blind_to_the_quaternion_sign_and_averages_positions():
    q, r = mean_pose(np.stack([z_rotation(20), -z_rotation(-20)]), [[0, 0, 4.0], [0, 2.0, 6.0]])
    np.testing.assert_allclose(q, [1, 0, 0, 0], atol=1e-12)  # +20 and -20 deg about z
    np.testing.assert_allclose(r, [0, 1.0, 5.0])
    one, _ = mean_pose(-z_rotation(50)[None], [[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(one, z_rotation(50), atol=1e-12)  # scalar part made positive
    with pytest.raises(ValueError, match="no poses"):
        mean_pose(np.zeros((0, 4)), np.zeros((0, 3)))


def test_epnp_recovers_an_exact_pose_and_refuses_too_few_points():
    q, r = z_rotation(35.0), np.array([0.3, -0.2, 6.0])
    found = epnp_pose(landmarks_at(q, r)[:, :2], BODY, CAMERA.matrix, None)
    assert found is not None
    np.testing.assert_allclose(np.abs(found[0] @ q), 1.0, atol=1e-9)
    np.testing.assert_allclose(found[1], r, atol=1e-6)
    three = landmarks_at(q, r)[:, :2].copy()
    three[3:] = np.nan
    assert epnp_pose(three, BODY, CAMERA.matrix, None) is None


def test_each_failure_falls_back_to_the_first_guess_that_works():
    truth = [(z_rotation(10.0 * k), np.array([0.1 * k, 0.0, 5.0 + k])) for k in range(4)]
    fine = np.stack([landmarks_at(q, r) for q, r in truth])
    fine[1:, :, 2] = 0.0           # images 1-3: no confident landmark, PnP fails on them
    fine[2:, :, :2] = np.nan       # images 2-3: no landmark at all for EPnP either
    coarse = np.stack([landmarks_at(q, r) for q, r in truth])
    coarse[3, :, :2] = np.nan      # image 3: the coarse model found nothing either
    prior = (z_rotation(-90.0), np.array([0.0, 0.0, 7.0]))
    poses = solve_poses(fine[:, :, :2], fine[:, :, 2], BODY, CAMERA.matrix, None,
                        conf_threshold=0.1, ransac_reproj_err=3.0)
    assert poses.success.tolist() == [True, False, False, False]
    filled = fill_failed_poses(poses, fine, BODY, CAMERA.matrix, None, coarse, prior,
                               conf_threshold=0.1, ransac_reproj_err=3.0)
    assert [POSE_SOURCES[s] for s in filled.source] == [
        "PnP", "EPnP on all landmarks", "coarse landmarks", "prior pose"]
    assert filled.counts() == {"EPnP on all landmarks": 1, "coarse landmarks": 1,
                               "prior pose": 1}
    for index in (0, 1, 2):  # exact landmarks: every guess but the prior finds the truth
        np.testing.assert_allclose(np.abs(filled.q[index] @ truth[index][0]), 1.0, atol=1e-9)
        np.testing.assert_allclose(filled.r[index], truth[index][1], atol=1e-6)
    np.testing.assert_array_equal(filled.q[3], prior[0])
    np.testing.assert_array_equal(filled.r[3], prior[1])
    # without a prior: the mean of the solved images (here image 0 alone)
    alone = fill_failed_poses(poses, fine, BODY, CAMERA.matrix, None)
    np.testing.assert_allclose(alone.r[3], truth[0][1], atol=1e-6)
    assert np.all(np.isfinite(alone.q)) and np.all(np.isfinite(alone.r))


def test_poses_beyond_the_max_distance_are_refused_solved_or_guessed():
    """Image 0 solved at 40 m (too far), image 1 failed with a fine EPnP guess at 30 m and a
    coarse one at 6 m: with max_distance 20 both move to the next guess that is near enough."""
    near_q, near_r = z_rotation(15.0), np.array([0.2, 0.1, 6.0])
    far = [(z_rotation(10.0), np.array([0.0, 0.0, 40.0])), (z_rotation(20.0),
                                                            np.array([0.0, 0.0, 30.0]))]
    fine = np.stack([landmarks_at(q, r) for q, r in far])
    fine[1, :, 2] = 0.0            # image 1: PnP fails, EPnP on all landmarks says 30 m
    coarse = np.stack([landmarks_at(near_q, near_r)] * 2)
    prior = (z_rotation(-90.0), np.array([0.0, 0.0, 7.0]))
    options = {"conf_threshold": 0.1, "ransac_reproj_err": 3.0}
    poses = solve_poses(fine[:, :, :2], fine[:, :, 2], BODY, CAMERA.matrix, None, **options)
    assert poses.success.tolist() == [True, False]
    unlimited = fill_failed_poses(poses, fine, BODY, CAMERA.matrix, None, coarse, prior,
                                  **options)
    np.testing.assert_allclose(unlimited.r[:, 2], [40.0, 30.0], atol=1e-6)
    limited = fill_failed_poses(poses, fine, BODY, CAMERA.matrix, None, coarse, prior,
                                max_distance=20.0, **options)
    assert [POSE_SOURCES[s] for s in limited.source] == ["coarse landmarks"] * 2
    np.testing.assert_allclose(limited.r, [near_r, near_r], atol=1e-6)
    nothing_near = fill_failed_poses(poses, fine, BODY, CAMERA.matrix, None, None, prior,
                                     max_distance=20.0, **options)
    assert [POSE_SOURCES[s] for s in nothing_near.source] == ["prior pose"] * 2


def test_evaluate_prints_the_score_of_the_file_it_writes(speed_root, speed_cfg, run_tool,
                                                        tmp_path):
    """Failures included: the table and tools/speed_score.py on the CSV agree to the digit."""
    ds = SpeedDataset(speed_cfg, str(speed_root), "validation", False, NORMALIZE)
    preds = np.ones((len(ds), ds.num_joints, 3))
    preds[:, :, :2] = [rec["joints_3d"][:, :2] for rec in ds.db]
    preds[:, :, :2] += np.random.default_rng(0).normal(0.0, 1.5, preds[:, :, :2].shape)
    preds[1, :, 2] = 0.0                 # no confident landmark: EPnP on all of them
    preds[2, :, :2] = np.nan             # nothing at all: the training set's mean pose
    table, perf = ds.evaluate(speed_cfg, preds, str(tmp_path))
    table = {name.replace(ORACLE_SUFFIX, ""): value for name, value in table.items()}
    assert table["PnP failures"] == 2
    assert table["fallback: EPnP on all landmarks"] == 1
    assert table["fallback: prior pose"] == 1
    labels = speed_root / "synthetic" / "validation.json"
    csv = submission_path(str(tmp_path), "validation", oracle=True)
    scored = json.loads(run_tool("tools/speed_score.py", "--gt", labels, "--submission",
                                 csv).stdout)
    assert scored["esa_score"] == perf == table["ESA score"]
    assert scored["esa_score_spec2021"] == table["ESA score (SPEC2021)"]
    assert scored["rot_err_deg_mean"] == table["rot err mean (deg)"]
    # the prior is the training labels' mean pose
    train = json.loads((speed_root / "synthetic" / "train.json").read_text())
    prior_q, prior_r = mean_pose([e["q_vbs2tango_true"] for e in train],
                                 [e["r_Vo2To_vbs_true"] for e in train])
    written = np.loadtxt(csv, delimiter=",", usecols=range(1, 8))  # rows in label order
    np.testing.assert_allclose(written[2, :4], prior_q, atol=1e-15)
    np.testing.assert_allclose(written[2, 4:], prior_r, atol=1e-15)
