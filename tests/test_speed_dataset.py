"""The spacecraft data set (lib/dataset/speed.py) on a small generated SPEED+ set, its SPEED
layout, bad inputs, and evaluate() end to end on perfect predictions."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision.transforms as T

from lib.dataset.JointsDataset import DatasetFormatError
from lib.dataset.speed import ORACLE_SUFFIX, SpeedDataset, submission_path
from lib.spacecraft.files import SpeedFileError, read_box_file, read_submission, write_box_file
from lib.utils.heatmap_codec import dark_offset, get_max_preds
from lib.utils.transforms import get_affine_transform

WIDTH, HEIGHT = 320, 200  # of the shared rendered set (conftest.SPEED_SET)
NORMALIZE = T.Compose([T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])


def spec_projection(landmarks: np.ndarray, q: np.ndarray, r: np.ndarray,
                    camera_matrix: np.ndarray) -> np.ndarray:
    """The spec's formula written out: dcm(q) as printed, p_cam = dcm^T p + r, K p_cam / z."""
    q0, q1, q2, q3 = np.asarray(q) / np.linalg.norm(q)
    dcm = np.array([
        [q0**2 + q1**2 - q2**2 - q3**2, 2 * (q1 * q2 + q0 * q3), 2 * (q1 * q3 - q0 * q2)],
        [2 * (q1 * q2 - q0 * q3), q0**2 - q1**2 + q2**2 - q3**2, 2 * (q2 * q3 + q0 * q1)],
        [2 * (q1 * q3 + q0 * q2), 2 * (q2 * q3 - q0 * q1), q0**2 - q1**2 - q2**2 + q3**2],
    ])
    p_cam = landmarks @ dcm + r  # rows: (dcm^T p)^T = p^T dcm
    uvw = p_cam @ camera_matrix.T
    return uvw[:, :2] / uvw[:, 2:]


def labels_of(root: Path, name: str) -> list[dict]:
    return json.loads((root / name).read_text())


# ------------------------------------------------------------------------------------- items
def test_items_have_the_documented_shapes(speed_root, speed_cfg):
    ds = SpeedDataset(speed_cfg, str(speed_root), "train", True, NORMALIZE)
    assert len(ds) == 6 and ds.num_joints == 11
    model_input, target, weight, meta = ds[0]
    assert model_input.shape == (3, 64, 64) and model_input.dtype == torch.float32
    assert target.shape == (11, 16, 16) and weight.shape == (11, 1)
    assert meta["filename"] == "img000001.jpg"
    assert meta["image"].endswith("synthetic/images/img000001.jpg")
    assert ds.perf_higher_is_better is False


def test_joints_are_the_projected_labels(speed_root, speed_cfg):
    ds = SpeedDataset(speed_cfg, str(speed_root), "validation", False, NORMALIZE)
    camera = json.loads((speed_root / "camera.json").read_text())
    landmarks = np.asarray(json.loads((speed_root / "keypoints.json").read_text()))
    entries = labels_of(speed_root, "synthetic/validation.json")
    assert [rec["filename"] for rec in ds.db] == [e["filename"] for e in entries]
    for rec, entry in zip(ds.db, entries, strict=True):
        expected = spec_projection(landmarks, entry["q_vbs2tango_true"],
                                   entry["r_Vo2To_vbs_true"], np.asarray(camera["cameraMatrix"]))
        np.testing.assert_allclose(rec["joints_3d"][:, :2], expected, atol=1e-6)
        # The generator keeps the whole model in the image: every landmark counts.
        np.testing.assert_array_equal(rec["joints_3d_vis"][:, 0], np.ones(11))


def test_eval_crops_hold_the_landmarks_with_the_padding_margin(speed_root, speed_cfg):
    ds = SpeedDataset(speed_cfg, str(speed_root), "validation", False, NORMALIZE)
    for index in range(len(ds)):
        _, target, weight, meta = ds[index]
        joints = meta["joints"][:, :2]
        assert np.all(weight.numpy() == 1)
        extent = joints.max(axis=0) - joints.min(axis=0)
        # The landmark box, padded by 1.25, fills the 64-pixel input along its longer side.
        assert extent.max() == pytest.approx(64 / 1.25, rel=1e-4)
        centre = 0.5 * (joints.max(axis=0) + joints.min(axis=0))
        np.testing.assert_allclose(centre, [32.0, 32.0], atol=1e-3)  # the box centre
        # Each target peak sits on its joint (heatmap stride 4).
        peaks = target.flatten(1).argmax(1).numpy()
        np.testing.assert_array_equal(peaks % 16, np.trunc(joints[:, 0] / 4 + 0.5))


