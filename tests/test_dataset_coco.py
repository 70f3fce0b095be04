"""COCO data set: records, items, augmentation, evaluation numbers and error messages."""

import json
import math
import os
import random
import shutil
import zipfile

import cv2
import numpy as np
import pytest
import torch
import torchvision.transforms as T
from torch.utils.data import DataLoader

from lib.dataset import (
    COCODataset,
    DatasetFormatError,
    UnknownDatasetError,
    build_dataset,
    coco,
)
from lib.dataset.coco import COCO_STAT_NAMES, clean_box, image_id_from_path
from lib.nms import COCO_SIGMAS
from lib.nms.oks_nms import _oks_iou_loop, _oks_nms_loop
from lib.utils.image_io import configure_opencv_for_workers
from lib.utils.transforms import affine_transform_points, get_affine_transform
from tests.datagen import fixture_cfg, make_coco_fixture
from tests.reference_pipeline import reference_getitem

NORMALIZE = T.Compose([T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
META_KEYS = {"image", "filename", "imgnum", "joints", "joints_vis", "center", "scale",
             "rotation", "score"}


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    val = make_coco_fixture(root, "val2017", num_images=4, people_per_image=2, seed=0)
    train = make_coco_fixture(root, "train2017", num_images=3, people_per_image=2, seed=1)
    return {"root": str(root), "val": val, "train": train}


def _dataset(fixture, image_set="val2017", is_train=False, transform=NORMALIZE, overrides=None):
    cfg = fixture_cfg("coco", fixture["root"], {"TEST.USE_GT_BBOX": True, **(overrides or {})})
    return cfg, coco(cfg, fixture["root"], image_set, is_train, transform)


def _seeded(seed, fn, *args):
    np.random.seed(seed)
    random.seed(seed)
    return fn(*args)


def _assert_items_equal(a, b):
    for x, y in zip(a[:3], b[:3], strict=True):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y)
        else:
            np.testing.assert_array_equal(x, y)
    assert a[3].keys() == b[3].keys()
    for key in a[3]:
        np.testing.assert_array_equal(np.asarray(a[3][key]), np.asarray(b[3][key]), err_msg=key)


# ---- records and items ---------------------------------------------------------------------
def test_box_helpers_hand_computed(fixture):
    assert clean_box([10, 20, 41, 81], 160, 120) == [10, 20, 40, 80]
    assert clean_box([-5, 100, 30, 50], 160, 120) == [0, 100, 29, 19]  # clipped at both ends
    assert clean_box([170, 0, 10, 10], 160, 120) is None  # right of the image
    _, ds = _dataset(fixture)
    center, scale = ds._box_to_center_scale(10, 20, 40, 80)  # input 96 x 128: aspect 0.75
    np.testing.assert_allclose(center, [30, 60])
    np.testing.assert_allclose(scale, [60 / 200 * 1.25, 80 / 200 * 1.25])  # widened to 60
    _, padded = _dataset(fixture, overrides={"DATASET.BBOX_PADDING": 1.5})
    np.testing.assert_allclose(padded._box_to_center_scale(0, 0, 150, 100)[1],
                               [150 / 200 * 1.5, 200 / 200 * 1.5])  # heightened to 200
    assert image_id_from_path("/x/images/val2017.zip@/000000397133.jpg") == 397133
    assert image_id_from_path("COCO_val2014_000000001234.jpg") == 1234


def test_gt_records_follow_the_annotations(fixture):
    _, ds = _dataset(fixture)
    anns = fixture["val"]["annotations"]
    assert len(ds) == len(anns) == 8  # the crowd and the keypoint-less person are skipped
    for rec, ann in zip(ds.db, anns, strict=True):
        center, scale = ds._box_to_center_scale(*clean_box(ann["bbox"], 160, 120))
        np.testing.assert_array_equal(rec["center"], center)
        np.testing.assert_array_equal(rec["scale"], scale)
        kpts = np.array(ann["keypoints"]).reshape(17, 3)
        np.testing.assert_array_equal(rec["joints_3d"][:, :2], kpts[:, :2])
        np.testing.assert_array_equal(rec["joints_3d_vis"][:, 0], np.minimum(kpts[:, 2], 1))
        assert rec["image"].endswith(f"images/val2017/{ann['image_id']:012d}.jpg")


def test_test_item_shapes_dtypes_and_values(fixture):
    cfg, ds = _dataset(fixture)
    model_input, target, weight, meta = ds[3]
    assert model_input.shape == (3, 128, 96) and model_input.dtype == torch.float32
    assert target.shape == (17, 32, 24) and target.dtype == torch.float32
    assert weight.shape == (17, 1) and weight.dtype == torch.float32
    assert set(meta) == META_KEYS
    assert meta["rotation"] == 0 and meta["score"] == 1
    rec = ds.db[3]
    # visible joints are moved into the input by the crop's affine map; peaks at int(j/4 + .5)
    trans = get_affine_transform(rec["center"], rec["scale"], 0, [96, 128])
    visible = rec["joints_3d_vis"][:, 0] > 0
    np.testing.assert_allclose(meta["joints"][visible, :2],
                               affine_transform_points(rec["joints_3d"][visible, :2], trans),
                               atol=1e-9)
    for j in np.flatnonzero(weight[:, 0].numpy() > 0):
        peak = np.unravel_index(int(target[j].argmax()), (32, 24))
        mu = (meta["joints"][j, :2] / 4 + 0.5).astype(int)
        assert peak == (mu[1], mu[0]) and target[j].max() == 1
    assert np.array_equal(weight[:, 0].numpy() > 0, visible)  # every joint lies in its crop


def test_without_transform_the_input_is_the_uint8_crop(fixture):
    _, plain = _dataset(fixture, overrides={"DATASET.COLOR_RGB": True}, transform=None)
    _, normed = _dataset(fixture, overrides={"DATASET.COLOR_RGB": True})
    crop = plain[0][0]
    assert isinstance(crop, np.ndarray) and crop.dtype == np.uint8 and crop.shape == (128, 96, 3)
    assert torch.equal(NORMALIZE(crop), normed[0][0])


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"DATASET.COLOR_RGB": True, "DATASET.PROB_HALF_BODY": 1.0,
         "DATASET.NUM_JOINTS_HALF_BODY": 3},
        {"DATASET.ROT_FACTOR": 45, "DATASET.SCALE_FACTOR": 0.35,
         "LOSS.USE_DIFFERENT_JOINTS_WEIGHT": True},
    ],
)
@pytest.mark.parametrize("transform", ["normalize", "none", "to_tensor"])
def test_training_items_equal_the_original_algorithm(fixture, overrides, transform):
    transform = {"normalize": NORMALIZE, "none": None, "to_tensor": T.ToTensor()}[transform]
    _, ds = _dataset(fixture, "train2017", True, transform, overrides)
    flips = 0
    for idx in range(len(ds)):
        for seed in range(10 * idx, 10 * idx + 4):
            ours = _seeded(seed, ds.__getitem__, idx)
            _assert_items_equal(ours, _seeded(seed, reference_getitem, ds, idx))
            flips += ours[3]["center"][0] != ds.db[idx]["center"][0]
    assert flips > 0  # the flip branch was exercised


