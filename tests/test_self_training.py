"""Pseudo-label self-training: which poses become labels, the labels file, the fine-tune run."""

from __future__ import annotations

import logging
import re
import shutil

import numpy as np
import pytest
import torch
from test_adaptation import tiny_test_run
from test_speed_two_stage import BODY, CAMERA, true_landmarks

import lib.core.self_training as self_training
from lib.config import ConfigValueError
from lib.dataset.mixing import epoch_counts
from lib.spacecraft.files import load_camera, read_labels, read_landmarks, write_box_file
from lib.spacecraft.geometry import project_points
from lib.spacecraft.pose_solver import (
    PoseBatch,
    agreeing_landmarks,
    consistent_poses,
    solve_poses,
)


def test_only_poses_most_landmarks_agree_with_become_pseudo_labels():
    landmarks = true_landmarks([6.0, 6.0, 6.0, 6.0])
    landmarks[1, :5, :2] += 60.0  # five of eleven far off: RANSAC's pose explains only six
    landmarks[2, 0, :2] += 60.0   # one off: ten of eleven agree
    poses = solve_poses(landmarks[..., :2], landmarks[..., 2], BODY, CAMERA, None,
                        ransac_reproj_err=3.0, ransac_iterations=300)
    assert poses.success.all()
    poses.success[3] = False  # PnP failed: never a label, whatever its landmarks
    agree = agreeing_landmarks(landmarks, poses, BODY, CAMERA, None, 0.05)
    assert agree.sum(axis=1).tolist() == [11, 6, 10, 0]
    keep = consistent_poses(landmarks, poses, BODY, CAMERA, None, 0.05, 0.6)
    assert keep.tolist() == [True, False, True, False]
    assert consistent_poses(landmarks, poses, BODY, CAMERA, None, 0.05, 0.5).tolist() == [
        True, True, True, False]
    # a pose farther than the limit (or behind the camera) is no label either
    far = PoseBatch(poses.q.copy(), poses.r * np.array([[1.0], [1.0], [10.0], [1.0]]),
                    poses.success.copy(), list(poses.reasons))
    assert consistent_poses(landmarks, far, BODY, CAMERA, None, 0.05, 0.6,
                            max_distance=20.0).tolist() == [True, False, False, False]


class KnownLandmarks(self_training.Predictor):
    """The model's landmarks replaced by given ones (the true landmarks of the test images,
    garbage for the last): what the self-training keeps depends on them alone."""

    landmarks: np.ndarray

    def predict(self, loader):
        return self.landmarks.copy()


def test_self_training_labels_the_consistent_images_and_fine_tunes_on_them(
        speed_root, tmp_path, monkeypatch, caplog):
    root = tmp_path / "set"
    shutil.copytree(speed_root, root)
    labels = read_labels(root / "test" / "labels.json")
    camera = load_camera(root)
    body = read_landmarks(root / "keypoints.json")
    truth = np.stack([project_points(body, label.q, label.r, camera.matrix, camera.dist_coeffs)
                      for label in labels])
    given = np.concatenate([truth, np.ones((len(labels), 11, 1))], axis=2)
    given[-1, :, :2] = np.random.default_rng(0).uniform(0, 200, (11, 2))
    KnownLandmarks.landmarks = given
    monkeypatch.setattr(self_training, "Predictor", KnownLandmarks)

    cfg_file, cfg, _ = tiny_test_run(root, tmp_path, 5, {
        "DATASET.ROOT": str(root), "DATASET.TEST_SET": "test/test", "TEST.SPEED_BBOX": "gt",
        "SELF_TRAINING.EPOCHS": 1, "SELF_TRAINING.LR": 1e-3, "TRAIN.BATCH_SIZE_PER_GPU": 2,
        "TEST.PNP_RANSAC_REPROJ_ERR": 3.0})
    # the unlabelled test split has no oracle boxes: predict it with boxes of the true poses
    monkeypatch.setattr(self_training, "test_split", lambda cfg, out, model: _test_images(
        cfg, root))
    start = torch.load(cfg.TEST.MODEL_FILE, weights_only=True)
    with caplog.at_level(logging.INFO):
        result = self_training.self_train(cfg, cfg_file)
    # the 2 kept images beside 2 of the 6 synthetic training ones (SOURCE_SHARE 0.5)
    assert "an epoch draws 2 + 2 images of test/pseudo+train" in caplog.text

    pseudo = read_labels(root / "test" / "pseudo.json")
    assert [label.filename for label in pseudo] == [label.filename for label in labels[:-1]]
    for label, true in zip(pseudo, labels, strict=False):
        np.testing.assert_allclose(np.abs(label.q @ true.q), 1.0, atol=1e-8)
        np.testing.assert_allclose(label.r, true.r, atol=1e-6)
    assert result["kept"] == [len(labels) - 1]
    assert result["rounds"][0][0].image_set == "test/pseudo"
    tuned = torch.load(result["model_file"], weights_only=True)
    assert result["model_file"].startswith(str(tmp_path / "out" / "self_training" / "test"))
    assert any(not torch.equal(start[key], tuned[key]) for key in start)


