"""SPEED / SPEED+ file readers and writers (lib/spacecraft/files.py)."""
import json

import numpy as np
import pytest
import scipy.io

from lib.spacecraft.files import (
    PoseLabel,
    SpeedFileError,
    load_camera,
    match_submission,
    read_camera,
    read_labels,
    read_landmarks,
    read_submission,
    speed_camera,
    write_camera,
    write_labels,
    write_landmarks,
    write_submission,
)

POINTS = np.arange(33, dtype=float).reshape(11, 3) / 10.0


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def test_speed_camera_and_scaling():
    camera = speed_camera()
    assert (camera.width, camera.height) == (1920, 1200)
    assert camera.matrix[0, 0] == pytest.approx(3003.41, abs=0.01)
    assert camera.matrix[1, 1] == camera.matrix[0, 0]
    assert tuple(camera.matrix[:2, 2]) == (960.0, 600.0)
    small = speed_camera(640, 400)
    assert small.matrix[0, 0] == pytest.approx(camera.matrix[0, 0] / 3)
    assert tuple(small.matrix[:2, 2]) == (320.0, 200.0)
    assert not small.has_distortion


def test_camera_round_trip_and_defaults(tmp_path):
    write_camera(tmp_path / "camera.json", speed_camera(640, 400))
    camera = load_camera(tmp_path)
    np.testing.assert_allclose(camera.matrix, speed_camera(640, 400).matrix)
    assert (camera.width, camera.height) == (640, 400)
    no_dist = write_json(tmp_path / "nodist.json",
                         {"Nu": 10, "Nv": 8, "cameraMatrix": np.eye(3).tolist()})
    np.testing.assert_array_equal(read_camera(no_dist).dist_coeffs, np.zeros(5))
    # no camera.json: the SPEED camera
    assert load_camera(tmp_path / "elsewhere").matrix[0, 0] == pytest.approx(3003.41, abs=0.01)


def test_camera_missing_field_names_file_and_field(tmp_path):
    path = write_json(tmp_path / "camera.json", {"Nu": 1920, "Nv": 1200})
    with pytest.raises(SpeedFileError, match=r"camera\.json.*'cameraMatrix'"):
        read_camera(path)
    bad = write_json(tmp_path / "bad.json", {"Nu": 4, "Nv": 4, "cameraMatrix": [[1, 0], [0, 1]]})
    with pytest.raises(SpeedFileError, match="3 x 3"):
        read_camera(bad)


def test_landmark_formats_agree(tmp_path):
    write_landmarks(tmp_path / "a.json", POINTS)
    write_json(tmp_path / "b.json", {"landmarks": POINTS.tolist()})
    np.save(tmp_path / "c.npy", POINTS)
    scipy.io.savemat(tmp_path / "d.mat", {"tango3Dpoints": POINTS.T})
    scipy.io.savemat(tmp_path / "e.mat", {"tango3Dpoints": POINTS.T * 0,
                                          "tango3Dpoints_refined": POINTS.T})
    for name in ("a.json", "b.json", "c.npy", "d.mat", "e.mat"):
        np.testing.assert_array_equal(read_landmarks(tmp_path / name, num_joints=11), POINTS)


def test_landmark_count_mismatch_names_both_numbers(tmp_path):
    write_landmarks(tmp_path / "keypoints.json", POINTS)
    with pytest.raises(SpeedFileError, match=r"keypoints\.json.*11 landmarks.*NUM_JOINTS is 17"):
        read_landmarks(tmp_path / "keypoints.json", num_joints=17)
    scipy.io.savemat(tmp_path / "x.mat", {"other": POINTS.T})
    with pytest.raises(SpeedFileError, match="tango3Dpoints"):
        read_landmarks(tmp_path / "x.mat")
    with pytest.raises(FileNotFoundError):
        read_landmarks(tmp_path / "absent.npy")


def test_labels_both_key_styles_and_unlabelled(tmp_path):
    path = write_json(tmp_path / "train.json", [
        {"filename": "a.jpg", "q_vbs2tango": [2, 0, 0, 0], "r_Vo2To_vbs_true": [0, 0, 5]},
        {"filename": "b.jpg", "q_vbs2tango_true": [0, 1, 0, 0], "r_Vo2To_vbs_true": [1, 2, 9]},
        {"filename": "c.jpg"},
    ])
    labels = read_labels(path)
    assert [label.filename for label in labels] == ["a.jpg", "b.jpg", "c.jpg"]
    np.testing.assert_allclose(labels[0].q, [1, 0, 0, 0])  # normalised
    np.testing.assert_allclose(labels[1].r, [1, 2, 9])
    assert labels[1].has_pose and not labels[2].has_pose
    write_labels(tmp_path / "copy.json", labels)
    again = read_labels(tmp_path / "copy.json")
    np.testing.assert_allclose(again[1].q, labels[1].q)
    assert "q_vbs2tango_true" in json.loads((tmp_path / "copy.json").read_text())[0]


