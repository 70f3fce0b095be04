"""Plotting tools: what they draw lands on the right pixels of the right images."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import load_script
from scipy.io import savemat

from lib.spacecraft.drawing import SPACECRAFT_WIREFRAME
from lib.spacecraft.files import read_labels, write_submission
from lib.spacecraft.geometry import project_points
from lib.spacecraft.renderer import tango_model
from lib.utils.drawing import (
    MPII_SKELETON,
    distinct_colors,
    draw_skeleton,
    draw_text_box,
    draw_wireframe,
)

REPO = Path(__file__).resolve().parents[1]
# COCO's person skeleton as the annotation files give it (1-based keypoint numbers).
COCO_SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7],
                 [6, 8], [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5],
                 [4, 6], [5, 7]]
COCO_KEYPOINTS = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
                  "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                  "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
                  "right_ankle"]
# A person facing the camera, 17 COCO keypoints (x, y) in a 100 x 150 box.
PERSON = np.array([[50, 15], [55, 10], [45, 10], [62, 13], [38, 13], [70, 40], [30, 40],
                   [78, 65], [22, 65], [82, 88], [18, 88], [62, 90], [38, 90], [64, 118],
                   [36, 118], [65, 145], [35, 145]], dtype=np.float64)


def gray_jpeg(path: Path, width: int, height: int, level: int = 128) -> np.ndarray:
    """A flat gray JPEG with a faint gradient; returns the image as OpenCV decodes it."""
    ramp = np.linspace(-10, 10, width)[None, :, None]
    image = np.clip(level + ramp + np.zeros((height, width, 3)), 0, 255).astype(np.uint8)
    assert cv2.imwrite(str(path), image)
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def changed(before: np.ndarray, after: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Per point: does the pixel at round(x, y) differ clearly between the two images?"""
    cols, rows = np.round(np.asarray(xy)[:, :2]).astype(int).T
    diff = np.abs(before[rows, cols].astype(int) - after[rows, cols].astype(int)).sum(axis=-1)
    return diff > 40


# ------------------------------------------------------------------------------------------ COCO
@pytest.fixture
def coco_fixture(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    originals = {1: gray_jpeg(images / "000000000001.jpg", 320, 200),
                 2: gray_jpeg(images / "000000000002.jpg", 240, 200, level=90)}
    annotations = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "width": 320, "height": 200},
                   {"id": 2, "file_name": "000000000002.jpg", "width": 240, "height": 200}],
        "annotations": [],
        "categories": [{"id": 1, "name": "person", "supercategory": "person",
                        "keypoints": COCO_KEYPOINTS, "skeleton": COCO_SKELETON}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(annotations))
    confident = np.column_stack([PERSON + [20, 20], np.full(17, 0.9)])
    confident[0, 2] = 0.05  # the nose is unsure: neither it nor its limbs are drawn
    faint = np.column_stack([PERSON + [200, 30], np.full(17, 0.9)])  # a 0.1-score person
    other = np.column_stack([PERSON + [60, 25], np.full(17, 0.8)])
    results = [
        {"image_id": 1, "category_id": 1, "keypoints": confident.ravel().tolist(), "score": 0.9},
        {"image_id": 1, "category_id": 1, "keypoints": faint.ravel().tolist(), "score": 0.1},
        {"image_id": 2, "category_id": 1, "keypoints": other.ravel().tolist(), "score": 0.8},
    ]
    (tmp_path / "results.json").write_text(json.dumps(results))
    return tmp_path, originals, {"confident": confident, "faint": faint, "other": other}