def test_several_domains_train_one_model_round_after_round(speed_root, tmp_path, monkeypatch,
                                                           caplog):
    root = tmp_path / "set"
    shutil.copytree(speed_root, root)
    shutil.copytree(root / "test", root / "lamp")  # a second domain, the same images
    labels = read_labels(root / "test" / "labels.json")
    camera = load_camera(root)
    body = read_landmarks(root / "keypoints.json")
    truth = np.stack([project_points(body, label.q, label.r, camera.matrix, camera.dist_coeffs)
                      for label in labels])
    given = np.concatenate([truth, np.ones((len(labels), 11, 1))], axis=2)
    given[0, :, :2] = np.random.default_rng(1).uniform(0, 200, (11, 2))
    KnownLandmarks.landmarks = given
    monkeypatch.setattr(self_training, "Predictor", KnownLandmarks)
    monkeypatch.setattr(self_training, "test_split", lambda cfg, out, model: _test_images(
        cfg, root))
    cfg_file, cfg, _ = tiny_test_run(root, tmp_path, 5, {
        "DATASET.ROOT": str(root), "DATASET.TEST_SET": "test/test+lamp/test",
        "TEST.SPEED_BBOX": "gt", "SELF_TRAINING.EPOCHS": 1, "SELF_TRAINING.ROUNDS": 2,
        "TRAIN.BATCH_SIZE_PER_GPU": 2, "TEST.PNP_RANSAC_REPROJ_ERR": 3.0})
    boxes = [str(tmp_path / f"{domain}_boxes.json") for domain in ("test", "lamp")]
    for path in boxes:
        write_box_file(path, [label.filename for label in labels],
                       np.tile([10.0, 10.0, 100.0, 80.0], (len(labels), 1)), np.ones(len(labels)))
    crops = []  # (set, TEST.SPEED_BBOX, its file) of every prediction
    label_images = self_training.write_pseudo_labels

    def recorded(config, weights_file, output_dir):
        crops.append((config.DATASET.TEST_SET, config.TEST.SPEED_BBOX,
                      config.TEST.SPEED_BBOX_FILE))
        return label_images(config, weights_file, output_dir)

    monkeypatch.setattr(self_training, "write_pseudo_labels", recorded)
    with caplog.at_level(logging.INFO):
        result = self_training.self_train(cfg, cfg_file, boxes)
    # the first round reads the crops it was given, the second finds its own
    assert crops == [("test/test", "file", boxes[0]), ("lamp/test", "file", boxes[1]),
                     ("test/test", "gt", ""), ("lamp/test", "gt", "")]
    # each round: both domains' 2 kept images, the 6 synthetic ones for half the samples
    assert caplog.text.count("an epoch draws 2 + 2 + 4 images of test/pseudo+lamp/pseudo+"
                             "train") == 2
    assert result["kept"] == [4, 4]
    assert [[labels.image_set for labels in round] for round in result["rounds"]] == [
        ["test/pseudo", "lamp/pseudo"]] * 2
    for domain in ("test", "lamp"):
        kept = [label.filename for label in read_labels(root / domain / "pseudo.json")]
        assert kept == [label.filename for label in labels[1:]]
    second = tmp_path / "out" / "self_training" / "test+lamp" / "round2"
    assert result["model_file"].startswith(str(second))
    # the second round started from the first round's weights
    first = tmp_path / "out" / "self_training" / "test+lamp" / "round1"
    assert re.search(rf"pretrained tensors from {re.escape(str(first))}\S*final_state.pth",
                     caplog.text)

    cfg.defrost()
    cfg.TEST.SPEED_BBOX = "file"
    with pytest.raises(ConfigValueError, match="TEST.SPEED_BBOX: 'file' holds the crops of one"):
        self_training.self_train(cfg, cfg_file)


