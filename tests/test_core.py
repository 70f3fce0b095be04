"""Losses, decoding and accuracy against values computed by hand."""

import numpy as np
import pytest
import torch
from yacs.config import CfgNode

from lib.core.evaluate import accuracy
from lib.core.inference import get_final_preds, get_max_preds
from lib.core.loss import JointsMSELoss, JointsOHKMMSELoss


def test_mse_loss_hand_computed():
    output = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]]])
    weight = torch.tensor([[[1.0], [0.0]]])
    # joint 0: 0.5 * mean([1, 0, 0, 0]) = 0.125; joint 1 weighted out; mean over 2 joints.
    assert JointsMSELoss(True)(output, target, weight).item() == pytest.approx(0.0625)
    # unweighted joint 1: 0.5 * 1 = 0.5 -> (0.125 + 0.5) / 2
    assert JointsMSELoss(False)(output, target, weight).item() == pytest.approx(0.3125)


def test_mse_loss_equals_per_joint_formulation():
    g = torch.Generator().manual_seed(0)
    out, tgt = torch.rand(3, 5, 8, 6, generator=g), torch.rand(3, 5, 8, 6, generator=g)
    w = torch.rand(3, 5, 1, generator=g)
    mse = torch.nn.MSELoss()
    reference = sum(0.5 * mse(out[:, j].mul(w[:, j, :, None]), tgt[:, j].mul(w[:, j, :, None]))
                    for j in range(5)) / 5
    assert JointsMSELoss(True)(out, tgt, w).item() == pytest.approx(reference.item(), rel=1e-6)


def test_ohkm_loss_hand_computed():
    # 1 x 1 heatmaps: each joint's loss is 0.5 * value^2 against a zero target.
    output = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]).reshape(2, 3, 1, 1)
    target = torch.zeros_like(output)
    weight = torch.ones(2, 3, 1)
    # sample 0: losses .5, 2, 4.5 -> top-2 mean 3.25; sample 1: 0, .5, 0 -> .25; batch mean 1.75
    loss = JointsOHKMMSELoss(True, topk=2)(output, target, weight)
    assert loss.item() == pytest.approx(1.75)
    weight[0, 2] = 0  # drop the hardest joint of sample 0: top-2 of .5, 2, 0 -> 1.25
    assert JointsOHKMMSELoss(True, topk=2)(output, target, weight).item() == pytest.approx(0.75)


def test_loss_shape_mismatch_is_clear():
    with pytest.raises(ValueError, match="heatmap shapes differ"):
        JointsMSELoss(True)(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 3), torch.ones(1, 2, 1))


def test_get_max_preds_positions_and_nonpositive():
    hm = np.zeros((2, 3, 6, 8), dtype=np.float32)
    hm[0, 0, 2, 5] = 0.9
    hm[0, 1, 5, 0] = 0.3
    hm[1, 2] = -1.0
    hm[1, 2, 1, 1] = -0.5  # the maximum is negative: coordinates are zeroed
    coords, maxvals = get_max_preds(hm)
    assert coords.shape == (2, 3, 2) and maxvals.shape == (2, 3, 1)
    np.testing.assert_array_equal(coords[0, 0], [5, 2])
    np.testing.assert_array_equal(coords[0, 1], [0, 5])
    np.testing.assert_array_equal(coords[1, 2], [0, 0])
    assert maxvals[0, 0, 0] == pytest.approx(0.9) and maxvals[1, 2, 0] == pytest.approx(-0.5)
    coords_t, _ = get_max_preds(torch.from_numpy(hm))
    np.testing.assert_array_equal(coords, coords_t)


def _cfg(post_process):
    c = CfgNode({"TEST": CfgNode({"POST_PROCESS": post_process})})
    return c


def test_get_final_preds_quarter_offset_and_back_projection():
    hm = np.zeros((1, 2, 6, 8), dtype=np.float32)
    hm[0, 0, 2, 3] = 1.0
    hm[0, 0, 2, 4] = 0.5  # right neighbour higher -> x + 0.25
    hm[0, 0, 1, 3] = 0.5  # upper neighbour higher -> y - 0.25
    hm[0, 1, 3, 1] = 1.0  # px == 1 is on the border: no shift
    hm[0, 1, 3, 2] = 0.5
    center, scale = np.array([[100.0, 50.0]]), np.array([[0.4, 0.3]])  # an 80 x 60 px box
    preds, maxvals = get_final_preds(_cfg(True), hm, center, scale)
    # heatmap (8 x 6) -> box: x_img = 100 - 40 + 10 x, y_img = 50 - 30 + 10 y
    np.testing.assert_allclose(preds[0, 0], [92.5, 37.5], atol=1e-4)
    np.testing.assert_allclose(preds[0, 1], [70.0, 50.0], atol=1e-4)
    plain, _ = get_final_preds(_cfg(False), hm, center, scale)
    np.testing.assert_allclose(plain[0, 0], [90.0, 40.0], atol=1e-4)
    assert maxvals[0, 0, 0] == 1.0