def test_plot_coco_draws_confident_people_over_their_images(run_tool, coco_fixture):
    root, originals, people = coco_fixture
    out = root / "vis"
    run_tool("visualization/plot_coco.py", "--prediction", str(root / "results.json"),
             "--save-path", str(out), "--annotations", str(root / "ann.json"),
             "--images", str(root / "images"))
    assert sorted(p.name for p in out.iterdir()) == ["000000000001.png", "000000000002.png"]
    first = cv2.imread(str(out / "000000000001.png"))
    second = cv2.imread(str(out / "000000000002.png"))
    assert first.shape == originals[1].shape and second.shape == originals[2].shape

    confident = people["confident"]
    assert changed(originals[1], first, confident[1:]).all()  # every confident joint drawn
    assert not changed(originals[1], first, confident[:1]).any()  # the unsure nose is not
    assert not changed(originals[1], first, people["faint"]).any()  # nor the 0.1 person
    assert changed(originals[2], second, people["other"]).all()

    # One colour per limb: the middles of the left and right shins differ in colour.
    shins = [(13, 15), (14, 16)]
    colors = [first[tuple(np.round(confident[[a, b], :2].mean(0)[::-1]).astype(int))]
              for a, b in shins]
    assert np.abs(colors[0].astype(int) - colors[1].astype(int)).sum() > 60


def test_plot_coco_reports_an_image_id_missing_from_the_annotations(run_tool, coco_fixture):
    root, _, _ = coco_fixture
    results = json.loads((root / "results.json").read_text())
    results[0]["image_id"] = 77
    (root / "results.json").write_text(json.dumps(results))
    result = run_tool("visualization/plot_coco.py", "--prediction", str(root / "results.json"),
                      "--save-path", str(root / "vis"), "--gt-anno", str(root / "ann.json"),
                      "--image-path", str(root / "images"), check=False)
    assert result.returncode == 2
    assert "77" in result.stderr and "ann.json" in result.stderr
    assert not (root / "vis").exists()  # checked before anything is drawn


# ------------------------------------------------------------------------------------------ MPII
def mpii_person(offset) -> np.ndarray:
    """16 MPII joints (0-based pixels) of a standing person."""
    return np.array([[30, 140], [32, 110], [35, 80], [55, 80], [58, 110], [60, 140], [45, 80],
                     [45, 40], [45, 30], [45, 10], [20, 75], [22, 55], [28, 40], [62, 40],
                     [68, 55], [70, 75]], dtype=np.float64) + offset


def test_plot_mpii_draws_everyone_of_an_image_at_0_based_pixels(run_tool, tmp_path, monkeypatch):
    (tmp_path / "images").mkdir()
    original = gray_jpeg(tmp_path / "images" / "015601864.jpg", 240, 180)
    people = np.stack([mpii_person([10, 15]), mpii_person([130, 20])])
    entries = [{"image": "015601864.jpg", "center": [60, 90], "scale": 0.8,
                "joints": (p + 1).tolist(), "joints_vis": [1] * 16} for p in people]
    (tmp_path / "valid.json").write_text(json.dumps(entries))
    savemat(tmp_path / "pred.mat", {"preds": people + 1.0})  # as the MPII evaluation writes it

    tool = load_script("visualization/plot_mpii.py", monkeypatch)
    np.testing.assert_allclose(tool.load_predictions(str(tmp_path / "pred.mat")), people)

    out = tmp_path / "vis"
    run_tool("visualization/plot_mpii.py", "--prediction", str(tmp_path / "pred.mat"),
             "--annotations", str(tmp_path / "valid.json"),
             "--images", str(tmp_path / "images"), "--save-path", str(out))
    assert [p.name for p in out.iterdir()] == ["015601864.png"]
    drawn = cv2.imread(str(out / "015601864.png"))
    assert changed(original, drawn, people.reshape(-1, 2)).all()
    assert not changed(original, drawn, np.array([[120.0, 170.0], [5.0, 5.0]])).any()