def test_training_crops_keep_the_landmarks_under_translation(speed_root, speed_cfg, make_cfg):
    # Padding 1.25 leaves 10 % of the crop on each side of the landmarks; shifts up to 8 %.
    cfg = make_cfg(speed_cfg, {"DATASET.SCALE_FACTOR": 0.0, "DATASET.ROT_FACTOR": 0,
                               "DATASET.SHIFT_FACTOR": 0.08})
    ds = SpeedDataset(cfg, str(speed_root), "train", True, NORMALIZE)
    np.random.seed(0)
    largest = 0.0
    for index in range(len(ds)):
        for _ in range(3):
            _, _, weight, meta = ds[index]
            joints = meta["joints"][:, :2]
            assert np.all((joints >= 0) & (joints <= 63)) and np.all(weight.numpy() == 1)
            shift = np.abs(meta["center"] - ds.db[index]["center"]) / (200 * meta["scale"])
            assert np.all(shift <= 0.08 + 1e-6)
            largest = max(largest, float(shift.max()))
    assert largest > 0.02  # the crop did move


@pytest.mark.parametrize("target_type, largest_error", [("gaussian", 0.5),
                                                          ("gaussian_subpixel", 0.02)])
def test_target_peaks_decode_to_the_crops_landmarks(speed_root, speed_cfg, make_cfg,
                                                     target_type, largest_error):
    # MODEL.TARGET_TYPE reaches the targets: decoded with DARK, the original's peaks are off by
    # their rounding to a heatmap pixel (up to half of one), the sub-pixel ones are not.
    cfg = make_cfg(speed_cfg, {"MODEL.TARGET_TYPE": target_type})
    ds = SpeedDataset(cfg, str(speed_root), "train", True, NORMALIZE)
    np.random.seed(2)
    errors = []
    for index in list(range(len(ds))) * 3:
        _, target, _, meta = ds[index]
        heatmaps = target.numpy()[None]
        coords, _ = get_max_preds(heatmaps)
        decoded = dark_offset(heatmaps, coords, cfg.MODEL.SIGMA)[0]
        exact = meta["joints"][:, :2] / 4  # 64 px crops, 16 px heatmaps
        inside = np.all((exact >= 4) & (exact <= 11), axis=1)  # smoothing not cut by a border
        errors.append(np.abs(decoded - exact)[inside])
    errors = np.concatenate(errors)
    assert len(errors) >= 20
    assert errors.max() <= largest_error
    assert errors.mean() > (0.1 if target_type == "gaussian" else 0.0)


def test_no_flip_even_when_the_config_asks(speed_root, speed_cfg, make_cfg):
    cfg = make_cfg(speed_cfg, {"DATASET.FLIP": True, "DATASET.PROB_HALF_BODY": 1.0})
    ds = SpeedDataset(cfg, str(speed_root), "train", True, NORMALIZE)
    assert ds.flip is False and ds.flip_pairs is None and ds.prob_half_body == 0
    np.random.seed(1)
    for _ in range(10):
        _, _, _, meta = ds[2]
        trans = get_affine_transform(meta["center"], meta["scale"], meta["rotation"], [64, 64])
        image_joints = ds.db[2]["joints_3d"][:, :2]
        expected = image_joints @ trans[:, :2].T + trans[:, 2]
        np.testing.assert_allclose(meta["joints"][:, :2], expected, atol=1e-6)


def test_grayscale_is_fed_as_three_equal_channels(speed_root, speed_cfg):
    ds = SpeedDataset(speed_cfg, str(speed_root), "validation", False, None)
    crop = ds[0][0]
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    assert np.array_equal(crop[..., 0], crop[..., 1]) and np.array_equal(crop[..., 1], crop[..., 2])
    assert crop.std() > 5  # the spacecraft is in it, not an empty crop


