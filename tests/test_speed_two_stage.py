"""Box sources of the spacecraft test crops: the box file format, the 'file' source, and the
two-stage 'model' source (lib/core/speed_two_stage.py) end to end with a tiny coarse HRNet."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import yaml
from conftest import SPEED_CFG
from yacs.config import CfgNode as CN

import lib.core.engine as engine
import lib.core.speed_two_stage as two_stage
from lib.config import cfg as default_cfg
from lib.config import default_config, merge_from_list
from lib.core.predictor import Predictor
from lib.dataset.JointsDataset import DatasetFormatError, gamma_lookup_table
from lib.dataset.speed import SpeedDataset
from lib.models import build_model
from lib.spacecraft.files import (
    Crop,
    SpeedFileError,
    load_camera,
    read_box_file,
    read_landmarks,
    write_box_file,
)
from lib.spacecraft.geometry import project_points
from lib.spacecraft.pose_solver import (
    agreeing_landmarks,
    pnp_options,
    pose_agreement,
    relative_residuals,
    solve_poses,
)

WIDTH, HEIGHT = 320, 200  # conftest's shared set
NORMALIZE = T.Compose([T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
TINY_HRNET = {
    "FINAL_CONV_KERNEL": 1,
    "STAGE2": {"NUM_MODULES": 1, "NUM_BRANCHES": 2, "BLOCK": "BASIC", "NUM_BLOCKS": [1, 1],
               "NUM_CHANNELS": [8, 16], "FUSE_METHOD": "SUM"},
}


@pytest.fixture(scope="module")
def data_root(speed_root) -> Path:
    """The session's shared set (validation: img000007-10, 320 x 200)."""
    return speed_root


def fine_cfg(root: Path, options: dict | None = None):
    """The tests' spacecraft setting (conftest.SPEED_CFG) at ``root``, then dotted-key
    ``options`` merged as on the command line; left unfrozen for the tests to adjust."""
    overrides = {**SPEED_CFG, "DATASET.ROOT": str(root), **(options or {})}
    cfg = default_config()
    merge_from_list(cfg, [item for pair in overrides.items() for item in pair], check=False)
    return cfg


# ---------------------------------------------------------------------------- box file format
def test_box_file_round_trip(tmp_path):
    boxes = np.array([[1.5, 2.0, 30.25, 40.0], [0.0, 0.0, 5.0, 6.0]])
    path = write_box_file(str(tmp_path / "boxes.json"), ["a.jpg", "b.jpg"], boxes, [0.9, 0.4])
    entries = json.loads(Path(path).read_text())
    assert entries[0] == {"filename": "a.jpg", "bbox": [1.5, 2.0, 30.25, 40.0], "score": 0.9}
    read = read_box_file(path)
    assert sorted(read) == ["a.jpg", "b.jpg"]
    np.testing.assert_array_equal(read["a.jpg"].box, boxes[0])
    assert read["b.jpg"].score == 0.4
    assert read["a.jpg"].gamma == 1.0  # no tone curve written: none
    # the tone search's gammas travel with the boxes
    path = write_box_file(str(tmp_path / "toned.json"), ["a.jpg", "b.jpg"], boxes, [0.9, 0.4],
                          [0.5, 1.0])
    assert json.loads(Path(path).read_text())[0]["gamma"] == 0.5
    assert [crop.gamma for crop in read_box_file(path).values()] == [0.5, 1.0]


def test_box_file_variants_best_score_wins(tmp_path):
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps([
        {"image_name": "a.jpg", "bbox": [0, 0, 10, 10], "score": 0.2},
        {"image_name": "a.jpg", "bbox": [5, 5, 20, 20], "score": 0.7},
        {"filename": "b.jpg", "bbox": [1, 1, 2, 2]},
    ]))
    read = read_box_file(str(as_list))
    np.testing.assert_array_equal(read["a.jpg"][0], [5, 5, 20, 20])
    assert read["b.jpg"][1] == 1.0  # score defaults to 1
    keyed = tmp_path / "keyed.json"
    keyed.write_text(json.dumps({"a.jpg": [{"bbox": [0, 0, 4, 4], "score": 0.1},
                                           {"bbox": [1, 1, 3, 3], "score": 0.3}],
                                 "b.jpg": {"bbox": [2, 2, 6, 6]}}))
    read = read_box_file(str(keyed))
    np.testing.assert_array_equal(read["a.jpg"][0], [1, 1, 3, 3])
    np.testing.assert_array_equal(read["b.jpg"][0], [2, 2, 6, 6])