def test_plot_mpii_rejects_predictions_of_another_set(run_tool, tmp_path):
    (tmp_path / "valid.json").write_text(json.dumps([{"image": "a.jpg"}] * 3))
    savemat(tmp_path / "pred.mat", {"preds": np.ones((2, 16, 2))})
    result = run_tool("visualization/plot_mpii.py", "--prediction", str(tmp_path / "pred.mat"),
                      "--annotations", str(tmp_path / "valid.json"),
                      "--images", str(tmp_path), "--save-path", str(tmp_path / "vis"), check=False)
    assert result.returncode == 2
    assert "2 predictions" in result.stderr and "3 entries" in result.stderr


# ----------------------------------------------------------------------------------- spacecraft
def speed_args(root: Path, submission: Path, out: Path) -> list[str]:
    return ["--submission", str(submission), "--labels",
            str(root / "synthetic" / "validation.json"), "--camera", str(root / "camera.json"),
            "--keypoints", str(root / "keypoints.json"),
            "--images", str(root / "synthetic" / "images"), "--save-path", str(out)]


def landmark_pixels(root: Path, label) -> np.ndarray:
    camera = json.loads((root / "camera.json").read_text())
    landmarks = np.asarray(json.loads((root / "keypoints.json").read_text()))
    return project_points(landmarks, label.q, label.r, np.asarray(camera["cameraMatrix"]))


def test_plot_speed_draws_a_perfect_pose_in_red_over_green(run_tool, speed_root, tmp_path):
    labels = read_labels(speed_root / "synthetic" / "validation.json")
    submission = tmp_path / "perfect.csv"
    write_submission(submission, [lab.filename for lab in labels],
                     np.stack([lab.q for lab in labels]), np.stack([lab.r for lab in labels]))
    out = tmp_path / "vis"
    run_tool("visualization/plot_speed.py", *speed_args(speed_root, submission, out))
    for label in labels:
        original = cv2.imread(str(speed_root / "synthetic" / "images" / label.filename))
        drawn = cv2.imread(str(out / label.filename.replace(".jpg", ".png")))
        pixels = landmark_pixels(speed_root, label)
        assert changed(original, drawn, pixels).all()
        cols, rows = np.round(pixels).astype(int).T
        blue, green, red = drawn[rows, cols].astype(int).T
        assert np.all(red - green > 80) and np.all(red - blue > 80)  # the prediction on top
        # The error box darkens the top-left corner.
        assert drawn[2:10, 2:10].mean() < original[2:10, 2:10].mean() or \
            original[2:10, 2:10].mean() < 5


def test_plot_speed_shows_the_truth_in_green_where_the_prediction_is_off(run_tool, speed_root,
                                                                          tmp_path):
    labels = read_labels(speed_root / "synthetic" / "validation.json")
    r_off = np.stack([lab.r for lab in labels]) + [0.5, 0.3, 0.0]  # metres
    submission = tmp_path / "off.csv"
    write_submission(submission, [lab.filename for lab in labels],
                     np.stack([lab.q for lab in labels]), r_off)
    out = tmp_path / "vis"
    run_tool("visualization/plot_speed.py", *speed_args(speed_root, submission, out))
    for label in labels:
        drawn = cv2.imread(str(out / label.filename.replace(".jpg", ".png")))
        cols, rows = np.round(landmark_pixels(speed_root, label)).astype(int).T
        blue, green, red = drawn[rows, cols].astype(int).T
        assert np.mean(green - np.maximum(red, blue) > 60) >= 0.8


def test_plot_speed_error_text_and_missing_images(run_tool, speed_root, tmp_path, monkeypatch):
    tool = load_script("visualization/plot_speed.py", monkeypatch)
    lines = tool.error_lines(np.radians(10.0), 0.5, 0.05)
    assert lines[2:] == ["rot err 10.00 deg", "trans err 0.500 m (5.00 %)", "score 0.2245"]

    labels = read_labels(speed_root / "synthetic" / "validation.json")
    images = tmp_path / "images"
    images.mkdir()
    kept = labels[0].filename
    (images / kept).write_bytes((speed_root / "synthetic" / "images" / kept).read_bytes())
    submission = tmp_path / "sub.csv"
    write_submission(submission, [lab.filename for lab in labels],
                     np.stack([lab.q for lab in labels]), np.stack([lab.r for lab in labels]))
    args = speed_args(speed_root, submission, tmp_path / "vis")
    args[args.index("--images") + 1] = str(images)
    result = run_tool("visualization/plot_speed.py", *args, check=False)
    assert result.returncode == 1
    assert labels[1].filename in result.stderr
    assert [p.name for p in (tmp_path / "vis").iterdir()] == [kept.replace(".jpg", ".png")]


