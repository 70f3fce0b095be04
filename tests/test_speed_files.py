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



# ------------------------------------------------------------------------------------- submission
# Files written by hand exactly as ESA's kits write them: SPEC2019 8-column rows and SPEC2021
# 9-column rows (category first), no header; our older runs' file had a header line.
KIT_ROWS = "img1.jpg,1,0,0,0,0,0,5\nimg2.jpg,0,1,0,0,0,0,6\n"
SPEC2021_ROWS = "lightbox,img1.jpg,1,0,0,0,0,0,5\nsunlamp,img2.jpg,0,1,0,0,0,0,6\n"


def write_text(path, text, encoding="utf-8"):
    path.write_text(text, encoding=encoding)
    return path


def test_kit_rows_without_header_are_read_by_position(tmp_path):
    path = write_text(tmp_path / "submission.csv",
                      "img000001.jpg,0.5,-0.5,0.5,0.5,0.125,-0.25,7.5\n"
                      "img000002.jpg,1,0,0,0,0,0,12\n")
    sub = read_submission(path)
    assert sub.filenames == ["img000001.jpg", "img000002.jpg"]
    assert sub.rows == [1, 2] and sub.categories is None
    np.testing.assert_array_equal(sub.q, [[0.5, -0.5, 0.5, 0.5], [1, 0, 0, 0]])
    np.testing.assert_array_equal(sub.r, [[0.125, -0.25, 7.5], [0, 0, 12]])


def test_spec2021_rows_of_both_categories_in_one_file(tmp_path):
    path = write_text(tmp_path / "submission.csv",
                      "lightbox,img000001.jpg,0.5,0.5,0.5,0.5,0.1,0.2,3.5\n"
                      "sunlamp,img000002.jpg,0,0,0.6,-0.8,-1,0,9\n"
                      "lightbox,img000003.jpg,1,0,0,0,0,0,4.25\n")
    sub = read_submission(path)
    assert sub.categories == ["lightbox", "sunlamp", "lightbox"]
    assert sub.filenames == ["img000001.jpg", "img000002.jpg", "img000003.jpg"]
    np.testing.assert_array_equal(sub.q[1], [0, 0, 0.6, -0.8])
    np.testing.assert_array_equal(sub.r[1], [-1, 0, 9])
    lightbox = sub.of_category("lightbox")
    assert lightbox.filenames == ["img000001.jpg", "img000003.jpg"] and lightbox.rows == [1, 3]
    np.testing.assert_array_equal(lightbox.r, [[0.1, 0.2, 3.5], [0, 0, 4.25]])
    sunlamp = sub.of_category("sunlamp")
    assert sunlamp.rows == [2] and sunlamp.categories == ["sunlamp"]
    np.testing.assert_array_equal(sunlamp.q, [[0, 0, 0.6, -0.8]])


def test_header_columns_go_by_name_and_a_bom_is_skipped(tmp_path):
    reordered = write_text(tmp_path / "reordered.csv",
                           "filename,x,y,z,q0,q1,q2,q3\na.jpg,1.5,-2,9,0,0,0.6,0.8\n",
                           encoding="utf-8-sig")  # with a byte-order mark
    assert reordered.read_bytes().startswith(b"\xef\xbb\xbf")
    sub = read_submission(reordered)
    assert sub.filenames == ["a.jpg"] and sub.rows == [2] and sub.categories is None
    np.testing.assert_array_equal(sub.q, [[0, 0, 0.6, 0.8]])
    np.testing.assert_array_equal(sub.r, [[1.5, -2, 9]])

    with_category = write_text(tmp_path / "nine.csv",
                               "q0,q1,q2,q3,Category,x,y,z,filename\n1,0,0,0,sunlamp,0,0.5,4,b.jpg\n")
    sub = read_submission(with_category)
    assert sub.filenames == ["b.jpg"] and sub.categories == ["sunlamp"]
    np.testing.assert_array_equal(sub.q, [[1, 0, 0, 0]])
    np.testing.assert_array_equal(sub.r, [[0, 0.5, 4]])

    kit_with_bom = write_text(tmp_path / "bom.csv", KIT_ROWS, encoding="utf-8-sig")
    sub = read_submission(kit_with_bom)
    assert sub.filenames == ["img1.jpg", "img2.jpg"] and sub.rows == [1, 2]

    older_run = write_text(tmp_path / "old.csv", "filename,q0,q1,q2,q3,x,y,z\n" + KIT_ROWS)
    sub = read_submission(older_run)
    assert sub.rows == [2, 3] and sub.categories is None
    np.testing.assert_array_equal(sub.r, [[0, 0, 5], [0, 0, 6]])