def test_detection_items_equal_the_original_algorithm(fixture):
    _, ds = _dataset(fixture, overrides={"TEST.USE_GT_BBOX": False,
                                         "TEST.COCO_BBOX_FILE": fixture["val"]["det_file"]})
    for idx in range(len(ds)):
        _assert_items_equal(ds[idx], reference_getitem(ds, idx))


def test_same_seed_same_item_other_seed_other_item(fixture):
    _, ds = _dataset(fixture, "train2017", True)
    a, b, c = (_seeded(s, ds.__getitem__, 2) for s in (5, 5, 6))
    _assert_items_equal(a, b)
    assert not torch.equal(a[0], c[0])


def test_zero_augmentation_training_item_equals_test_item(fixture):
    _, train = _dataset(fixture, "train2017", True, overrides={"DATASET.SCALE_FACTOR": 0.0,
                                                               "DATASET.ROT_FACTOR": 0,
                                                               "DATASET.FLIP": False})
    _, test = _dataset(fixture, "train2017", False)
    _assert_items_equal(_seeded(0, train.__getitem__, 1), test[1])


def test_different_joints_weight(fixture):
    _, plain = _dataset(fixture)
    _, weighted = _dataset(fixture, overrides={"LOSS.USE_DIFFERENT_JOINTS_WEIGHT": True})
    expected = plain[0][2].numpy() * COCODataset.joints_weight
    np.testing.assert_array_equal(weighted[0][2].numpy(), expected)
    assert expected[9, 0] in (0, 1.5)  # wrists weigh 1.5