def test_spacecraft_wireframe_matches_the_synthetic_model():
    """Landmark edges join the panel rectangle and the body's bottom rectangle (tangoPoints'
    order); the anchors are the feet of the antenna rods of lib/spacecraft/renderer.py, whose
    tips are landmarks 8-10, and the body's top corners."""
    model = tango_model()
    landmarks = model.landmarks
    points = SPACECRAFT_WIREFRAME.points(landmarks)
    edges = np.asarray(SPACECRAFT_WIREFRAME.edges)
    lengths = np.linalg.norm(points[edges[:, 0]] - points[edges[:, 1]], axis=1)
    # panel 0.74 (x) x 0.77 (y), body 0.74 x (0.304 + 0.264), body 0.3215 - 0.02 high
    np.testing.assert_allclose(lengths[:4], [0.77, 0.74, 0.77, 0.74], atol=1e-9)
    np.testing.assert_allclose(lengths[4:8], [0.568, 0.74, 0.568, 0.74], atol=1e-9)
    np.testing.assert_allclose(lengths[11:], 0.3015, atol=1e-9)
    # Parts are stacked 8 vertices each (body, panel, 3 rods); a rod's first 4 ring its foot,
    # the body's last 4 are its top corners in the bottom ring's order.
    rod_feet = np.stack([model.vertices[8 * p:8 * p + 4].mean(axis=0) for p in (2, 3, 4)])
    np.testing.assert_allclose(points[11:14], rod_feet, atol=1e-9)
    np.testing.assert_allclose(points[14:], model.vertices[4:8], atol=1e-9)
    np.testing.assert_array_equal(edges[8:11], [[8, 11], [9, 12], [10, 13]])
    np.testing.assert_array_equal(edges[11:], [[4, 14], [5, 15], [6, 16], [7, 17]])


# ------------------------------------------------------------------------------- drawing helpers
def test_drawing_helpers():
    colors = distinct_colors(len(MPII_SKELETON))
    assert len(set(colors)) == len(MPII_SKELETON)

    canvas = np.zeros((60, 60, 3), np.uint8)
    keypoints = np.array([[10.0, 10.0], [50.0, 10.0], [30.0, 50.0]])
    draw_skeleton(canvas, keypoints, [(0, 1), (1, 2)], colors[:2], scores=np.array([1, 1, 0.1]),
                  threshold=0.5, thickness=2)
    assert canvas[10, 30].any()  # limb 0-1 drawn
    assert not canvas[30, 40].any() and not canvas[50, 30].any()  # joint 2 and its limb not

    frame = np.zeros((60, 60, 3), np.uint8)
    points = np.array([[5.0, 5.0], [55.0, 5.0], [np.nan, np.nan]])
    draw_wireframe(frame, points, [(0, 1), (1, 2)], (0, 255, 0), thickness=1)
    assert frame[5, 30, 1] > 200 and frame[:, :, 1].sum() < 255 * 60 * 3  # one line only

    box = np.full((100, 200, 3), 200, np.uint8)
    draw_text_box(box, ["rot err 1.00 deg"], font_scale=0.5)
    assert box[2:25, 2:100].mean() < 150 and box[60:, :].mean() == 200
    with pytest.raises(ValueError, match="2 lines of text but 1"):
        draw_text_box(box, ["a", "b"], colors=[(0, 0, 0)])