def test_image_cache_gives_the_same_items_and_decodes_each_image_once(speed_root, speed_cfg,
                                                                      make_cfg, monkeypatch):
    plain = SpeedDataset(speed_cfg, str(speed_root), "validation", False, None)
    cached = SpeedDataset(make_cfg(speed_cfg, {"DATASET.CACHE_IMAGES_MB": 1}), str(speed_root),
                          "validation", False, None)
    assert plain.image_cache is None and len(cached.image_cache) == 0
    first = [cached[i][0] for i in range(len(cached))]
    decoded = []
    monkeypatch.setattr(cv2, "imread", lambda *args: decoded.append(args) or None)
    for i in range(len(cached)):  # second epoch: from memory, equal to decoding afresh
        np.testing.assert_array_equal(cached[i][0], first[i])
    assert not decoded and len(cached.image_cache) == len(cached)
    monkeypatch.undo()
    for i in range(len(plain)):
        np.testing.assert_array_equal(plain[i][0], first[i])
    image = cached.image_cache.get(cached.db[0]["image"], cv2.IMREAD_GRAYSCALE
                                   | cv2.IMREAD_IGNORE_ORIENTATION, lambda: None)
    assert not image.flags.writeable  # an in-place edit would corrupt every later epoch


def test_image_cache_stops_filling_at_its_budget():
    from lib.utils.image_io import ImageCache

    cache = ImageCache(budget_bytes=1000)
    small, large = np.zeros((10, 60), np.uint8), np.zeros((10, 50), np.uint8)
    assert cache.get("a", 0, lambda: small) is small and len(cache) == 1
    assert cache.get("b", 0, lambda: large) is large and len(cache) == 1  # 600 + 500 > 1000
    assert cache.get("a", 0, lambda: None) is small and cache.used_bytes == 600


def test_photometric_augmentation_is_off_by_default_and_on_when_asked(speed_root, speed_cfg,
                                                                      make_cfg):
    crop = np.full((64, 64), 100, np.uint8)
    plain = SpeedDataset(speed_cfg, str(speed_root), "train", True, NORMALIZE)
    assert plain._augment_image(crop) is crop
    noisy_cfg = make_cfg(speed_cfg, {"DATASET.PROB_NOISE": 1.0, "DATASET.NOISE_SIGMA": 20.0,
                                     "DATASET.PROB_BRIGHTNESS_CONTRAST": 1.0,
                                     "DATASET.PROB_BLUR": 1.0})
    noisy = SpeedDataset(noisy_cfg, str(speed_root), "train", True, NORMALIZE)
    np.random.seed(3)
    out = noisy._augment_image(crop)
    assert out.dtype == np.uint8 and out.shape == crop.shape
    assert out.std() > 1.0 or abs(float(out.mean()) - 100) > 1.0


def test_whole_image_crop_for_the_coarse_model(speed_root, speed_cfg, make_cfg):
    cfg = make_cfg(speed_cfg, {"DATASET.SPEED_FULL_IMAGE": True, "MODEL.IMAGE_SIZE": [64, 40],
                               "MODEL.HEATMAP_SIZE": [16, 10]})
    ds = SpeedDataset(cfg, str(speed_root), "validation", False, NORMALIZE)
    _, _, _, meta = ds[0]
    np.testing.assert_allclose(meta["center"], [(WIDTH - 1) / 2, (HEIGHT - 1) / 2])
    np.testing.assert_allclose(meta["scale"] * 200, [WIDTH, WIDTH * 40 / 64], rtol=1e-6)
    np.testing.assert_allclose(meta["joints"][:, :2], ds.db[0]["joints_3d"][:, :2] * 0.2,
                               atol=0.2)


