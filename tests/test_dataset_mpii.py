"""MPII data set: records, items, PCKh numbers and error messages."""

import json
import os
import random
import shutil

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from scipy.io import loadmat

from lib.dataset import DatasetFormatError, MPIIDataset, build_dataset, mpii
from lib.dataset.mpii import PCKH_NAMES, compute_pckh
from tests.datagen import MPII_JOINT_NAMES, fixture_cfg, make_mpii_fixture
from tests.reference_pipeline import reference_getitem

NORMALIZE = T.Compose([T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
WRISTS_AND_ANKLES = [0, 5, 10, 15]


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("mpii")
    return make_mpii_fixture(root, num_train=4, num_valid=6, num_test=2, seed=0)


def _dataset(fixture, image_set="valid", is_train=False, transform=NORMALIZE, overrides=None):
    cfg = fixture_cfg("mpii", fixture["root"], overrides, image_size=(64, 64),
                      heatmap_size=(16, 16))
    return cfg, mpii(cfg, fixture["root"], image_set, is_train, transform)


def _perfect_preds(fixture):
    return fixture["valid_joints"] - 1  # 0-based, as the engine's predictions


# ---- records and items ---------------------------------------------------------------------
def test_center_scale_and_joint_conversion(fixture):
    _, ds = _dataset(fixture)
    for rec, entry in zip(ds.db, fixture["valid"], strict=True):
        s = entry["scale"]
        # center 15 * scale lower, scale x 1.25, then 1-based -> 0-based
        np.testing.assert_allclose(rec["center"], [entry["center"][0] - 1,
                                                   entry["center"][1] + 15 * s - 1])
        np.testing.assert_allclose(rec["scale"], [s * 1.25, s * 1.25])
        vis = np.array(entry["joints_vis"])
        np.testing.assert_array_equal(rec["joints_3d_vis"][:, 0], vis)
        np.testing.assert_array_equal(rec["joints_3d"][vis > 0, :2],
                                      np.array(entry["joints"])[vis > 0] - 1)
        assert rec["image"] == os.path.join(fixture["root"], "images", entry["image"])


def test_hand_computed_center_and_scale(tmp_path):
    info = make_mpii_fixture(tmp_path, num_train=1, num_valid=1)
    path = os.path.join(info["root"], "annot", "valid.json")
    entries = json.loads(open(path).read())
    entries[0]["center"], entries[0]["scale"] = [80, 60], 0.4
    with open(path, "w") as f:
        json.dump(entries, f)
    cfg = fixture_cfg("mpii", info["root"])
    rec = mpii(cfg, info["root"], "valid", False).db[0]
    np.testing.assert_allclose(rec["center"], [79, 60 + 6 - 1])
    np.testing.assert_allclose(rec["scale"], [0.5, 0.5])


def test_items(fixture):
    _, ds = _dataset(fixture)
    model_input, target, weight, meta = ds[0]
    assert model_input.shape == (3, 64, 64) and model_input.dtype == torch.float32
    assert target.shape == (16, 16, 16) and weight.shape == (16, 1)
    np.testing.assert_array_equal(weight[:, 0].numpy(), fixture["valid_vis"][0])
    assert meta["center"].dtype == np.float64  # MPII keeps the original's float64 boxes


@pytest.mark.parametrize("half_body", [0.0, 1.0])
def test_training_items_equal_the_original_algorithm(fixture, half_body):
    _, ds = _dataset(fixture, "train", True, overrides={"DATASET.PROB_HALF_BODY": half_body,
                                                        "DATASET.COLOR_RGB": True})
    for idx in range(len(ds)):
        for seed in range(10 * idx, 10 * idx + 5):
            np.random.seed(seed)
            random.seed(seed)
            ours = ds[idx]
            np.random.seed(seed)
            random.seed(seed)
            ref = reference_getitem(ds, idx)
            for a, b in zip(ours[:3], ref[:3], strict=True):
                assert torch.equal(a, b)
            for key in ours[3]:
                np.testing.assert_array_equal(np.asarray(ours[3][key]), np.asarray(ref[3][key]))


def test_build_dataset(fixture):
    cfg = fixture_cfg("mpii", fixture["root"])
    ds = build_dataset(cfg, "valid", False)
    assert isinstance(ds, MPIIDataset) and len(ds) == 6


def test_test_split_has_no_labels(fixture):
    _, ds = _dataset(fixture, "test")
    assert len(ds) == 2 and not ds.db[0]["joints_3d_vis"].any()
    assert ds[0][0].shape == (3, 64, 64)


# ---- PCKh ----------------------------------------------------------------------------------
def test_perfect_predictions_score_100(fixture, tmp_path):
    cfg, ds = _dataset(fixture)
    preds = _perfect_preds(fixture)
    name_value, perf = ds.evaluate(cfg, preds, str(tmp_path))
    assert list(name_value) == list(PCKH_NAMES)
    assert perf == name_value["Mean"] == pytest.approx(100.0)
    assert all(v == pytest.approx(100.0) for v in name_value.values())
    saved = loadmat(tmp_path / "pred.mat")["preds"]
    np.testing.assert_allclose(saved, fixture["valid_joints"])  # written 1-based


def test_wrists_and_ankles_beyond_half_a_head_score_zero(fixture, tmp_path):
    # Shift wrists and ankles by 0.6 head sizes (> 0.5): those parts score 0, the others 100.
    # Mean weights the 14 scored joints (pelvis and thorax excluded) by their visible counts.
    cfg, ds = _dataset(fixture)
    preds = _perfect_preds(fixture).copy()
    preds[:, WRISTS_AND_ANKLES, 0] += 0.6 * fixture["head_sizes"][:, None]
    name_value, perf = ds.evaluate(cfg, preds, str(tmp_path))
    assert name_value["Wrist"] == name_value["Ankle"] == 0
    for part in ("Head", "Shoulder", "Elbow", "Hip", "Knee"):
        assert name_value[part] == pytest.approx(100.0)
    counts = fixture["valid_vis"].sum(axis=0)
    scored = [j for j in range(16) if j not in (6, 7)]
    wrong = counts[WRISTS_AND_ANKLES].sum()
    expected = 100.0 * (counts[scored].sum() - wrong) / counts[scored].sum()
    assert perf == pytest.approx(expected, abs=1e-9)


def test_hand_computed_pckh_table():
    # Two samples, head size 10 (box diagonal 10 / 0.6), every joint visible except the right
    # ankle of sample 1. Shifts: right knee 4 px (within 5) in both, left wrist 6 px (beyond) in
    # sample 0 only, pelvis 100 px (not scored). Expected: Knee 100, Wrist (50 + 100) / 2 = 75,
    # Ankle 100; Mean over 14 joints with counts 2 (right ankle 1): 26 - 1 wrong of 27 visible.
    gt_pos = np.zeros((16, 2, 2))
    gt_pos[:, 0, :] = np.arange(16)[:, None] * 20.0
    side = 10 / 0.6 / np.sqrt(2)
    headboxes = np.zeros((2, 2, 2))
    headboxes[1] = side
    missing = np.zeros((16, 2))
    missing[0, 1] = 1  # right ankle of sample 1
    names = np.empty((1, 16), dtype=object)
    for j, name in enumerate(MPII_JOINT_NAMES):
        names[0, j] = np.array([name])
    gt = {"dataset_joints": names, "jnt_missing": missing, "pos_gt_src": gt_pos,
          "headboxes_src": headboxes}
    pred = gt_pos.copy()
    pred[1, 1, :] += 4  # right knee, y
    pred[15, 0, 0] += 6  # left wrist, sample 0
    pred[6, 0, :] += 100  # pelvis
    table = compute_pckh(pred, gt)
    assert table["Knee"] == pytest.approx(100.0)
    assert table["Wrist"] == pytest.approx(75.0)
    assert table["Ankle"] == pytest.approx(100.0)
    assert table["Mean"] == pytest.approx(100.0 * 26 / 27)
    # Mean@0.1 reads the 0.11 row: 1.05 px (0.105 head) passes it, 1.15 px (0.115) fails it.
    pred_near = gt_pos.copy()
    pred_near[:, 0, 0] += 1.05
    pred_near[:, 0, 1] += 1.15
    table = compute_pckh(pred_near, gt)
    assert table["Mean"] == pytest.approx(100.0)
    assert table["Mean@0.1"] == pytest.approx(100.0 * 14 / 27)  # sample 0's 14 joints


def test_test_split_writes_predictions_only(fixture, tmp_path, caplog):
    cfg, ds = _dataset(fixture, "test")
    preds = np.zeros((2, 16, 3))
    with caplog.at_level("INFO"):
        name_value, perf = ds.evaluate(cfg, preds, str(tmp_path))
    assert perf == 0 and list(name_value) == list(PCKH_NAMES) and not any(name_value.values())
    assert "no labels" in caplog.text
    assert loadmat(tmp_path / "pred.mat")["preds"].shape == (2, 16, 2)


# ---- errors --------------------------------------------------------------------------------
def _edited_root(fixture, tmp_path, edit):
    root = tmp_path / "edited"
    shutil.copytree(os.path.join(fixture["root"], "annot"), root / "annot")
    path = root / "annot" / "valid.json"
    entries = json.loads(path.read_text())
    edit(entries)
    path.write_text(json.dumps(entries))
    return str(root)


def test_missing_annotation_file_is_named(tmp_path):
    cfg = fixture_cfg("mpii", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"annot/valid.json"):
        mpii(cfg, str(tmp_path), "valid", False)


def test_wrong_joint_count_is_named(fixture, tmp_path):
    def edit(entries):
        entries[2]["joints"] = entries[2]["joints"][:15]

    root = _edited_root(fixture, tmp_path, edit)
    with pytest.raises(DatasetFormatError, match=r"valid.json: entry 2 .* has 15 joints, "
                                                 r"expected 16"):
        mpii(fixture_cfg("mpii", root), root, "valid", False)


def test_missing_field_and_empty_set(fixture, tmp_path):
    root = _edited_root(fixture, tmp_path, lambda entries: entries[1].pop("scale"))
    with pytest.raises(DatasetFormatError, match="entry 1 has no 'scale'"):
        mpii(fixture_cfg("mpii", root), root, "valid", False)
    root = _edited_root(fixture, tmp_path / "b", lambda entries: entries.clear())
    with pytest.raises(DatasetFormatError, match="no samples"):
        mpii(fixture_cfg("mpii", root), root, "valid", False)


def test_num_joints_must_match(fixture):
    cfg = fixture_cfg("mpii", fixture["root"], overrides={"MODEL.NUM_JOINTS": 17})
    with pytest.raises(ValueError, match="NUM_JOINTS is 17 .* 16 joints"):
        mpii(cfg, fixture["root"], "valid", False)


def test_evaluate_errors(fixture, tmp_path):
    cfg, ds = _dataset(fixture)
    with pytest.raises(ValueError, match="5 predictions for 6 labelled samples"):
        ds.evaluate(cfg, _perfect_preds(fixture)[:5], str(tmp_path))
    root = _edited_root(fixture, tmp_path, lambda entries: None)
    gt_file = os.path.join(root, "annot", "gt_valid.mat")
    moved = mpii(fixture_cfg("mpii", root), root, "valid", False)
    os.remove(gt_file)
    with pytest.raises(FileNotFoundError, match="gt_valid.mat"):
        moved.evaluate(cfg, _perfect_preds(fixture), str(tmp_path))


def test_missing_gt_file_is_named_at_construction(fixture, tmp_path):
    root = _edited_root(fixture, tmp_path, lambda entries: None)
    gt_file = os.path.join(root, "annot", "gt_valid.mat")
    os.remove(gt_file)
    # before any epoch: the validation set refuses to be built, naming the file
    with pytest.raises(FileNotFoundError, match=f"not found: {gt_file} "):
        mpii(fixture_cfg("mpii", root), root, "valid", False)
    # training from the same split, and the unlabelled test split, need no such file
    assert len(mpii(fixture_cfg("mpii", root), root, "valid", True)) == 6
    assert len(mpii(fixture_cfg("mpii", root), root, "test", False)) == 2


def test_non_finite_and_absurd_joints_are_dropped_with_one_warning(fixture, tmp_path, caplog):
    def edit(entries):
        entries[1]["joints"][3] = [float("nan"), 40.0]
        entries[1]["joints_vis"][3] = 1
        entries[4]["joints"][0] = [1e30, 5.0]
        entries[4]["joints"][9] = [7.0, float("-inf")]

    root = _edited_root(fixture, tmp_path, edit)
    shutil.copytree(os.path.join(fixture["root"], "images"), os.path.join(root, "images"))
    with caplog.at_level("WARNING"):
        _, ds = _dataset({"root": root})
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    ann_file = os.path.join(root, "annot", "valid.json")
    image = fixture["valid"][1]["image"]
    assert warnings[0].startswith(f"=> {ann_file}: 3 keypoint(s) not finite or beyond 1e+06")
    assert f"the first: entry 1 ({image}), joint 3 = [nan, 39.0]" in warnings[0]
    for n, joint in [(1, 3), (4, 0), (4, 9)]:
        np.testing.assert_array_equal(ds.db[n]["joints_3d"][joint], [0, 0, 0])
        np.testing.assert_array_equal(ds.db[n]["joints_3d_vis"][joint], [0, 0, 0])
    # the other joints keep their values (1-based -> 0-based) and visibilities
    entry = fixture["valid"][4]
    np.testing.assert_allclose(ds.db[4]["joints_3d"][5, :2], np.array(entry["joints"][5]) - 1)
    assert ds.db[4]["joints_3d_vis"][5, 0] == entry["joints_vis"][5]
    assert all(np.isfinite(rec["joints_3d"]).all() for rec in ds.db)
    _, target, weight, meta = ds[1]
    assert torch.isfinite(target).all() and weight[3, 0] == 0
    assert np.isfinite(meta["joints"]).all()


def test_clean_file_gives_no_warning(fixture, caplog):
    with caplog.at_level("WARNING"):
        _dataset(fixture)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