def test_detection_records(fixture):
    det_file = fixture["val"]["det_file"]
    _, ds = _dataset(fixture, overrides={"TEST.USE_GT_BBOX": False, "TEST.COCO_BBOX_FILE": det_file,
                                         "TEST.IMAGE_THRE": 0.1})
    dets = [d for d in fixture["val"]["detections"]
            if d["category_id"] == 1 and d["score"] >= 0.1]
    assert len(ds) == len(dets) == 8  # the 0.05 box and the category-2 box are dropped
    for rec, det in zip(ds.db, dets, strict=True):
        assert rec["score"] == det["score"]
        np.testing.assert_array_equal(rec["center"], ds._box_to_center_scale(*det["bbox"])[0])
    assert ds[0][3]["score"] == pytest.approx(dets[0]["score"])


def test_select_data_keeps_boxes_centred_on_their_joints(fixture):
    # ks = exp(-d^2 / (2 * 0.2^2 * area)) against 0.2 / 16 * (visible - 1) + 0.45:
    # 17 visible joints need ks > 0.65, i.e. d^2 < -ln(0.65) * 0.08 * area.
    _, ds = _dataset(fixture)
    area = (0.5 * 200) * (0.5 * 200)
    limit = math.sqrt(-math.log(0.65) * 0.08 * area)  # 18.56 px

    def record(offset, visible=17):
        joints = np.zeros((17, 3))
        joints[:, :2] = [50 + offset, 50]
        vis = np.zeros((17, 3))
        vis[:visible] = 1
        return {"center": np.array([50, 50], np.float32), "scale": np.array([0.5, 0.5]),
                "joints_3d": joints, "joints_3d_vis": vis}

    db = [record(0), record(limit - 0.1), record(limit + 0.1), record(0, visible=0)]
    assert ds.select_data(db) == db[:2]


def test_build_dataset_and_registry(fixture):
    cfg = fixture_cfg("coco", fixture["root"], {"TEST.USE_GT_BBOX": True})
    ds = build_dataset(cfg, "val2017", False, NORMALIZE)
    assert isinstance(ds, COCODataset) and len(ds) == 8
    bad = fixture_cfg("coco", fixture["root"], overrides={"DATASET.DATASET": "cocoo"})
    with pytest.raises(UnknownDatasetError, match="'cocoo'.*coco, mpii"):
        build_dataset(bad, "val2017", False)


def _zip_images(fixture, tmp_path, with_folder):
    root = tmp_path / "zipped"
    shutil.copytree(os.path.join(fixture["root"], "annotations"), root / "annotations")
    (root / "images").mkdir()
    with zipfile.ZipFile(root / "images" / "val2017.zip", "w") as archive:
        for path in fixture["val"]["image_paths"]:
            name = os.path.basename(path)
            archive.write(path, f"val2017/{name}" if with_folder else name)
    return str(root)