# ---------------------------------------------------------------------------- unlabelled sets
def test_unlabelled_set_predicts_with_boxes_from_a_file(speed_root, make_cfg, speed_cfg,
                                                        tmp_path):
    boxes = np.tile([40.0, 30.0, 100.0, 80.0], (3, 1))
    names = [e["filename"] for e in labels_of(speed_root, "test/test.json")]
    box_file = write_box_file(str(tmp_path / "boxes.json"), names, boxes)
    cfg = make_cfg(speed_cfg, {"TEST.SPEED_BBOX": "file", "TEST.SPEED_BBOX_FILE": box_file})
    ds = SpeedDataset(cfg, str(speed_root), "test/test", False, NORMALIZE)
    assert not ds.labelled and len(ds) == 3
    model_input, target, weight, meta = ds[1]
    assert model_input.shape == (3, 64, 64)
    assert float(target.abs().sum()) == 0 and float(weight.sum()) == 0
    np.testing.assert_allclose(meta["center"], [90.0, 70.0])
    np.testing.assert_allclose(meta["scale"] * 200, [125.0, 125.0])  # 100 x 80 -> square, 1.25


def test_a_box_file_handed_over_wins_over_the_oracle_setting(speed_root, speed_cfg, tmp_path):
    names = [e["filename"] for e in labels_of(speed_root, "synthetic/validation.json")]
    box_file = write_box_file(str(tmp_path / "boxes.json"), names,
                              np.tile([40.0, 30.0, 100.0, 80.0], (len(names), 1)))
    ds = SpeedDataset(speed_cfg, str(speed_root), "validation", False, NORMALIZE,
                      boxes=read_box_file(box_file))          # TEST.SPEED_BBOX is 'gt'
    assert ds.box_source == "file"
    np.testing.assert_allclose(ds[0][3]["center"], [90.0, 70.0])


def test_unlabelled_set_refuses_oracle_boxes_and_training(speed_root, speed_cfg):
    with pytest.raises(ValueError, match="no poses.*oracle"):
        SpeedDataset(speed_cfg, str(speed_root), "test/test", False, NORMALIZE)
    with pytest.raises(ValueError, match="no poses.*training"):
        SpeedDataset(speed_cfg, str(speed_root), "test/test", True, NORMALIZE)


# ------------------------------------------------------------------------------- SPEED layout
def test_speed_layout_with_the_old_label_key_and_the_speed_camera(speed_root, speed_cfg,
                                                                  tmp_path):
    root = tmp_path / "speed"
    (root / "images" / "train").mkdir(parents=True)
    entries = labels_of(speed_root, "synthetic/train.json")[:2]
    for entry in entries:
        # the SPEED camera (no camera.json) is 1920 x 1200: so must the images be
        small = cv2.imread(str(speed_root / "synthetic" / "images" / entry["filename"]))
        cv2.imwrite(str(root / "images" / "train" / entry["filename"]),
                    cv2.resize(small, (1920, 1200)))
        entry["q_vbs2tango"] = entry.pop("q_vbs2tango_true")
    (root / "train.json").write_text(json.dumps(entries))
    shutil.copy(speed_root / "keypoints.json", root / "keypoints.json")
    ds = SpeedDataset(speed_cfg, str(root), "train", False, NORMALIZE)
    assert ds.camera.width == 1920 and ds.camera.matrix[0, 0] == pytest.approx(3003.41, abs=0.01)
    landmarks = np.asarray(json.loads((root / "keypoints.json").read_text()))
    expected = spec_projection(landmarks, entries[1]["q_vbs2tango"],
                               entries[1]["r_Vo2To_vbs_true"], ds.camera.matrix)
    np.testing.assert_allclose(ds.db[1]["joints_3d"][:, :2], expected, atol=1e-6)
    assert ds.db[1]["image"] == str(root / "images" / "train" / entries[1]["filename"])


# --------------------------------------------------------------------------------- bad inputs
def test_landmark_count_must_equal_num_joints(speed_root, speed_cfg, make_cfg):
    cfg = make_cfg(speed_cfg, {"MODEL.NUM_JOINTS": 17})
    with pytest.raises(ValueError, match=r"11 landmarks.*NUM_JOINTS is 17"):
        SpeedDataset(cfg, str(speed_root), "train", True, NORMALIZE)