@pytest.mark.parametrize("entry, message", [
    ({"bbox": [0, 0, 1, 1]}, "filename"),
    ({"filename": "a.jpg"}, "no 'bbox'"),
    ({"filename": "a.jpg", "bbox": [0, 0, 0, 5]}, "w, h > 0"),
    ({"filename": "a.jpg", "bbox": [0, 0, 5]}, r"\[x, y, w, h\]"),
    ({"filename": "a.jpg", "bbox": [0, 0, 5, 5], "score": "high"}, "score"),
    ({"filename": "a.jpg", "bbox": [0, 0, 5, 5], "gamma": 0}, "'gamma' must be a positive"),
    ({"filename": "a.jpg", "bbox": [0, 0, 5, 5], "gamma": "dark"}, "'gamma' numbers"),
])
def test_bad_box_file_entries_are_named(tmp_path, entry, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"filename": "ok.jpg", "bbox": [0, 0, 1, 1]}, entry]))
    with pytest.raises(SpeedFileError, match=f"entry 1.*{message}"):
        read_box_file(str(path))


# --------------------------------------------------------------------------------- 'file' path
def test_file_source_gives_the_crops_of_its_boxes(data_root, tmp_path):
    names = [e["filename"] for e in json.loads((data_root / "synthetic/validation.json")
                                               .read_text())]
    boxes = np.array([[10, 20, 40, 40], [0, 0, 60, 30], [100, 50, 20, 80], [5, 5, 10, 10]],
                     dtype=float)
    path = write_box_file(str(tmp_path / "det.json"), names, boxes, np.linspace(0.1, 0.4, 4))
    cfg = fine_cfg(data_root, {"TEST.SPEED_BBOX": "file", "TEST.SPEED_BBOX_FILE": path})
    ds = SpeedDataset(cfg, str(data_root), "validation", False, NORMALIZE)
    centres = np.array([rec["center"] for rec in ds.db])
    np.testing.assert_allclose(centres, boxes[:, :2] + boxes[:, 2:] / 2)
    sides = np.array([rec["scale"][0] * 200 for rec in ds.db])
    np.testing.assert_allclose(sides, boxes[:, 2:].max(axis=1) * 1.25, rtol=1e-6)
    assert [rec["score"] for rec in ds.db] == pytest.approx(np.linspace(0.1, 0.4, 4))
    # The true landmarks still come along for scoring.
    assert np.all(ds.db[0]["joints_3d_vis"][:, 0] == 1)


def test_file_source_names_an_image_without_a_box(data_root, tmp_path):
    path = write_box_file(str(tmp_path / "det.json"), ["img000007.jpg"], [[0, 0, 9, 9]])
    cfg = fine_cfg(data_root, {"TEST.SPEED_BBOX": "file", "TEST.SPEED_BBOX_FILE": path})
    with pytest.raises(DatasetFormatError, match="no box for 'img000008.jpg'"):
        SpeedDataset(cfg, str(data_root), "validation", False, NORMALIZE)


# ------------------------------------------------------------------------------- 'model' path
def test_boxes_from_landmarks_hand_case():
    landmarks = np.array([[
        [10.0, 20.0, 0.9], [30.0, 60.0, 0.5], [20.0, 40.0, 0.05], [500.0, 500.0, 0.0],
    ], [
        [10.0, 10.0, 0.9], [11.0, 11.0, 0.01], [12.0, 12.0, 0.0], [13.0, 13.0, 0.0],
    ], [
        [2.0, 5.0, 1.0], [98.0, 10.0, 1.0], [50.0, 95.0, 1.0], [50.0, 50.0, 1.0],
    ]])
    boxes, scores = two_stage.boxes_from_landmarks(landmarks, 0.1, 1.5, 100, 100)
    # Image 0: confident (10, 20) and (30, 60): centre (20, 40), 20 x 40 enlarged to 30 x 60.
    np.testing.assert_allclose(boxes[0], [5.0, 10.0, 30.0, 60.0])
    assert scores[0] == pytest.approx(0.7)
    # Image 1: one confident landmark spans no box: the whole image, score 0.
    np.testing.assert_allclose(boxes[1], [0.0, 0.0, 99.0, 99.0])
    assert scores[1] == 0
    # Image 2: the enlarged box is clipped to the image.
    np.testing.assert_allclose(boxes[2], [0.0, 0.0, 99.0, 99.0])
    # One size per image (tools/infer.py's folders of mixed sizes): image 2 clipped to 60 x 80.
    sized, _ = two_stage.boxes_from_landmarks(landmarks, 0.1, 1.5, np.array([100, 100, 60]),
                                              np.array([100, 100, 80]))
    np.testing.assert_allclose(sized[:2], boxes[:2])
    np.testing.assert_allclose(sized[2], [0.0, 0.0, 59.0, 79.0])