@pytest.mark.parametrize("with_folder", [False, True])
def test_zip_format_reads_the_same_pixels(fixture, tmp_path, with_folder):
    root = _zip_images(fixture, tmp_path, with_folder)
    cfg = fixture_cfg("coco", root, {"DATASET.DATA_FORMAT": "zip", "TEST.USE_GT_BBOX": True})
    zipped = coco(cfg, root, "val2017", False, NORMALIZE)
    assert "val2017.zip@" in zipped.db[0]["image"]
    _, plain = _dataset(fixture)
    for idx in (0, 5):
        _assert_items_equal_but_paths(zipped[idx], plain[idx])
    if with_folder:  # worker processes open their own reader
        threads = cv2.getNumThreads()
        configure_opencv_for_workers(2)
        try:
            batches = list(DataLoader(zipped, batch_size=4, num_workers=2, timeout=60))
        finally:
            cv2.setNumThreads(threads)
        assert torch.equal(batches[1][0][1], plain[5][0])


def _assert_items_equal_but_paths(a, b):
    a_meta = {k: v for k, v in a[3].items() if k != "image"}
    b_meta = {k: v for k, v in b[3].items() if k != "image"}
    _assert_items_equal((*a[:3], a_meta), (*b[:3], b_meta))


# ---- evaluation ----------------------------------------------------------------------------
def _gt_predictions(ds, fixture, shifts=None):
    """Predictions at the GT keypoints (score 1) for the GT-box records, optionally shifted in
    x by ``shifts[person]`` (J values)."""
    anns = fixture["val"]["annotations"]
    preds = np.zeros((len(anns), 17, 3), dtype=np.float32)
    boxes = np.zeros((len(anns), 6))
    for n, (rec, ann) in enumerate(zip(ds.db, anns, strict=True)):
        kpts = np.array(ann["keypoints"], dtype=np.float64).reshape(17, 3)
        preds[n, :, :2] = kpts[:, :2] + (0 if shifts is None else np.c_[shifts[n], np.zeros(17)])
        preds[n, :, 2] = 1
        boxes[n] = [*rec["center"], *rec["scale"], np.prod(rec["scale"] * 200), 1.0]
    return preds, boxes, [rec["image"] for rec in ds.db]


def _shift_for_oks(ann, oks):
    """x shift per joint making every joint's OKS term exp(-d^2 / (2 area (2 sigma)^2)) == oks."""
    variances = (COCO_SIGMAS * 2) ** 2
    return np.sqrt(-2 * math.log(oks) * variances * (ann["area"] + np.spacing(1)))


def test_perfect_predictions_score_ap_one(fixture, tmp_path):
    cfg, ds = _dataset(fixture)
    preds, boxes, paths = _gt_predictions(ds, fixture)
    name_value, perf = ds.evaluate(cfg, preds, str(tmp_path), boxes, paths)
    assert list(name_value) == list(COCO_STAT_NAMES)
    assert perf == name_value["AP"] == pytest.approx(1.0)
    for name in ("Ap .5", "AP .75", "AP (M)", "AR", "AR .5", "AR .75", "AR (M)"):
        assert name_value[name] == pytest.approx(1.0), name
    assert name_value["AP (L)"] == name_value["AR (L)"] == -1  # every person has medium area
    with open(tmp_path / "results" / "keypoints_val2017_results_0.json") as f:
        results = json.load(f)
    assert len(results) == 8
    assert {r["image_id"] for r in results} == set(fixture["val"]["image_ids"])
    assert all(len(r["keypoints"]) == 51 and r["category_id"] == 1 for r in results)
    assert not [p for p in os.listdir(tmp_path / "results") if p.startswith(".tmp")]