def test_accuracy_known_answer():
    h, w = 64, 48  # distances are normalised by (h/10, w/10) = (6.4, 4.8) for (x, y)
    target = np.zeros((1, 4, h, w), dtype=np.float32)
    output = np.zeros_like(target)
    # (joint, target y x, predicted y x): dx 2 -> 0.3125 hit, dy 3 -> 0.625 miss,
    # dx 3 -> 0.469 hit, and a joint without target that is not counted.
    for j, (ty, tx), (py, px) in [(0, (20, 20), (20, 22)), (1, (30, 10), (33, 10)),
                                  (2, (40, 30), (40, 33))]:
        target[0, j, ty, tx] = 1
        output[0, j, py, px] = 1
    output[0, 3, 5, 5] = 1
    acc, avg_acc, cnt, pred = accuracy(output, target)
    np.testing.assert_allclose(acc, [2 / 3, 1, 0, 1, -1])
    assert avg_acc == pytest.approx(2 / 3) and cnt == 3
    np.testing.assert_array_equal(pred[0, 0], [22, 20])


def test_accuracy_no_visible_joint():
    acc, avg_acc, cnt, _ = accuracy(np.zeros((2, 3, 8, 8)), np.zeros((2, 3, 8, 8)))
    assert cnt == 0 and avg_acc == 0 and list(acc) == [0, -1, -1, -1]


def _gaussian_heatmaps(centres: np.ndarray, sigma: float, height: int, width: int) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    cx, cy = centres[..., 0, None, None], centres[..., 1, None, None]
    return np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2)).astype(np.float32)


def test_dark_finds_subpixel_centres_that_the_quarter_step_misses():
    rng = np.random.default_rng(0)
    centres = rng.uniform(3, 28, size=(4, 11, 2))          # N x J x (x, y) on 32 x 32
    hm = _gaussian_heatmaps(centres, 2.0, 32, 32)
    cfg = _cfg(True)
    cfg.defrost()
    cfg.MODEL = CfgNode({"SIGMA": 2})
    # identity crop: centre (16, 16), scale so that the box is 32 x 32 px -> image == heatmap
    center, scale = np.full((4, 2), 16.0), np.full((4, 2), 32 / 200)
    cfg.TEST.SUBPIXEL_METHOD = "dark"
    dark, _ = get_final_preds(cfg, hm, center, scale)
    cfg.TEST.SUBPIXEL_METHOD = "quarter"
    quarter, _ = get_final_preds(cfg, hm, center, scale)
    dark_err, quarter_err = np.abs(dark - centres), np.abs(quarter - centres)
    # exact up to the smoothing's truncation at the border (3 px from it: < 0.05 px)
    assert dark_err.max() < 0.05 and np.median(dark_err) < 1e-3
    assert quarter_err.max() > 0.2 and np.median(quarter_err) > 0.05
    cfg.TEST.SUBPIXEL_METHOD = "bilinear"
    with pytest.raises(ValueError, match="SUBPIXEL_METHOD"):
        get_final_preds(cfg, hm, center, scale)


def test_dark_leaves_border_and_flat_maps_alone():
    from lib.core.inference import dark_offset

    hm = np.zeros((1, 3, 8, 8), dtype=np.float32)
    hm[0, 0, 0, 5] = 1.0                      # on the border
    hm[0, 2, 4, 4] = 1.0                      # a single hot pixel: refined to itself
    coords = np.array([[[5.0, 0.0], [0.0, 0.0], [4.0, 4.0]]])
    out = dark_offset(hm, coords, sigma=1.0)
    np.testing.assert_allclose(out, coords, atol=1e-6)


def test_codec_decode_is_get_final_preds_and_checks_its_method():
    from lib.utils.heatmap_codec import decode_heatmaps

    rng = np.random.default_rng(1)
    hm = rng.random((2, 3, 16, 12)).astype(np.float32)
    center, scale = rng.uniform(50, 90, (2, 2)), rng.uniform(0.5, 1.5, (2, 2))
    cfg = CfgNode({"TEST": CfgNode({"POST_PROCESS": True, "SUBPIXEL_METHOD": "dark"}),
                   "MODEL": CfgNode({"SIGMA": 2})})
    for method in ("dark", "quarter"):
        cfg.TEST.SUBPIXEL_METHOD = method
        ours = decode_heatmaps(hm, center, scale, method, 2.0)
        for a, b in zip(ours, get_final_preds(cfg, hm, center, scale), strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="sigma"):
        decode_heatmaps(hm, center, scale, "dark")
    with pytest.raises(ValueError, match="sub-pixel method"):
        decode_heatmaps(hm, center, scale, "bilinear")