def test_min_box_side_bounds_every_view_within_the_distance_limit():
    """A unit cube (smallest width 1, reach sqrt(3)/2) at focal 1000 and 9 m: 1000 / 9.866 px,
    and no pose within 9 m images it smaller; no limit, no floor."""
    cube = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    camera = np.diag([1000.0, 1200.0, 1.0])
    side = two_stage.min_box_side(cube, camera, 9.0)
    assert side == pytest.approx(1000.0 / (9.0 + 3 ** 0.5 / 2), rel=2e-3)
    assert two_stage.min_box_side(cube, camera, 0.0) == 0.0
    assert two_stage.min_box_side(cube * [1.0, 1.0, 0.0], camera, 9.0) == 0.0  # flat
    rng = np.random.default_rng(3)
    q = rng.normal(size=(500, 4))
    r = rng.normal(size=(500, 3)) * [0.5, 0.5, 0.0] + [0.0, 0.0, 1.0]
    r *= rng.uniform(2.0, 9.0, size=(500, 1)) / np.linalg.norm(r, axis=1, keepdims=True)
    sides = np.ptp(project_points(cube, q / np.linalg.norm(q, axis=1, keepdims=True), r, camera),
                   axis=1)
    assert sides.min() >= side


def test_boxes_from_landmarks_widens_a_bunched_box_to_the_floor():
    """Landmarks bunched on 4 x 2 px (a lost coarse model) give a box min_side wide before the
    enlargement, about their centre; a box already wider keeps its size."""
    landmarks = np.array([[[100.0, 50.0, 0.8], [104.0, 52.0, 0.8]],
                          [[100.0, 50.0, 0.8], [160.0, 90.0, 0.8]]])
    boxes, _ = two_stage.boxes_from_landmarks(landmarks, 0.1, 1.5, 640, 400, min_side=20.0)
    np.testing.assert_allclose(boxes[0], [102.0 - 15.0, 51.0 - 15.0, 30.0, 30.0])
    np.testing.assert_allclose(boxes[1], [130.0 - 45.0, 70.0 - 30.0, 90.0, 60.0])


# ---------------------------------------------------------------------- crop candidates
CAMERA = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 200.0], [0.0, 0.0, 1.0]])
BODY = np.array([[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1], [-1, -1, 1], [1, -1, 1],
                 [1, 1, 1], [-1, 1, 1], [0, 0, 2.0], [2.0, 0, 0], [0, 2.0, 0]]) * 0.5
POSE_Q = np.array([0.9, 0.2, -0.3, 0.25]) / np.linalg.norm([0.9, 0.2, -0.3, 0.25])


def true_landmarks(distances) -> np.ndarray:
    """N x 11 x 3 exact projections (confidence 1) of BODY at these distances."""
    return np.stack([np.concatenate([project_points(BODY, POSE_Q, np.array([0.1, -0.1, z]),
                                                    CAMERA), np.ones((11, 1))], axis=1)
                     for z in distances])


def two_stage_cfg(root: Path, cfg_file: str, weights: str, options: dict | None = None):
    """TEST.SPEED_BBOX 'model' on the set at ``root`` with a coarse model of these files."""
    return fine_cfg(root, {"TEST.SPEED_BBOX": "model", "TEST.SPEED_COARSE_CFG": cfg_file,
                           "TEST.SPEED_COARSE_MODEL_FILE": weights, **(options or {})})


def candidate_cfg(options: dict | None = None):
    cfg = fine_cfg(Path("/unused"), {
        "TEST.SPEED_COARSE_CONF_THRE": -1.0, "TEST.SPEED_COARSE_BOX_ENLARGE": 1.0,
        "TEST.PNP_RANSAC_REPROJ_ERR": 3.0, "TEST.PNP_RANSAC_ITERS": 200, **(options or {})})
    cfg.freeze()
    return cfg