def test_uniformly_shifted_predictions_score_the_derived_ap(fixture, tmp_path):
    # Every person at OKS 0.72: matched at thresholds .50-.70 (5 of 10), missed at .75-.95.
    cfg, ds = _dataset(fixture)
    shifts = [_shift_for_oks(ann, 0.72) for ann in fixture["val"]["annotations"]]
    preds, boxes, paths = _gt_predictions(ds, fixture, shifts)
    name_value, perf = ds.evaluate(cfg, preds, str(tmp_path), boxes, paths)
    expected = {"AP": 0.5, "Ap .5": 1.0, "AP .75": 0.0, "AP (M)": 0.5,
                "AR": 0.5, "AR .5": 1.0, "AR .75": 0.0, "AR (M)": 0.5}
    for name, value in expected.items():
        assert name_value[name] == pytest.approx(value, abs=1e-12), name


def test_two_quality_groups_score_the_derived_ap(fixture, tmp_path):
    # Half the people at OKS 0.87 with box score 0.9, half at OKS 0.62 with box score 0.8.
    # Thresholds .50-.60 (3): all match, AP 1. Thresholds .65-.85 (5): only the good half;
    # they rank first, so precision is 1 up to recall 0.5: AP = 51 / 101 recall points.
    # Thresholds .90, .95: nothing. AP = (3 + 5 * 51/101) / 10, AR = (3 + 5 * 0.5) / 10.
    cfg, ds = _dataset(fixture)
    anns = fixture["val"]["annotations"]
    good = np.arange(len(anns)) % 2 == 0
    shifts = [_shift_for_oks(ann, 0.87 if g else 0.62) for ann, g in zip(anns, good, strict=True)]
    preds, boxes, paths = _gt_predictions(ds, fixture, shifts)
    boxes[:, 5] = np.where(good, 0.9, 0.8)
    name_value, _ = ds.evaluate(cfg, preds, str(tmp_path), boxes, paths)
    assert name_value["AP"] == pytest.approx((3 + 5 * 51 / 101) / 10, abs=1e-12)
    assert name_value["AR"] == pytest.approx(0.55, abs=1e-12)
    assert name_value["Ap .5"] == pytest.approx(1.0)
    assert name_value["AP .75"] == pytest.approx(51 / 101, abs=1e-12)


def _original_rescore_and_nms(preds, boxes, paths, in_vis_thre, oks_thre, soft):
    """The original evaluate() loop; sums in float64 as numpy 1 did for int + float32."""
    people = {}
    for idx, kpt in enumerate(preds):
        people.setdefault(int(paths[idx][-16:-4]), []).append(
            {"keypoints": kpt, "area": boxes[idx][4], "score": boxes[idx][5]})
    kept = []
    for img_kpts in people.values():
        for n_p in img_kpts:
            box_score = n_p["score"]
            kpt_score = 0.0
            valid_num = 0
            for n_jt in range(17):
                t_s = n_p["keypoints"][n_jt][2]
                if t_s > in_vis_thre:
                    kpt_score = kpt_score + float(t_s)
                    valid_num = valid_num + 1
            if valid_num != 0:
                kpt_score = kpt_score / valid_num
            n_p["score"] = kpt_score * box_score
        keep = (_soft_oks_nms_loop if soft else _oks_nms_loop)(img_kpts, oks_thre)
        kept.append([img_kpts[k] for k in keep] if keep else img_kpts)
    return kept