def test_image_listed_but_absent_is_named(speed_root, speed_cfg, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(speed_root, root)
    (root / "synthetic" / "images" / "img000008.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="img000008.jpg"):
        SpeedDataset(speed_cfg, str(root), "validation", False, NORMALIZE)


def test_camera_size_must_match_the_images(speed_root, speed_cfg, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(speed_root, root)
    camera = json.loads((root / "camera.json").read_text())
    camera["Nu"], camera["Nv"] = 640, 400  # the images are 320 x 200
    (root / "camera.json").write_text(json.dumps(camera))
    first = root / "synthetic" / "images" / "img000007.jpg"
    with pytest.raises(DatasetFormatError) as error:
        SpeedDataset(speed_cfg, str(root), "validation", False, NORMALIZE)
    assert str(error.value) == (
        f"{root / 'camera.json'}: Nu x Nv = 640 x 400 but the image {first} is 320 x 200: "
        f"the camera does not match the images")
    # without camera.json the SPEED camera (1920 x 1200) is the one that does not fit
    (root / "camera.json").unlink()
    with pytest.raises(DatasetFormatError, match=r"the SPEED camera \(no .*camera.json\): "
                                                 r"Nu x Nv = 1920 x 1200 .* is 320 x 200"):
        SpeedDataset(speed_cfg, str(root), "validation", False, NORMALIZE)


def test_position_behind_the_camera_is_named(speed_root, speed_cfg, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(speed_root, root)
    labels_file = root / "synthetic" / "validation.json"
    entries = json.loads(labels_file.read_text())
    entries[2]["r_Vo2To_vbs_true"][2] = -4.5
    labels_file.write_text(json.dumps(entries))
    with pytest.raises(SpeedFileError) as error:
        SpeedDataset(speed_cfg, str(root), "validation", False, NORMALIZE)
    assert str(error.value) == (
        f"{labels_file}: entry 2 ('{entries[2]['filename']}'): 'r_Vo2To_vbs_true' z = -4.5 m "
        f"puts the spacecraft behind the camera (z must be > 0)")
    entries[2]["r_Vo2To_vbs_true"][2] = 0.0
    labels_file.write_text(json.dumps(entries))
    with pytest.raises(SpeedFileError, match="entry 2 .* z = 0 m puts the spacecraft behind"):
        SpeedDataset(speed_cfg, str(root), "validation", False, NORMALIZE)


def test_camera_without_its_matrix_is_named(speed_root, speed_cfg, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(speed_root, root)
    camera = json.loads((root / "camera.json").read_text())
    del camera["cameraMatrix"]
    (root / "camera.json").write_text(json.dumps(camera))
    with pytest.raises(SpeedFileError, match="camera.json.*cameraMatrix"):
        SpeedDataset(speed_cfg, str(root), "validation", False, NORMALIZE)


def test_unknown_image_set_and_box_source_are_named(speed_root, speed_cfg, make_cfg):
    with pytest.raises(FileNotFoundError, match="nosuchset"):
        SpeedDataset(speed_cfg, str(speed_root), "nosuchset", False, NORMALIZE)
    with pytest.raises(ValueError, match="SPEED_BBOX_FILE"):
        SpeedDataset(make_cfg(speed_cfg, {"TEST.SPEED_BBOX": "file"}), str(speed_root),
                     "validation", False, NORMALIZE)


# ------------------------------------------------------------------------------------ evaluate
def perfect_predictions(ds: SpeedDataset) -> np.ndarray:
    preds = np.ones((len(ds), ds.num_joints, 3))
    preds[:, :, :2] = [rec["joints_3d"][:, :2] for rec in ds.db]
    return preds


def test_evaluate_perfect_predictions_scores_zero_and_round_trips(speed_root, speed_cfg,
                                                                  run_tool, tmp_path):
    cfg = speed_cfg
    ds = SpeedDataset(cfg, str(speed_root), "validation", False, NORMALIZE)
    names = [rec["filename"] for rec in ds.db]
    preds = perfect_predictions(ds)
    order = [2, 0, 3, 1]  # evaluate puts predictions back in data-set order by filename
    table, perf = ds.evaluate(cfg, preds[order], str(tmp_path), None, None,
                              [names[i] for i in order], None)
    assert perf < 1e-6
    assert all(name.endswith(ORACLE_SUFFIX) for name in table)  # GT boxes: an oracle, flagged
    assert table["ESA score" + ORACLE_SUFFIX] == perf
    assert table["landmark err (px)" + ORACLE_SUFFIX] < 1e-9
    assert table["PnP failures" + ORACLE_SUFFIX] == 0

    csv_file = submission_path(str(tmp_path), "validation", oracle=True)
    assert csv_file.endswith("results/submission_validation_oracle.csv")
    assert read_submission(csv_file).filenames == names
    done = run_tool("tools/speed_score.py", "--gt", speed_root / "synthetic" / "validation.json",
                    "--submission", csv_file)
    result = json.loads(done.stdout)
    assert result["n"] == 4 and result["esa_score"] < 1e-6 and result["rot_err_deg_mean"] < 1e-4


def test_evaluate_writes_and_scores_a_fallback_pose_for_a_failed_image(speed_root, speed_cfg,
                                                                        make_cfg, tmp_path):
    ds_gt = SpeedDataset(speed_cfg, str(speed_root), "validation", False, NORMALIZE)
    boxes = write_box_file(str(tmp_path / "b.json"), [r["filename"] for r in ds_gt.db],
                           np.tile([0.0, 0.0, WIDTH, HEIGHT], (4, 1)))
    cfg = make_cfg(speed_cfg, {"TEST.SPEED_BBOX": "file", "TEST.SPEED_BBOX_FILE": boxes})
    ds = SpeedDataset(cfg, str(speed_root), "validation", False, NORMALIZE)
    preds = perfect_predictions(ds)
    preds[1, :, 2] = 0.0  # no confident landmark: PnP cannot run, EPnP on all of them can
    table, perf = ds.evaluate(cfg, preds, str(tmp_path))
    assert not any(ORACLE_SUFFIX in name for name in table)  # boxes from a file: no oracle
    assert table["PnP failures"] == 1 and table["fallback: EPnP on all landmarks"] == 1
    assert table["fallback: prior pose"] == 0
    assert perf < 1e-6  # exact landmarks: the fallback finds the true pose, the file scores it
    rows = read_submission(submission_path(str(tmp_path), "validation"))
    truth = labels_of(speed_root, "synthetic/validation.json")[1]
    assert abs(rows.q[1] @ np.asarray(truth["q_vbs2tango_true"])) == pytest.approx(1, abs=1e-9)


def test_evaluate_unlabelled_writes_the_submission_only(speed_root, speed_cfg, make_cfg,
                                                        tmp_path):
    names = [e["filename"] for e in labels_of(speed_root, "test/test.json")]
    box_file = write_box_file(str(tmp_path / "boxes.json"), names,
                              np.tile([0.0, 0.0, WIDTH, HEIGHT], (3, 1)))
    cfg = make_cfg(speed_cfg, {"TEST.SPEED_BBOX": "file", "TEST.SPEED_BBOX_FILE": box_file})
    ds = SpeedDataset(cfg, str(speed_root), "test/test", False, NORMALIZE)
    truth = labels_of(speed_root, "test/labels.json")
    landmarks = np.asarray(json.loads((speed_root / "keypoints.json").read_text()))
    matrix = np.asarray(json.loads((speed_root / "camera.json").read_text())["cameraMatrix"])
    preds = np.ones((3, 11, 3))
    preds[:, :, :2] = [spec_projection(landmarks, e["q_vbs2tango_true"], e["r_Vo2To_vbs_true"],
                                       matrix) for e in truth]
    table, perf = ds.evaluate(cfg, preds, str(tmp_path))
    assert math.isnan(perf) and table == {
        "images": 3.0, "PnP failures": 0.0, "fallback: EPnP on all landmarks": 0.0,
        "fallback: coarse landmarks": 0.0, "fallback: prior pose": 0.0}
    rows = read_submission(submission_path(str(tmp_path), "test/test"))
    assert rows.filenames == names
    q_true = np.asarray([e["q_vbs2tango_true"] for e in truth])
    np.testing.assert_allclose(np.abs(np.sum(rows.q * q_true, axis=1)), 1.0, atol=1e-7)


def test_item_pixels_match_a_direct_warp(speed_root, speed_cfg):
    ds = SpeedDataset(speed_cfg, str(speed_root), "validation", False, None)
    crop, _, _, meta = ds[3]
    image = cv2.imread(ds.db[3]["image"], cv2.IMREAD_GRAYSCALE)
    trans = get_affine_transform(meta["center"], meta["scale"], 0, [64, 64])
    expected = cv2.warpAffine(image, trans, (64, 64), flags=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(crop[..., 0], expected)