def test_zero_quaternion_names_file_and_filename(tmp_path):
    path = write_json(tmp_path / "labels.json", [
        {"filename": "img000007.jpg", "q_vbs2tango_true": [0, 0, 0, 0],
         "r_Vo2To_vbs_true": [0, 0, 5]},
    ])
    with pytest.raises(SpeedFileError, match=r"labels\.json.*img000007\.jpg.*zero norm"):
        read_labels(path)
    half = write_json(tmp_path / "half.json", [{"filename": "x.jpg", "q_vbs2tango": [1, 0, 0, 0]}])
    with pytest.raises(SpeedFileError, match="r_Vo2To_vbs_true"):
        read_labels(half)


def test_submission_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(3, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    r = rng.uniform(-1, 10, (3, 3))
    names = ["img1.jpg", "img2.jpg", "img3.jpg"]
    write_submission(tmp_path / "sub.csv", names, q, r)
    assert (tmp_path / "sub.csv").read_text().splitlines()[0] == "filename,q0,q1,q2,q3,x,y,z"
    back = read_submission(tmp_path / "sub.csv")
    assert back.filenames == names and back.rows == [2, 3, 4]
    np.testing.assert_array_equal(back.q, q)
    np.testing.assert_array_equal(back.r, r)


def test_submission_failed_rows_hold_the_worst_case_guess(tmp_path):
    q = np.array([[1.0, 0, 0, 0], [np.nan] * 4])
    r = np.array([[0, 0, 5.0], [np.nan] * 3])
    write_submission(tmp_path / "sub.csv", ["a", "b"], q, r, success=[True, False])
    back = read_submission(tmp_path / "sub.csv")
    np.testing.assert_array_equal(back.q[1], [1, 0, 0, 0])
    np.testing.assert_array_equal(back.r[1], [0, 0, 0])


@pytest.mark.parametrize(
    "bad_row, message",
    [
        ("img3.jpg,1,0,0,0,0,0", r"row 3: expected 8 columns"),
        ("img3.jpg,1,0,zero,0,0,0,1", r"row 3: q2 = 'zero' is not a finite number"),
        ("img3.jpg,1,0,0,0,0,0,nan", r"row 3: z = 'nan' is not a finite number"),
        ("img3.jpg,0,0,0,0,0,0,1", r"row 3: quaternion of 'img3.jpg' has zero norm"),
        ("img1.jpg,1,0,0,0,0,0,1", r"row 3: 'img1.jpg' already given in row 2"),
    ],
)
def test_malformed_submission_row_is_named(tmp_path, bad_row, message):
    path = tmp_path / "sub.csv"
    path.write_text("filename,q0,q1,q2,q3,x,y,z\nimg1.jpg,1,0,0,0,0,0,5\n" + bad_row + "\n")
    with pytest.raises(SpeedFileError, match=r"sub\.csv: " + message):
        read_submission(path)


def test_match_submission_names_unknown_row_and_missing_image(tmp_path):
    labels = [PoseLabel("a.jpg", np.array([1.0, 0, 0, 0]), np.array([0, 0, 5.0])),
              PoseLabel("b.jpg", np.array([0.0, 1, 0, 0]), np.array([0, 1, 5.0]))]
    write_submission(tmp_path / "s.csv", ["b.jpg", "a.jpg"], [[0, 1, 0, 0], [1, 0, 0, 0]],
                     [[0, 1, 5], [0, 0, 5]])
    q_gt, r_gt, q_est, r_est = match_submission(labels, read_submission(tmp_path / "s.csv"),
                                                "gt.json", "s.csv")
    np.testing.assert_array_equal(q_est, q_gt)
    np.testing.assert_array_equal(r_est, r_gt)
    write_submission(tmp_path / "u.csv", ["a.jpg", "b.jpg", "zzz.jpg"], np.tile([1.0, 0, 0, 0],
                     (3, 1)), np.ones((3, 3)))
    with pytest.raises(SpeedFileError, match="row 4: unknown filename 'zzz.jpg'"):
        match_submission(labels, read_submission(tmp_path / "u.csv"), "gt.json", "u.csv")
    write_submission(tmp_path / "m.csv", ["a.jpg"], [[1.0, 0, 0, 0]], [[0, 0, 5]])
    with pytest.raises(SpeedFileError, match="no row for 'b.jpg'"):
        match_submission(labels, read_submission(tmp_path / "m.csv"), "gt.json", "m.csv")