def _soft_oks_nms_loop(kpts_db, thresh, max_dets=20):
    scores = np.array([k["score"] for k in kpts_db])
    kpts = np.array([k["keypoints"].flatten() for k in kpts_db])
    areas = np.array([k["area"] for k in kpts_db])
    order = scores.argsort()[::-1]
    scores = scores[order]
    keep = []
    while order.size > 0 and len(keep) < max_dets:
        i = order[0]
        oks = _oks_iou_loop(kpts[i], kpts[order[1:]], areas[i], areas[order[1:]])
        order = order[1:]
        scores = scores[1:] * np.exp(-(oks**2) / thresh)
        resort = scores.argsort()[::-1]
        order, scores = order[resort], scores[resort]
        keep.append(int(i))
    return keep


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("in_vis_thre, oks_thre", [(0.0, 0.5), (0.2, 0.9), (0.5, 0.3)])
def test_rescoring_and_nms_keep_lists_equal_the_original_loop(fixture, soft, in_vis_thre,
                                                              oks_thre):
    _, ds = _dataset(fixture, overrides={"TEST.SOFT_NMS": soft, "TEST.IN_VIS_THRE": in_vis_thre,
                                         "TEST.OKS_THRE": oks_thre})
    rng = np.random.default_rng(3)
    base, boxes, paths = _gt_predictions(ds, fixture)
    # five noisy copies of every person: near-duplicates that NMS must thin out
    copies = 5
    preds = np.repeat(base, copies, axis=0)
    preds[:, :, :2] += rng.normal(0, 3, size=preds[:, :, :2].shape).astype(np.float32)
    preds[:, :, 2] = rng.uniform(0, 1, size=preds[:, :, 2].shape).astype(np.float32)
    boxes = np.repeat(boxes, copies, axis=0)
    boxes[:, 5] = rng.uniform(0.3, 1, size=len(boxes))
    paths = [p for p in paths for _ in range(copies)]
    order = rng.permutation(len(preds))  # images interleaved
    preds, boxes, paths = preds[order], boxes[order], [paths[i] for i in order]

    ours = ds.rescore_and_nms(preds, boxes, paths)
    ref = _original_rescore_and_nms(preds, boxes, paths, in_vis_thre, oks_thre, soft)
    assert [len(k) for k in ours] == [len(k) for k in ref]
    if soft:  # soft NMS keeps up to 20 but reorders: decayed duplicates fall behind
        assert any([p["score"] for p in k] != sorted((p["score"] for p in k), reverse=True)
                   for k in ours)
    else:
        assert sum(len(k) for k in ours) < len(preds)  # something was suppressed
    for ours_img, ref_img in zip(ours, ref, strict=True):
        for a, b in zip(ours_img, ref_img, strict=True):
            assert a["score"] == b["score"]  # bit for bit
            assert a["keypoints"] is not None and np.array_equal(a["keypoints"], b["keypoints"])


def test_test_dev_writes_results_and_returns_zeros(tmp_path, caplog):
    info = make_coco_fixture(tmp_path / "data", "test-dev2017", num_images=2)
    cfg = fixture_cfg("coco", info["root"], {"TEST.COCO_BBOX_FILE": info["det_file"],
                                             "TEST.IMAGE_THRE": 0.1})
    ds = coco(cfg, info["root"], "test-dev2017", False, NORMALIZE)
    assert len(ds) == 4 and "images/test2017/" in ds.db[0]["image"]
    assert ds[0][0].shape == (3, 128, 96)
    preds = np.ones((len(ds), 17, 3), dtype=np.float32)
    boxes = np.array([[*r["center"], *r["scale"], 100.0, r["score"]] for r in ds.db])
    with caplog.at_level("INFO"):
        name_value, perf = ds.evaluate(cfg, preds, str(tmp_path / "out"), boxes,
                                       [r["image"] for r in ds.db])
    assert perf == 0 and list(name_value) == list(COCO_STAT_NAMES)
    assert not any(name_value.values())
    assert "no labels" in caplog.text
    assert (tmp_path / "out" / "results" / "keypoints_test-dev2017_results_0.json").is_file()


# ---- errors --------------------------------------------------------------------------------
def _copy_annotations(fixture, tmp_path, edit):
    root = tmp_path / "edited"
    shutil.copytree(os.path.join(fixture["root"], "annotations"), root / "annotations")
    path = root / "annotations" / "person_keypoints_val2017.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return str(root)


def test_missing_annotation_file_is_named(tmp_path):
    cfg = fixture_cfg("coco", str(tmp_path), {"TEST.USE_GT_BBOX": True})
    with pytest.raises(FileNotFoundError, match="person_keypoints_val2017.json"):
        coco(cfg, str(tmp_path), "val2017", False)