def test_pose_agreement_counts_the_confidence_of_the_landmarks_the_pose_explains():
    landmarks = true_landmarks([8.0, 8.0])
    landmarks[:, :, 2] = 0.5
    landmarks[0, 10, :2] += 40.0  # one landmark off by far more than 2% of the box
    poses = solve_poses(landmarks[..., :2], landmarks[..., 2], BODY, CAMERA, None,
                        **pnp_options(candidate_cfg()))
    assert poses.success.all()
    poses.success[1] = False
    agreement = pose_agreement(landmarks, poses, BODY, CAMERA, None, 0.02)
    np.testing.assert_allclose(agreement, [10 * 0.5, 0.0])


def test_pose_agreement_ranks_landmarks_that_all_miss_the_tolerance():
    """Two images whose every landmark misses its pose by more than the 2% a count needs (both
    would score 0, a tie): the graded agreement still prefers the less scattered one, and
    matches its Gaussian weight of each residual."""
    landmarks = true_landmarks([8.0, 8.0])
    rng = np.random.default_rng(36)  # a draw that PnP explains no landmark of within 2%
    size = np.sqrt(np.prod(np.ptp(landmarks[0, :, :2], axis=0)))
    directions = rng.normal(size=(11, 2))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    landmarks[0, :, :2] += 0.08 * size * directions
    landmarks[1, :, :2] += 0.16 * size * directions
    poses = solve_poses(landmarks[..., :2], landmarks[..., 2], BODY, CAMERA, None,
                        **pnp_options(candidate_cfg({"TEST.PNP_RANSAC_REPROJ_ERR": 20.0})))
    assert poses.success.all()
    residuals = relative_residuals(landmarks, poses, BODY, CAMERA, None)
    assert np.all(residuals > 0.02)
    assert not agreeing_landmarks(landmarks, poses, BODY, CAMERA, None, 0.02).any()
    agreement = pose_agreement(landmarks, poses, BODY, CAMERA, None, 0.02)
    np.testing.assert_allclose(agreement, np.exp(-0.5 * (residuals / 0.02) ** 2).sum(axis=1))
    assert agreement[0] > agreement[1] > 0


def test_search_crops_keeps_the_candidate_whose_landmarks_agree_with_their_pose():
    """A fine model that only sees the spacecraft whole in a crop covering its box: image 0's
    coarse box cuts it off (only the looser candidate works), image 1's is right (a tie: the
    first candidate stays)."""
    truth = true_landmarks([6.0, 9.0])
    coarse = truth.copy()
    centre = coarse[0, :, :2].mean(axis=0)
    coarse[0, :, :2] = centre + 0.6 * (coarse[0, :, :2] - centre)  # a box 0.6 x too small
    rng = np.random.default_rng(0)
    calls = []

    def locate(boxes, gamma):
        assert gamma == 1.0
        calls.append(boxes.copy())
        low, high = truth[..., :2].min(axis=1), truth[..., :2].max(axis=1)
        whole = np.all((boxes[:, :2] <= low + 1e-6) & (boxes[:, :2] + boxes[:, 2:] >= high - 1e-6),
                       axis=1)
        found = truth.copy()
        noise = rng.uniform(-60, 60, size=found[..., :2].shape)
        found[~whole, :, :2] += noise[~whole]
        return found

    cfg = candidate_cfg({"TEST.SPEED_CROP_REFINE": 0, "TEST.SPEED_CROP_CANDIDATES": [2.0]})
    boxes, _, gammas = two_stage.search_crops(cfg, coarse, locate, 640, 400, BODY, CAMERA,
                                              None)
    np.testing.assert_array_equal(gammas, [1.0, 1.0])
    main, loose = (two_stage.boxes_from_landmarks(coarse, -1.0, e, 640, 400)[0]
                   for e in (1.0, 2.0))
    np.testing.assert_allclose(boxes[0], loose[0])
    np.testing.assert_allclose(boxes[1], main[1])
    assert len(calls) == 2  # one look per candidate, no re-framing
    # one candidate and no refinement: the coarse boxes, untouched, without a look
    calls.clear()
    alone, _, _ = two_stage.search_crops(candidate_cfg(), coarse, locate, 640, 400, BODY,
                                         CAMERA, None)
    np.testing.assert_allclose(alone, main)
    assert not calls