def test_writer_writes_the_kit_rows_and_they_read_back_exactly(tmp_path):
    write_submission(tmp_path / "a.csv", ["img1.jpg", "img2.jpg"],
                     [[1.0, 0, 0, 0], [0.5, -0.5, 0.5, 0.5]], [[0.1, 0.2, 3.0], [0, 0, 1e-3]])
    assert (tmp_path / "a.csv").read_text() == ("img1.jpg,1.0,0.0,0.0,0.0,0.1,0.2,3.0\n"
                                                "img2.jpg,0.5,-0.5,0.5,0.5,0.0,0.0,0.001\n")
    write_submission(tmp_path / "b.csv", ["img1.jpg", "img2.jpg"],
                     [[1.0, 0, 0, 0], [1 / 3, 0, 0, 1]], [[0, 0, 2.0], [0, 0, 7.0]],
                     ["sunlamp", "lightbox"])
    assert (tmp_path / "b.csv").read_text() == (
        "sunlamp,img1.jpg,1.0,0.0,0.0,0.0,0.0,0.0,2.0\n"
        "lightbox,img2.jpg,0.3333333333333333,0.0,0.0,1.0,0.0,0.0,7.0\n")

    rng = np.random.default_rng(0)
    q = rng.normal(size=(4, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    r = rng.uniform(-1, 10, (4, 3))
    names = [f"img{i}.jpg" for i in range(4)]
    categories = ["lightbox", "sunlamp", "sunlamp", "lightbox"]
    for name, cats in (("kit.csv", None), ("spec2021.csv", categories)):
        write_submission(tmp_path / name, names, q, r, cats)
        back = read_submission(tmp_path / name)
        assert back.filenames == names and back.rows == [1, 2, 3, 4]
        assert back.categories == cats
        np.testing.assert_array_equal(back.q, q)  # repr: the very same floats
        np.testing.assert_array_equal(back.r, r)
    write_submission(tmp_path / "empty.csv", [], np.zeros((0, 4)), np.zeros((0, 3)))
    assert read_submission(tmp_path / "empty.csv").filenames == []


@pytest.mark.parametrize(
    "change, message",
    [
        ({"q": [[1, 0, 0, 0], [np.nan, 0, 0, 0]]}, r"row 1 \('b.jpg'\): pose is not finite"),
        ({"r": [[0, 0, 5], [0, np.inf, 6]]}, r"row 1 \('b.jpg'\): pose is not finite"),
        ({"q": [[1, 0, 0, 0], [0, 0, 0, 0]]}, r"row 1 \('b.jpg'\): quaternion .* zero norm"),
        ({"names": ["a.jpg", "a.jpg"]}, r"row 1 \('a.jpg'\): filename already given in row 0"),
        ({"names": ["a.jpg", "b,c.jpg"]}, r"row 1 \('b,c.jpg'\): .*commas"),
        ({"categories": ["lightbox", "Sunlamp"]},
         r"row 1 \('b.jpg'\): category 'Sunlamp' is not one of lightbox, sunlamp"),
        ({"categories": ["lightbox"]}, "2 filenames but 1 categories"),
        ({"categories": "lightbox"}, "one per row"),
        ({"q": [[1, 0, 0, 0]]}, r"2 names but q has shape \(1, 4\)"),
    ],
)
def test_writer_refuses_a_pose_it_cannot_write_as_given(tmp_path, change, message):
    args = {"names": ["a.jpg", "b.jpg"], "q": [[1.0, 0, 0, 0], [0, 1.0, 0, 0]],
            "r": [[0, 0, 5.0], [0, 0, 6.0]], "categories": None, **change}
    with pytest.raises(ValueError, match=message):
        write_submission(tmp_path / "x.csv", args["names"], args["q"], args["r"],
                         args["categories"])
    assert not (tmp_path / "x.csv").exists()  # nothing half-written


@pytest.mark.parametrize(
    "text, message",
    [
        (KIT_ROWS + "img3.jpg,1,0,0,0,0,0\n",
         r"line 3: expected 8 columns filename,q0,q1,q2,q3,x,y,z \(as on line 1\), got 7"),
        (SPEC2021_ROWS + "img3.jpg,1,0,0,0,0,0,5\n",
         r"line 3: expected 9 columns category,filename,q0,q1,q2,q3,x,y,z .*got 8"),
        ("img1.jpg,1,0,0,0,0,5\n", r"line 1: expected 8 columns .* or 9 columns .*got 7"),
        ("filename,q0,q1,q2,q3,x,y,z\nimg1.jpg,1,0,0,0,0,0,5,0\n",
         r"line 2: expected 8 columns .*\(as on line 1\), got 9"),
        (KIT_ROWS + "img3.jpg,1,0,zero,0,0,0,1\n", r"line 3: q2 = 'zero' is not a finite number"),
        (KIT_ROWS + "img3.jpg,1,0,0,0,0,0,nan\n", r"line 3: z = 'nan' is not a finite number"),
        (SPEC2021_ROWS + "sunlamp,img3.jpg,1,0,0,0,inf,0,1\n",
         r"line 3: x = 'inf' is not a finite number"),
        (KIT_ROWS + "img3.jpg,0,0,0,0,0,0,1\n", r"line 3: quaternion of 'img3.jpg' has zero norm"),
        (KIT_ROWS + "\nimg1.jpg,1,0,0,0,0,0,1\n", r"line 4: 'img1.jpg' already given on line 1"),
        (SPEC2021_ROWS + "lightbox,img1.jpg,1,0,0,0,0,0,5\n",
         r"line 3: 'img1.jpg' already given on line 1"),
        (SPEC2021_ROWS + "sunlamp,img1.jpg,1,0,0,0,0,0,5\n",
         r"line 3: 'img1.jpg' is under 'sunlamp' here and under 'lightbox' on line 1"),
        (SPEC2021_ROWS + "earth,img3.jpg,1,0,0,0,0,0,5\n", r"line 3: unknown category 'earth'"),
        ("filename,q0,q1,q2,q3,x,y,w\n", r"line 1: header column 8 'w' is not one of"),
        ("filename,q0,q1,q2,q3,x,y\n", r"line 1: header lacks the column\(s\) z"),
        ("filename,q0,q0,q2,q3,x,y,z\n", r"line 1: header column 'q0' given twice"),
        (",1,0,0,0,0,0,5\n", r"line 1: empty filename"),
    ],
)
def test_malformed_submission_names_the_line(tmp_path, text, message):
    path = write_text(tmp_path / "sub.csv", text)
    with pytest.raises(SpeedFileError, match=r"sub\.csv: " + message):
        read_submission(path)


def test_not_utf8_or_missing_file(tmp_path):
    (tmp_path / "latin.csv").write_bytes(b"caf\xe9.jpg,1,0,0,0,0,0,5\n")
    with pytest.raises(SpeedFileError, match=r"latin\.csv: not UTF-8"):
        read_submission(tmp_path / "latin.csv")
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        read_submission(tmp_path / "absent.csv")


LABELS = [PoseLabel("a.jpg", np.array([1.0, 0, 0, 0]), np.array([0, 0, 5.0])),
          PoseLabel("b.jpg", np.array([0.0, 1, 0, 0]), np.array([0, 1, 5.0]))]


def test_match_submission_names_unknown_row_and_missing_image(tmp_path):
    write_submission(tmp_path / "s.csv", ["b.jpg", "a.jpg"], [[0, 1, 0, 0], [1, 0, 0, 0]],
                     [[0, 1, 5], [0, 0, 5]])
    q_gt, r_gt, q_est, r_est = match_submission(LABELS, read_submission(tmp_path / "s.csv"),
                                                "gt.json", "s.csv")
    np.testing.assert_array_equal(q_est, q_gt)  # put back in label order
    np.testing.assert_array_equal(r_est, r_gt)
    write_submission(tmp_path / "u.csv", ["a.jpg", "b.jpg", "zzz.jpg"],
                     np.tile([1.0, 0, 0, 0], (3, 1)), np.ones((3, 3)))
    with pytest.raises(SpeedFileError, match="u.csv: line 3: unknown filename 'zzz.jpg'"):
        match_submission(LABELS, read_submission(tmp_path / "u.csv"), "gt.json", "u.csv")
    write_submission(tmp_path / "m.csv", ["a.jpg"], [[1.0, 0, 0, 0]], [[0, 0, 5]])
    with pytest.raises(SpeedFileError, match=r"no row for 'b.jpg' listed in gt.json \(entry 1\)"):
        match_submission(LABELS, read_submission(tmp_path / "m.csv"), "gt.json", "m.csv")


def test_match_submission_by_category(tmp_path):
    sunlamp = [PoseLabel("c.jpg", np.array([0.0, 0, 1, 0]), np.array([1, 2, 2.0]))]
    path = write_text(tmp_path / "s.csv", "sunlamp,c.jpg,0,0,-1,0,1,2,2.5\n"
                                          "lightbox,b.jpg,0,1,0,0,0,1,5\n"
                                          "lightbox,a.jpg,1,0,0,0,0,0,4\n")
    sub = read_submission(path)
    q_gt, r_gt, q_est, r_est = match_submission(LABELS, sub, "lightbox.json", "s.csv", "lightbox")
    np.testing.assert_array_equal(q_est, [[1, 0, 0, 0], [0, 1, 0, 0]])
    np.testing.assert_array_equal(r_est, [[0, 0, 4], [0, 1, 5]])
    _, _, q_est, r_est = match_submission(sunlamp, sub, "sunlamp.json", "s.csv", "sunlamp")
    np.testing.assert_array_equal(q_est, [[0, 0, -1, 0]])  # as written, sign included
    np.testing.assert_array_equal(r_est, [[1, 2, 2.5]])

    swapped = write_text(tmp_path / "w.csv", "lightbox,c.jpg,0,0,1,0,1,2,2\n"
                                             "lightbox,a.jpg,1,0,0,0,0,0,5\n"
                                             "lightbox,b.jpg,0,1,0,0,0,1,5\n")
    with pytest.raises(SpeedFileError,
                       match=r"w.csv: line 1: unknown lightbox filename 'c.jpg' "
                             r"\(not in lightbox.json\)"):
        match_submission(LABELS, read_submission(swapped), "lightbox.json", "w.csv", "lightbox")
    with pytest.raises(SpeedFileError, match=r"no sunlamp row for 'c.jpg' listed in sunlamp.json"):
        match_submission(sunlamp, read_submission(swapped), "sunlamp.json", "w.csv", "sunlamp")
    kit = write_text(tmp_path / "k.csv", "a.jpg,1,0,0,0,0,0,5\n")
    with pytest.raises(SpeedFileError, match=r"k.csv: has no category column"):
        match_submission(LABELS, read_submission(kit), "lightbox.json", "k.csv", "lightbox")
