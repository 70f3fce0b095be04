"""PnP + refinement recovers known poses; bad inputs give failure objects."""
import numpy as np
import pytest

from lib.spacecraft.geometry import project_points, random_quaternions
from lib.spacecraft.pose_solver import solve_pose, solve_poses
from lib.spacecraft.scores import rotation_error

FX = 0.0176 / 5.86e-6
K = np.array([[FX, 0.0, 960.0], [0.0, FX, 600.0], [0.0, 0.0, 1.0]])
# An 11-landmark Tango-like model: body bottom corners, panel corners, antenna tips (metres).
LANDMARKS = np.array(
    [[-0.3, -0.3, 0.0], [-0.3, 0.3, 0.0], [0.3, 0.3, 0.0], [0.3, -0.3, 0.0],
     [-0.38, -0.37, 0.32], [-0.38, 0.43, 0.32], [0.38, 0.43, 0.32], [0.38, -0.37, 0.32],
     [-0.52, 0.62, 0.26], [0.52, 0.62, 0.26], [0.3, -0.68, 0.26]]
)


def random_poses(n, seed, distance=(4.0, 10.0)):
    rng = np.random.default_rng(seed)
    q = random_quaternions(n, rng)
    r = np.column_stack([rng.uniform(-0.8, 0.8, (n, 2)), rng.uniform(*distance, n)])
    return q, r


def test_exact_projections_give_the_pose():
    q, r = random_poses(15, seed=0)
    for q_true, r_true in zip(q, r, strict=True):
        solution = solve_pose(project_points(LANDMARKS, q_true, r_true, K), None, LANDMARKS, K)
        assert solution.success, solution.reason
        assert np.rad2deg(rotation_error(q_true, solution.q))[0] < 0.1
        assert np.linalg.norm(solution.r - r_true) / np.linalg.norm(r_true) < 1e-4
        assert solution.reproj_err_px < 1e-3
        assert len(solution.inliers) == 11


def test_one_pixel_noise_stays_below_one_degree():
    q, r = random_poses(15, seed=1, distance=(5.0, 12.0))
    noise = np.random.default_rng(2).normal(0.0, 1.0, (15, 11, 2))
    errors = []
    for q_true, r_true, n in zip(q, r, noise, strict=True):
        observed = project_points(LANDMARKS, q_true, r_true, K) + n
        solution = solve_pose(observed, np.ones(11), LANDMARKS, K)
        assert solution.success, solution.reason
        errors.append(np.rad2deg(rotation_error(q_true, solution.q))[0])
    assert max(errors) < 1.0
    assert min(errors) > 0.0  # noise did reach the solver


def test_refinement_lowers_reprojection_error_of_epnp():
    q, r = random_poses(5, seed=3)
    noise = np.random.default_rng(4).normal(0.0, 2.0, (5, 11, 2))
    for q_true, r_true, n in zip(q, r, noise, strict=True):
        observed = project_points(LANDMARKS, q_true, r_true, K) + n
        options = dict(ransac_reproj_err=20.0)
        plain = solve_pose(observed, None, LANDMARKS, K, refine=False, **options)
        refined = solve_pose(observed, None, LANDMARKS, K, refine=True, **options)
        assert refined.refined and not plain.refined
        assert refined.reproj_err_px <= plain.reproj_err_px + 1e-9


def test_outlier_and_low_confidence_landmarks_are_ignored():
    q, r = random_poses(1, seed=5)
    observed = project_points(LANDMARKS, q[0], r[0], K)
    observed[2] += [60.0, -45.0]  # a confident but wrong detection: RANSAC drops it
    observed[5] = [0.0, 0.0]  # garbage with low confidence: the threshold drops it
    confidence = np.full(11, 0.9)
    confidence[5] = 0.05
    solution = solve_pose(observed, confidence, LANDMARKS, K, conf_threshold=0.1)
    assert solution.success, solution.reason
    assert solution.num_used == 10
    assert 2 not in solution.inliers and 5 not in solution.inliers
    assert np.rad2deg(rotation_error(q[0], solution.q))[0] < 0.1


def test_confidence_weights_favour_the_trusted_landmarks():
    q, r = random_poses(1, seed=6)
    observed = project_points(LANDMARKS, q[0], r[0], K)
    observed[[0, 6, 9]] += [[2.5, -2.0], [-2.0, 2.5], [2.0, 2.0]]  # small errors, not outliers
    trusted = np.ones(11)
    trusted[[0, 6, 9]] = 0.1
    weighted = solve_pose(observed, trusted, LANDMARKS, K, conf_threshold=0.05)
    uniform = solve_pose(observed, np.ones(11), LANDMARKS, K, conf_threshold=0.05)
    assert rotation_error(q[0], weighted.q)[0] < rotation_error(q[0], uniform.q)[0]


@pytest.mark.parametrize("count", [0, 2, 3])
def test_fewer_than_four_landmarks_is_a_failure_not_an_exception(count):
    q, r = random_poses(1, seed=7)
    observed = project_points(LANDMARKS, q[0], r[0], K)
    confidence = np.zeros(11)
    confidence[:count] = 1.0
    solution = solve_pose(observed, confidence, LANDMARKS, K)
    assert not solution.success
    assert f"only {count} landmarks" in solution.reason
    assert np.all(np.isnan(solution.q)) and np.all(np.isnan(solution.r))