def test_search_crops_keeps_the_gamma_whose_landmarks_agree_with_their_pose():
    """A fine model that finds image 0's landmarks only through gamma 0.5 (a dark lab shot)
    and image 1's through any curve: image 0 takes 0.5, image 1 keeps no curve (a tie)."""
    truth = true_landmarks([6.0, 9.0])
    rng = np.random.default_rng(0)
    looks = []

    def locate(boxes, gamma):
        looks.append(gamma)
        found = truth.copy()
        if gamma != 0.5:
            found[0, :, :2] += rng.uniform(-60, 60, size=found[0, :, :2].shape)
        return found

    cfg = candidate_cfg({"TEST.SPEED_CROP_REFINE": 0,
                         "TEST.SPEED_GAMMA_CANDIDATES": [0.5, 2.0]})
    boxes, _, gammas = two_stage.search_crops(cfg, truth, locate, 640, 400, BODY, CAMERA, None)
    np.testing.assert_array_equal(gammas, [0.5, 1.0])
    assert looks == [1.0, 0.5, 2.0]  # the plain crops, then each curve once
    np.testing.assert_allclose(boxes, two_stage.boxes_from_landmarks(truth, -1.0, 1.0, 640,
                                                                     400)[0])


def write_coarse_model(tmp_path: Path) -> tuple[str, str]:
    """A tiny coarse config file and the weights of a randomly initialised model of it."""
    coarse = {
        "WORKERS": 0,
        "DATASET": {"DATASET": "speed", "ROOT": "/nonexistent", "KEYPOINTS_FILE": "x.json",
                    "SPEED_FULL_IMAGE": True},
        "MODEL": {"NAME": "pose_hrnet", "NUM_JOINTS": 11, "IMAGE_SIZE": [64, 40],
                  "HEATMAP_SIZE": [16, 10], "EXTRA": TINY_HRNET},
        "TEST": {"BATCH_SIZE_PER_GPU": 2, "POST_PROCESS": True},
    }
    cfg_file = tmp_path / "coarse.yaml"
    cfg_file.write_text(yaml.safe_dump(coarse))
    config = two_stage.coarse_config(fine_cfg(tmp_path, {"TEST.SPEED_COARSE_CFG": str(cfg_file)}))
    torch.manual_seed(0)
    model = build_model(config, is_train=True)
    weights = tmp_path / "coarse.pth"
    torch.save(model.state_dict(), weights)
    return str(cfg_file), str(weights)


def image_paths(root: Path, names) -> list[str]:
    return [str(root / "synthetic" / "images" / name) for name in names]


def file_tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time (ns)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("conf_threshold", [0.1, -1.0])
def test_model_source_end_to_end_with_a_tiny_coarse_model(data_root, tmp_path, conf_threshold):
    cfg_file, weights = write_coarse_model(tmp_path)
    cfg = two_stage_cfg(data_root, cfg_file, weights,
                        {"TEST.SPEED_COARSE_CONF_THRE": conf_threshold})
    boxes, coarse = two_stage.two_stage_boxes(cfg, "validation", str(tmp_path / "out"))
    assert sorted(coarse) == sorted(boxes) and coarse["img000007.jpg"].shape == (11, 3)
    assert sorted(boxes) == [f"img{n:06d}.jpg" for n in range(7, 11)]
    for box, score, gamma in boxes.values():
        assert gamma == 1.0  # no tone candidates
        x, y, w, h = box
        assert 0 <= x and 0 <= y and w >= 1 and h >= 1
        assert x + w <= WIDTH - 1 + 1e-9 and y + h <= HEIGHT - 1 + 1e-9
        assert 0.0 <= score
    if conf_threshold < 0:  # every landmark counts: a real box from the coarse landmarks
        assert all(crop.score != 0 for crop in boxes.values())
    # the box file written for inspection holds the same crops
    written = read_box_file(two_stage.box_file_path(str(tmp_path / "out"), "validation"))
    for name, (box, score, _) in boxes.items():
        np.testing.assert_array_equal(written[name].box, box)
        assert written[name].score == score
    # The fine data set takes them as its crops.
    ds = SpeedDataset(cfg, str(data_root), "validation", False, NORMALIZE, boxes=boxes)
    assert ds.box_source == "model" and len(ds) == 4
    model_input, _, _, meta = ds[0]
    assert model_input.shape == (3, 64, 64)
    box = boxes[meta["filename"]][0]
    np.testing.assert_allclose(meta["center"], box[:2] + box[2:] / 2, rtol=1e-6)