def test_missing_and_corrupt_images_are_named(fixture, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(fixture["root"], root)
    missing = root / "images" / "val2017" / os.path.basename(fixture["val"]["image_paths"][0])
    missing.unlink()
    broken = root / "images" / "val2017" / os.path.basename(fixture["val"]["image_paths"][1])
    broken.write_bytes(b"not a jpeg")
    cfg = fixture_cfg("coco", str(root), {"TEST.USE_GT_BBOX": True})
    ds = coco(cfg, str(root), "val2017", False, NORMALIZE)
    with pytest.raises(FileNotFoundError, match=f"missing: .*{missing.name}"):
        ds[0]
    with pytest.raises(ValueError, match=f"cannot decode.*{broken.name}"):
        ds[2]


def test_wrong_keypoint_count_is_named(fixture, tmp_path):
    def edit(data):
        data["annotations"][3]["keypoints"] = data["annotations"][3]["keypoints"][:48]

    root = _copy_annotations(fixture, tmp_path, edit)
    cfg = fixture_cfg("coco", root, {"TEST.USE_GT_BBOX": True})
    ann_id = fixture["val"]["annotations"][3]["id"]
    with pytest.raises(DatasetFormatError,
                       match=rf"person_keypoints_val2017.json: annotation {ann_id} .*48 .*51"):
        coco(cfg, root, "val2017", False)


def test_num_joints_must_match_the_data_set(fixture):
    cfg = fixture_cfg("coco", fixture["root"], {"MODEL.NUM_JOINTS": 16, "TEST.USE_GT_BBOX": True})
    with pytest.raises(ValueError, match="NUM_JOINTS is 16 .* 17 joints"):
        coco(cfg, fixture["root"], "val2017", False)


def test_empty_data_set_after_filtering(fixture):
    with pytest.raises(DatasetFormatError, match="no samples after filtering.*detections.json"):
        _dataset(fixture, overrides={"TEST.USE_GT_BBOX": False, "TEST.IMAGE_THRE": 1.5,
                                     "TEST.COCO_BBOX_FILE": fixture["val"]["det_file"]})


@pytest.mark.parametrize("field", ["category_id", "bbox", "score", "image_id"])
def test_detection_file_without_a_field_is_named(fixture, tmp_path, field):
    dets = json.loads(open(fixture["val"]["det_file"]).read())
    del dets[2][field]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    with pytest.raises(DatasetFormatError, match=f"dets.json: detection 2 has no '{field}'"):
        _dataset(fixture, overrides={"TEST.USE_GT_BBOX": False, "TEST.COCO_BBOX_FILE": str(path)})


def test_detection_file_missing_or_for_unknown_images(fixture, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        _dataset(fixture, overrides={"TEST.USE_GT_BBOX": False,
                                     "TEST.COCO_BBOX_FILE": str(tmp_path / "nope.json")})
    path = tmp_path / "other.json"
    path.write_text(json.dumps([{"image_id": 5, "category_id": 1, "bbox": [0, 0, 9, 9],
                                 "score": 0.9}]))
    with pytest.raises(DatasetFormatError, match="image 5, which is not in"):
        _dataset(fixture, overrides={"TEST.USE_GT_BBOX": False, "TEST.COCO_BBOX_FILE": str(path)})


def test_evaluate_rejects_malformed_predictions(fixture, tmp_path):
    cfg, ds = _dataset(fixture)
    preds, boxes, paths = _gt_predictions(ds, fixture)
    with pytest.raises(ValueError, match="N x 17 x 3"):
        ds.evaluate(cfg, preds[:, :16], str(tmp_path), boxes, paths)
    with pytest.raises(ValueError, match="8 preds, 7 boxes"):
        ds.evaluate(cfg, preds, str(tmp_path), boxes[:7], paths)


def test_non_finite_and_absurd_keypoints_are_dropped_with_one_warning(fixture, tmp_path, caplog):
    from lib.utils.vis import save_batch_image_with_joints

    first_image = {}

    def edit(data):
        first_image["id"] = image_id = data["images"][0]["id"]
        mine = [a for a in data["annotations"] if a["image_id"] == image_id]
        first_image["y"] = mine[0]["keypoints"][3 * 2 + 1]
        mine[0]["keypoints"][3 * 2:3 * 2 + 3] = [float("nan"), first_image["y"], 2]
        mine[1]["keypoints"][3 * 5:3 * 5 + 3] = [1e30, 10, 2]
        mine[1]["keypoints"][3 * 16:3 * 16 + 3] = [10, float("inf"), 1]

    root = _copy_annotations(fixture, tmp_path, edit)
    shutil.copytree(os.path.join(fixture["root"], "images"), os.path.join(root, "images"))
    _, clean = _dataset(fixture)
    with caplog.at_level("WARNING"):
        _, ds = _dataset({"root": root})
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    ann_file = os.path.join(root, "annotations", "person_keypoints_val2017.json")
    assert len(warnings) == 1
    assert warnings[0] == (
        f"=> {ann_file}: 3 keypoint(s) not finite or beyond 1e+06 pixels, dropped (visibility "
        f"0); the first: person 0 (image {first_image['id']}), joint 2 = "
        f"[nan, {float(first_image['y'])}]")
    assert len(ds.db) == len(clean.db)
    for n, rec in enumerate(ds.db):
        bad = {0: [2], 1: [5, 16]}.get(n, [])
        for joint in range(17):
            if joint in bad:
                assert rec["joints_3d"][joint].tolist() == [0, 0, 0]
                assert rec["joints_3d_vis"][joint].tolist() == [0, 0, 0]
            else:
                np.testing.assert_array_equal(rec["joints_3d"][joint],
                                              clean.db[n]["joints_3d"][joint])
                np.testing.assert_array_equal(rec["joints_3d_vis"][joint],
                                              clean.db[n]["joints_3d_vis"][joint])
    # the DEBUG drawing of the ground truth draws what is left instead of crashing
    image, target, weight, meta = ds[1]
    assert torch.isfinite(target).all() and weight[5, 0] == 0 and weight[16, 0] == 0
    out = tmp_path / "debug_gt.jpg"
    save_batch_image_with_joints(image[None], meta["joints"][None], meta["joints_vis"][None],
                                 str(out))
    assert cv2.imread(str(out)) is not None


def test_clean_annotations_give_no_warning(fixture, caplog):
    with caplog.at_level("WARNING"):
        _dataset(fixture)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_truncated_jpeg_is_named_once(tmp_path, caplog):
    from lib.utils import image_io

    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", pixels)
    data = encoded.tobytes()
    assert ok and data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    whole, padded, cut = tmp_path / "whole.jpg", tmp_path / "padded.jpg", tmp_path / "cut.jpg"
    whole.write_bytes(data)
    padded.write_bytes(data + b"\x00" * 5000)  # past the 4096 bytes read: still found
    cut.write_bytes(data[: len(data) // 2])
    assert image_io.jpeg_is_truncated(data[:2], data[len(data) // 2 - 10: len(data) // 2])
    assert not image_io.jpeg_is_truncated(b"\x89P", b"no end marker")  # not a JPEG
    with caplog.at_level("WARNING"):
        for _ in range(2):
            for path in (whole, padded, cut):
                assert image_io.read_image(str(path)).shape == (48, 64, 3)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"=> truncated JPEG (no end marker FF D9): {cut} decodes with its "
                        f"missing rows grey; re-copy or re-download it"]
    # OpenCV refuses a JPEG cut short inside a zip archive outright: an error naming the member
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.jpg", data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"not an image\\): {archive}@a.jpg"):
        image_io.read_image(f"{archive}@a.jpg", data_format="zip")