def test_a_round_trains_on_the_pseudo_labels_beside_its_source_share():
    from lib.config import default_config

    cfg = default_config()
    labels = [self_training.PseudoLabels("lightbox/pseudo", "unused.json", 60, 100)]
    assert self_training.fine_tune_sets(cfg, labels) == ("lightbox/pseudo+train", [0.5, 0.5])
    cfg.SELF_TRAINING.SOURCE_SHARE = 0.0
    assert self_training.fine_tune_sets(cfg, labels) == ("lightbox/pseudo", [])
    cfg.SELF_TRAINING.SOURCE_SHARE = 0.4
    cfg.DATASET.TRAIN_SET, cfg.DATASET.TRAIN_SET_SHARES = "train+other", [3.0, 1.0]
    sets, shares = self_training.fine_tune_sets(cfg, labels)
    assert sets == "lightbox/pseudo+train+other"
    np.testing.assert_allclose(shares, [0.6, 0.3, 0.1])
    # several domains: each pseudo-labelled set in proportion to its size (each seen about once
    # an epoch), a set that kept nothing left out
    labels += [self_training.PseudoLabels("sunlamp/pseudo", "unused.json", 20, 100),
               self_training.PseudoLabels("dark/pseudo", "unused.json", 0, 100)]
    cfg.DATASET.TRAIN_SET, cfg.DATASET.TRAIN_SET_SHARES = "train", []
    sets, shares = self_training.fine_tune_sets(cfg, labels)
    assert sets == "lightbox/pseudo+sunlamp/pseudo+train"
    np.testing.assert_allclose(shares, [0.45, 0.15, 0.4])
    assert epoch_counts([60, 20, 4000], shares) == [60, 20, 53]
    cfg.SELF_TRAINING.SOURCE_SHARE = 0.0
    sets, shares = self_training.fine_tune_sets(cfg, labels)
    assert sets == "lightbox/pseudo+sunlamp/pseudo"
    np.testing.assert_allclose(shares, [0.75, 0.25])


def _test_images(cfg, root):
    """The domain's test split read as a labelled set (its withheld labels) with oracle
    boxes."""
    from lib.dataset.speed import SpeedDataset
    from lib.utils.transforms import input_transform

    domain = cfg.DATASET.TEST_SET.split("/")[0]
    shutil.copy(root / domain / "labels.json", root / domain / "withheld.json")
    return SpeedDataset(cfg, str(root), f"{domain}/withheld", False, input_transform())


def test_no_consistent_image_keeps_the_model_and_writes_nothing(
        speed_root, tmp_path, monkeypatch):
    root = tmp_path / "set"
    shutil.copytree(speed_root, root)
    KnownLandmarks.landmarks = np.zeros((3, 11, 3))  # nothing confident: PnP fails everywhere
    monkeypatch.setattr(self_training, "Predictor", KnownLandmarks)
    monkeypatch.setattr(self_training, "test_split", lambda cfg, out, model: _test_images(
        cfg, root))
    cfg_file, cfg, _ = tiny_test_run(root, tmp_path, 6, {
        "DATASET.ROOT": str(root), "DATASET.TEST_SET": "test/test", "TEST.SPEED_BBOX": "gt"})
    result = self_training.self_train(cfg, cfg_file)
    assert result["model_file"] == cfg.TEST.MODEL_FILE and result["kept"] == [0]
    assert not (root / "test" / "pseudo.json").exists()


def test_self_training_needs_a_speedplus_domain_and_weights(speed_cfg):
    with pytest.raises(ConfigValueError, match="DATASET.TEST_SET.*'<domain>/<name>'"):
        self_training.pseudo_image_set("validation")
    assert self_training.pseudo_image_set("lightbox/test") == "lightbox/pseudo"
    with pytest.raises(ConfigValueError, match="TEST.MODEL_FILE"):
        self_training.self_train(speed_cfg, "tiny.yaml")


def test_tool_refuses_a_set_outside_a_domain_in_one_line(run_tool, speed_root, tmp_path):
    done = run_tool("tools/self_train.py", "--cfg", "experiments/speed/hrnet/demo_fine.yaml",
                    "DATASET.ROOT", str(speed_root), "OUTPUT_DIR", str(tmp_path),
                    "TEST.MODEL_FILE", str(tmp_path / "w.pth"), check=False)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "DATASET.TEST_SET" in done.stderr and "validation" in done.stderr