def test_crop_refinement_re_frames_each_crop_on_the_fine_landmarks(data_root, tmp_path):
    cfg_file, weights = write_coarse_model(tmp_path)
    cfg = two_stage_cfg(data_root, cfg_file, weights, {"TEST.SPEED_COARSE_CONF_THRE": -1.0,
                                                 "TEST.SPEED_CROP_REFINE": 1})
    cfg.MODEL.EXTRA = CN(TINY_HRNET, new_allowed=True)
    torch.manual_seed(1)
    fine = build_model(cfg, is_train=False).eval()
    refined, _ = two_stage.two_stage_boxes(cfg, "validation", str(tmp_path / "out"), fine)
    # without a fine model (validation while training) the coarse boxes are the crops
    coarse, _ = two_stage.two_stage_boxes(cfg, "validation", str(tmp_path / "plain"))
    names = sorted(coarse)
    # the refined box is the box of the fine landmarks found in the coarse crop
    items = [(path, coarse[name][0].tolist(), 1.0)
             for name, path in zip(names, image_paths(data_root, names), strict=True)]
    landmarks = Predictor(cfg, fine).predict_items(items)
    expected, _ = two_stage.boxes_from_landmarks(landmarks, 0.0, 1.0, WIDTH, HEIGHT)
    for name, box in zip(names, expected, strict=True):
        np.testing.assert_allclose(refined[name][0], box, atol=1e-9)
    assert any(not np.allclose(refined[n][0], coarse[n][0]) for n in refined)


def test_crop_candidates_end_to_end_each_crop_is_one_candidates_re_framed_box(data_root,
                                                                              tmp_path):
    cfg_file, weights = write_coarse_model(tmp_path)
    cfg = two_stage_cfg(data_root, cfg_file, weights, {"TEST.SPEED_COARSE_CONF_THRE": -1.0,
                                                 "TEST.SPEED_CROP_REFINE": 1,
                                                 "TEST.SPEED_CROP_CANDIDATES": [1.5, 2.0]})
    cfg.MODEL.EXTRA = CN(TINY_HRNET, new_allowed=True)
    torch.manual_seed(1)
    fine = build_model(cfg, is_train=False).eval()
    chosen, _ = two_stage.two_stage_boxes(cfg, "validation", str(tmp_path / "out"), fine)
    names = sorted(chosen)
    paths = image_paths(data_root, names)
    whole = [(path, [0.0, 0.0, WIDTH, HEIGHT], 1.0) for path in paths]
    coarse_landmarks = two_stage.coarse_predictor(cfg).predict_items(whole, whole_image=True)
    predictor = Predictor(cfg, fine)
    candidates = []
    for enlarge in (1.1, 1.5, 2.0):  # SPEED_COARSE_BOX_ENLARGE (default 1.1), then the list
        boxes, _ = two_stage.boxes_from_landmarks(coarse_landmarks, -1.0, enlarge, WIDTH,
                                                  HEIGHT)
        landmarks = predictor.predict_items(
            [(path, box.tolist(), 1.0) for path, box in zip(paths, boxes, strict=True)])
        candidates.append(two_stage.reframed_boxes(landmarks, boxes, WIDTH, HEIGHT)[0])
    for index, name in enumerate(names):
        assert any(np.allclose(chosen[name][0], c[index], atol=1e-9) for c in candidates)