def test_degenerate_input_is_a_failure_not_an_exception():
    observed = np.full((11, 2), 500.0)  # every landmark on one pixel
    solution = solve_pose(observed, None, LANDMARKS, K)
    assert not solution.success and solution.reason
    scattered = np.random.default_rng(0).uniform(0, 1000, (11, 2))  # no pose explains these
    for count in (4, 11):
        solution = solve_pose(scattered[:count], None, LANDMARKS[:count], K)
        assert not solution.success and solution.reason
    nan_points = np.full((11, 2), np.nan)
    assert "only 0 landmarks" in solve_pose(nan_points, None, LANDMARKS, K).reason


def test_batch_helper_counts_failures():
    q, r = random_poses(3, seed=8)
    observed = project_points(LANDMARKS, q, r, K)
    confidence = np.ones((3, 11))
    confidence[1, 3:] = 0.0
    batch = solve_poses(observed, confidence, LANDMARKS, K, conf_threshold=0.1)
    assert batch.num_failed == 1
    assert batch.success.tolist() == [True, False, True]
    assert np.all(np.isnan(batch.q[1])) and "only 3 landmarks" in batch.reasons[1]
    assert np.rad2deg(rotation_error(q[[0, 2]], batch.q[[0, 2]])).max() < 0.1


def test_four_exact_landmarks_are_enough():
    q, r = random_poses(5, seed=9)
    keep = [0, 4, 8, 10]
    for q_true, r_true in zip(q, r, strict=True):
        observed = project_points(LANDMARKS[keep], q_true, r_true, K)
        solution = solve_pose(observed, None, LANDMARKS[keep], K)
        assert solution.success, solution.reason
        assert np.rad2deg(rotation_error(q_true, solution.q))[0] < 0.1


def test_inliers_bunched_together_are_a_failure_not_a_distant_pose():
    from lib.spacecraft.geometry import quat_normalize

    landmarks_3d = np.array([[0.3, 0.3, 0], [-0.3, 0.3, 0], [-0.3, -0.3, 0], [0.3, -0.3, 0],
                             [0, 0, 0.5], [0.2, 0, 0.9]])
    camera = np.array([[1000.0, 0, 320], [0, 1000.0, 200], [0, 0, 1]])
    q = quat_normalize(np.array([0.9, 0.1, 0.2, 0.3]))
    observed = project_points(landmarks_3d, q, np.array([0.0, 0.0, 10.0]), camera)
    bunched = observed.mean(axis=0) + (observed - observed.mean(axis=0)) * 0.05
    solution = solve_pose(bunched, None, landmarks_3d, camera, ransac_reproj_err=5.0)
    assert not solution.success and "too close together" in solution.reason


def test_retries_at_a_doubled_tolerance_turn_noisy_failures_into_poses():
    q, r = random_poses(10, seed=5, distance=(4.0, 6.0))
    noise = np.random.default_rng(6).normal(0.0, 6.0, (10, 11, 2))
    strict_failures, errors = 0, []
    for q_true, r_true, n in zip(q, r, noise, strict=True):
        observed = project_points(LANDMARKS, q_true, r_true, K) + n
        strict = solve_pose(observed, None, LANDMARKS, K, ransac_reproj_err=1.0)
        strict_failures += not strict.success
        retried = solve_pose(observed, None, LANDMARKS, K, ransac_reproj_err=1.0,
                             ransac_retries=4)                       # up to 16 px
        assert retried.success, retried.reason
        errors.append(np.rad2deg(rotation_error(q_true, retried.q))[0])
    assert strict_failures >= 5
    assert np.median(errors) < 5.0


def test_the_batch_on_several_threads_gives_the_poses_of_one_thread(monkeypatch):
    import cv2

    q, r = random_poses(40, seed=11)
    rng = np.random.default_rng(12)
    observed = project_points(LANDMARKS, q, r, K) + rng.normal(0.0, 3.0, (40, 11, 2))
    observed[:, :3] += rng.uniform(-80.0, 80.0, (40, 3, 2))  # outliers: RANSAC must choose
    confidence = rng.uniform(0.05, 1.0, (40, 11))
    options = dict(ransac_reproj_err=2.0, ransac_retries=2, ransac_iterations=200)
    monkeypatch.setattr(cv2, "getNumThreads", lambda: 1)
    alone = solve_poses(observed, confidence, LANDMARKS, K, **options)
    monkeypatch.setattr(cv2, "getNumThreads", lambda: 4)
    threaded = solve_poses(observed, confidence, LANDMARKS, K, **options)
    assert np.count_nonzero(alone.success) >= 30
    np.testing.assert_array_equal(threaded.success, alone.success)
    np.testing.assert_array_equal(threaded.q, alone.q)
    np.testing.assert_array_equal(threaded.r, alone.r)
    assert threaded.reasons == alone.reasons