def test_gamma_candidates_end_to_end_each_crop_keeps_its_best_agreeing_tone(data_root,
                                                                           tmp_path):
    cfg_file, weights = write_coarse_model(tmp_path)
    cfg = two_stage_cfg(data_root, cfg_file, weights, {"TEST.SPEED_COARSE_CONF_THRE": -1.0,
                                                 "TEST.SPEED_GAMMA_CANDIDATES": [0.5, 2.0],
                                                 "TEST.SPEED_CROP_AGREEMENT_TOL": 0.5,
                                                 "TEST.PNP_CONF_THRE": 0.0})
    cfg.MODEL.EXTRA = CN(TINY_HRNET, new_allowed=True)
    torch.manual_seed(1)
    fine = build_model(cfg, is_train=False).eval()
    out = tmp_path / "out"
    chosen, _ = two_stage.two_stage_boxes(cfg, "validation", str(out), fine)
    names = sorted(chosen)
    paths = image_paths(data_root, names)
    whole = [(path, [0.0, 0.0, WIDTH, HEIGHT], 1.0) for path in paths]
    coarse_landmarks = two_stage.coarse_predictor(cfg).predict_items(whole, whole_image=True)
    boxes, _ = two_stage.boxes_from_landmarks(coarse_landmarks, -1.0, 1.1, WIDTH, HEIGHT)
    items = [(path, box.tolist(), 1.0) for path, box in zip(paths, boxes, strict=True)]
    predictor = Predictor(cfg, fine)
    camera = load_camera(str(data_root))
    body = read_landmarks(str(data_root / "keypoints.json"), 11)
    agreements = []
    for gamma in (1.0, 0.5, 2.0):
        landmarks = predictor.predict_items(items, gammas=[gamma] * len(items))
        poses = solve_poses(landmarks[..., :2], landmarks[..., 2], body, camera.matrix,
                            camera.dist_coeffs, **pnp_options(cfg))
        agreements.append(pose_agreement(landmarks, poses, body, camera.matrix,
                                         camera.dist_coeffs, 0.5))
    # the first of the best (np.argmax): a tie keeps no curve
    expected = np.array([1.0, 0.5, 2.0])[np.argmax(np.stack(agreements), axis=0)]
    np.testing.assert_array_equal([chosen[name].gamma for name in names], expected)
    np.testing.assert_array_equal([crop.box for crop in chosen.values()],
                                  [boxes[names.index(name)] for name in chosen])
    written = read_box_file(two_stage.box_file_path(str(out), "validation"))
    assert {name: crop.gamma for name, crop in written.items()} == {
        name: crop.gamma for name, crop in chosen.items()}


def test_a_crops_gamma_is_the_tone_curve_its_input_is_seen_through(data_root):
    box = np.array([100.0, 50.0, 120.0, 90.0])
    names = [f"img{n:06d}.jpg" for n in range(7, 11)]
    cfg = fine_cfg(data_root, {"TEST.SPEED_BBOX": "file"})
    inputs = [SpeedDataset(cfg, str(data_root), "validation", False, NORMALIZE,
                           boxes={name: Crop(box, 1.0, gamma) for name in names})[0][0][0]
              for gamma in (1.0, 0.5)]
    plain = np.rint((inputs[0].numpy() * 0.229 + 0.485) * 255).astype(np.uint8)
    expected = (gamma_lookup_table(0.5)[plain] / 255.0 - 0.485) / 0.229
    np.testing.assert_allclose(inputs[1].numpy(), expected, atol=1e-5)
    assert (inputs[1] > inputs[0] + 1e-3).float().mean() > 0.5  # gamma 0.5 lifts the shadows
    assert gamma_lookup_table(1.0).tolist() == list(range(256))
    assert gamma_lookup_table(0.5)[64] == 128  # 255 * (64 / 255) ** 0.5 = 127.75


def test_the_crop_search_decodes_each_image_once_whatever_the_chunks(data_root, tmp_path,
                                                                      monkeypatch):
    cfg_file, weights = write_coarse_model(tmp_path)
    cfg = two_stage_cfg(data_root, cfg_file, weights, {"TEST.SPEED_COARSE_CONF_THRE": -1.0,
                                                 "TEST.SPEED_CROP_REFINE": 2,
                                                 "TEST.SPEED_CROP_CANDIDATES": [1.5, 2.0],
                                                 "TEST.BATCH_SIZE_PER_GPU": 2})
    cfg.MODEL.EXTRA = CN(TINY_HRNET, new_allowed=True)
    torch.manual_seed(1)
    fine = build_model(cfg, is_train=False).eval()
    reads = []
    # the module, not the class lib.dataset exports under its name
    joints_dataset = importlib.import_module("lib.dataset.JointsDataset")
    read_image = joints_dataset.read_image
    monkeypatch.setattr(joints_dataset, "read_image",
                        lambda path, *args, **kwargs: reads.append(path)
                        or read_image(path, *args, **kwargs))
    whole, _ = two_stage.two_stage_boxes(cfg, "validation", str(tmp_path / "whole"), fine)
    # 4 images, 1 coarse + 3 x (2 re-framing + 1 final) fine passes each: one decode each
    assert sorted(reads) == sorted(set(reads)) and len(reads) == 4
    # one image a chunk rounds up to the models' batch of 2: two chunks, the same batches
    monkeypatch.setattr(two_stage, "SEARCH_CHUNK_IMAGES", 1)
    chunked, _ = two_stage.two_stage_boxes(cfg, "validation", str(tmp_path / "chunked"), fine)
    assert len(reads) == 8
    assert sorted(whole) == sorted(chunked)
    for name, (box, score, _) in whole.items():
        np.testing.assert_array_equal(chunked[name][0], box)
        assert chunked[name][1] == score


def test_two_stage_inference_writes_nothing_but_the_box_file(data_root, tmp_path):
    """The crops pass between the steps in memory: the data folder is left as it was, and the
    output folder gains the one box file."""
    cfg_file, weights = write_coarse_model(tmp_path)
    cfg = two_stage_cfg(data_root, cfg_file, weights, {"TEST.SPEED_CROP_REFINE": 1,
                                                 "TEST.SPEED_CROP_CANDIDATES": [1.5]})
    cfg.MODEL.EXTRA = CN(TINY_HRNET, new_allowed=True)
    fine = build_model(cfg, is_train=False).eval()
    out = tmp_path / "out"
    out.mkdir()
    data_before, work_before = file_tree(data_root), file_tree(tmp_path)
    mode = data_root.stat().st_mode
    for folder in [data_root, *[p for p in data_root.rglob("*") if p.is_dir()]]:
        folder.chmod(0o555)  # read-only (binding for a non-root user; root is checked below)
    try:
        two_stage.two_stage_boxes(cfg, "validation", str(out), fine)
    finally:
        for folder in [data_root, *[p for p in data_root.rglob("*") if p.is_dir()]]:
            folder.chmod(mode)
    assert file_tree(data_root) == data_before
    new_files = set(file_tree(tmp_path)) - set(work_before)
    assert new_files == {"out/speed_boxes_validation.json"}


def test_coarse_config_is_read_over_pristine_defaults(tmp_path):
    """tools/train.py merges the fine experiment into the shared defaults; none of it may leak
    into the coarse model's config."""
    cfg_file, _ = write_coarse_model(tmp_path)
    fine = fine_cfg(Path("/data/speed"), {"TEST.SPEED_COARSE_CFG": cfg_file})
    was_frozen = default_cfg.is_frozen()
    default_cfg.defrost()
    default_cfg.MODEL.EXTRA.STAGE3 = CN({"NUM_MODULES": 1})
    default_cfg.MODEL.SIGMA = 3
    try:
        coarse = two_stage.coarse_config(fine)
    finally:
        del default_cfg.MODEL.EXTRA["STAGE3"]
        default_cfg.MODEL.SIGMA = 2
        if was_frozen:
            default_cfg.freeze()
    assert "STAGE3" not in coarse.MODEL.EXTRA and coarse.MODEL.SIGMA == 2
    assert coarse.MODEL.IMAGE_SIZE == [64, 40] and coarse.DATASET.SPEED_FULL_IMAGE is True
    assert coarse.DATASET.ROOT == "/data/speed"
    assert coarse.DATASET.KEYPOINTS_FILE == "keypoints.json"


def test_model_source_needs_its_files(data_root, tmp_path):
    with pytest.raises(ValueError, match="SPEED_COARSE_MODEL_FILE"):
        two_stage.two_stage_boxes(fine_cfg(data_root, {"TEST.SPEED_BBOX": "model"}),
                                  "validation", str(tmp_path))
    with pytest.raises(ValueError, match="SPEED_COARSE_CFG"):
        two_stage.coarse_config(fine_cfg(data_root, {"TEST.SPEED_BBOX": "model"}))
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="coarse model's crops"):
        SpeedDataset(fine_cfg(data_root, {"TEST.SPEED_BBOX": "model"}), str(data_root),
                     "validation", False, NORMALIZE)


def test_engine_hook_runs_the_two_stage_crops_only_for_the_model_source(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(two_stage, "two_stage_boxes",
                        lambda cfg, image_set, out, fine: calls.append((image_set, out))
                        or ({}, {}))
    built = []
    monkeypatch.setattr(engine, "build_dataset",
                        lambda cfg, image_set, is_train, transform, **kw: built.append(kw))
    engine._datasets(fine_cfg(tmp_path), train_too=False, output_dir="out")
    engine._datasets(fine_cfg(tmp_path, {"TEST.SPEED_BBOX": "model"}), train_too=True,
                     output_dir="out")
    human = fine_cfg(tmp_path, {"TEST.SPEED_BBOX": "model"})
    human.DATASET.DATASET = "coco"
    engine._datasets(human, train_too=False, output_dir="out")
    assert calls == [("validation", "out")]
    # the training set never gets any
    assert built == [{}, {"boxes": {}, "coarse_landmarks": {}}, {}, {}]
