"""Gaussian heatmap targets and the input conversion: vectorised code == the original's loops."""

import math

import numpy as np
import pytest
import torch
import torchvision.transforms as T

from lib.dataset.JointsDataset import _pixel_lookup_table
from lib.utils.heatmap_codec import (
    dark_offset,
    gaussian_patch,
    generate_gaussian_targets,
    get_max_preds,
)
from tests.reference_pipeline import gaussian_targets_loop

IMAGE_SIZE = np.array([192, 256])
HEATMAP_SIZE = np.array([48, 64])


def _joints(xy, vis=None):
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    joints = np.zeros((len(xy), 3))
    joints[:, :2] = xy
    vis = np.ones(len(xy)) if vis is None else np.asarray(vis, dtype=np.float64)
    joints_vis = np.zeros((len(xy), 3))
    joints_vis[:, 0] = joints_vis[:, 1] = vis
    return joints, joints_vis


def _assert_same_as_loop(joints, joints_vis, sigma, image_size=IMAGE_SIZE,
                         heatmap_size=HEATMAP_SIZE):
    target, weight = generate_gaussian_targets(joints, joints_vis, image_size, heatmap_size, sigma)
    ref_target, ref_weight = gaussian_targets_loop(
        joints, joints_vis, image_size, heatmap_size, sigma)
    assert target.dtype == np.float32 and weight.dtype == np.float32
    assert target.shape == ref_target.shape and weight.shape == ref_weight.shape
    np.testing.assert_array_equal(weight, ref_weight)
    np.testing.assert_array_equal(target, ref_target)
    return target, weight


def test_hand_computed_peak_and_neighbours():
    # stride 4: joint (100, 60) -> mu = (int(25.5), int(15.5)) = (25, 15)
    joints, vis = _joints([[100, 60]])
    target, weight = _assert_same_as_loop(joints, vis, sigma=2)
    assert weight[0, 0] == 1
    assert target[0, 15, 25] == 1.0
    assert target[0].max() == 1.0
    np.testing.assert_allclose(target[0, 15, 26], math.exp(-1 / 8), rtol=1e-6)
    np.testing.assert_allclose(target[0, 17, 27], math.exp(-8 / 8), rtol=1e-6)
    # window 3 sigma = 6: columns 19..31 and rows 9..21 are drawn, nothing else
    rows, cols = np.nonzero(target[0])
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (9, 21, 19, 31)


def test_rounding_truncates_towards_zero():
    # x = -3: -0.75 + 0.5 = -0.25 -> int() gives 0 (floor would give -1)
    joints, vis = _joints([[-3, 40]])
    target, _ = _assert_same_as_loop(joints, vis, sigma=2)
    assert target[0, 10, 0] == 1.0


@pytest.mark.parametrize(
    "x, expected_weight, touches_heatmap",
    [
        (-27.0, 1.0, True),  # mu = int(-6.25) = -6: window -12..0 reaches column 0
        (-30.0, 1.0, False),  # mu = -7: br = 0, an empty window that the original keeps
        (-34.0, 0.0, False),  # mu = -8: br = -1 < 0, outside
        (4 * 53.4, 1.0, True),  # mu = int(53.9) = 53: ul = 47 < 48 reaches the last column
        (4 * 53.5, 0.0, False),  # mu = 54: ul = 48 >= 48, outside
    ],
)
def test_window_rules_at_the_borders(x, expected_weight, touches_heatmap):
    joints, vis = _joints([[x, 100]])
    target, weight = _assert_same_as_loop(joints, vis, sigma=2)
    assert weight[0, 0] == expected_weight
    assert target.any() == touches_heatmap


def test_empty_window_keeps_weight_but_draws_nothing():
    joints, vis = _joints([[-30.0, 100]])  # br == 0: the original keeps weight 1
    target, weight = _assert_same_as_loop(joints, vis, sigma=2)
    assert weight[0, 0] == 1 and not target.any()


def test_invisible_joints_have_zero_weight_and_no_heatmap():
    joints, vis = _joints([[100, 60], [50, 50]], vis=[0, 1])
    target, weight = _assert_same_as_loop(joints, vis, sigma=2)
    assert weight[:, 0].tolist() == [0, 1]
    assert not target[0].any() and target[1].max() == 1


@pytest.mark.parametrize("sigma", [1, 2, 3, 1.5, 2.5])
def test_vectorised_equals_loop_on_random_joints(sigma):
    rng = np.random.default_rng(int(sigma * 10))
    for _ in range(150):
        num = int(rng.integers(1, 20))
        xy = rng.uniform(-60, 320, size=(num, 2))
        # a third of the joints land on exact stride multiples and half-strides (rounding edges)
        snap = rng.random(num) < 0.33
        xy[snap] = np.round(xy[snap] / 2) * 2
        vis = (rng.random(num) < 0.8).astype(float)
        joints, joints_vis = _joints(xy, vis)
        _assert_same_as_loop(joints, joints_vis, sigma)


def test_vectorised_equals_loop_with_non_square_and_odd_sizes():
    rng = np.random.default_rng(7)
    for image_size, heatmap_size in [((288, 384), (72, 96)), ((256, 256), (64, 64)),
                                     ((100, 60), (33, 17))]:
        xy = rng.uniform(-50, 450, size=(40, 2))
        joints, joints_vis = _joints(xy, (rng.random(40) < 0.9).astype(float))
        _assert_same_as_loop(joints, joints_vis, 2, np.array(image_size), np.array(heatmap_size))


def test_gaussian_patch_is_the_unnormalised_kernel():
    patch = gaussian_patch(2)
    assert patch.shape == (13, 13) and patch.dtype == np.float32
    assert patch[6, 6] == 1.0
    np.testing.assert_allclose(patch[6, 8], math.exp(-4 / 8), rtol=1e-6)


@pytest.mark.parametrize("rgb", [False, True])
def test_lookup_table_equals_totensor_normalize_bit_for_bit(rgb):
    transform = T.Compose([T.ToTensor(), T.Normalize([0.485, 0.456, 0.406],
                                                     [0.229, 0.224, 0.225])])
    table = _pixel_lookup_table(transform)
    assert table is not None and table.shape == (3, 1, 256)
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, size=(64, 48, 3), dtype=np.uint8)
    crop[0, :3] = [[0, 0, 0], [255, 255, 255], [128, 1, 254]]
    source = crop[:, :, ::-1] if rgb else crop
    expected = transform(np.ascontiguousarray(source))
    got = np.stack([table[c, 0][source[:, :, c]] for c in range(3)])
    assert torch.equal(torch.from_numpy(got), expected)


def test_lookup_table_only_for_the_standard_pair():
    assert _pixel_lookup_table(None) is None
    assert _pixel_lookup_table(T.Compose([T.ToTensor()])) is None
    assert _pixel_lookup_table(T.ToTensor()) is None
    assert _pixel_lookup_table(T.Compose([T.Normalize([0.5] * 3, [0.5] * 3), T.ToTensor()])) is None


# --------------------------------------------------------------------------------------------
# MODEL.TARGET_TYPE 'gaussian_subpixel': the peak at the joint's exact heatmap position
# --------------------------------------------------------------------------------------------
def test_subpixel_target_is_the_gaussian_about_the_exact_position():
    joints, joints_vis = _joints([[41.0, 30.0]])  # stride 4: heatmap (10.25, 7.5)
    target, weight = generate_gaussian_targets(joints, joints_vis, IMAGE_SIZE, HEATMAP_SIZE, 2,
                                               subpixel=True)
    rounded, rounded_weight = generate_gaussian_targets(joints, joints_vis, IMAGE_SIZE,
                                                        HEATMAP_SIZE, 2)
    np.testing.assert_array_equal(weight, rounded_weight)
    # the same window as the rounded target (peak pixel (10, 8): columns 4..16, rows 2..14)
    np.testing.assert_array_equal(target[0] > 0, rounded[0] > 0)
    for y, x in [(7, 10), (8, 10), (8, 11), (2, 4), (14, 16)]:
        expected = math.exp(-((x - 10.25) ** 2 + (y - 7.5) ** 2) / 8)
        assert target[0, y, x] == pytest.approx(expected, rel=1e-6)
    assert target[0].max() < 1  # no pixel sits on the exact centre


def test_subpixel_target_equals_the_rounded_one_on_pixel_centres():
    xy = np.array([[40.0, 28.0], [0.0, 0.0], [188.0, 252.0], [-8.0, 100.0]])  # multiples of 4
    joints, joints_vis = _joints(xy, [1, 1, 1, 0])
    exact, exact_weight = generate_gaussian_targets(joints, joints_vis, IMAGE_SIZE, HEATMAP_SIZE,
                                                    2, subpixel=True)
    rounded, rounded_weight = _assert_same_as_loop(joints, joints_vis, 2)
    np.testing.assert_array_equal(exact_weight, rounded_weight)
    np.testing.assert_allclose(exact, rounded, rtol=1e-6, atol=1e-7)


def test_dark_decodes_the_subpixel_target_where_the_rounded_one_is_off_by_the_rounding():
    rng = np.random.default_rng(3)
    xy = rng.uniform(24, 168, size=(30, 2))  # well inside the 48 x 64 heatmap
    joints, joints_vis = _joints(xy)
    exact_position = xy / 4
    errors = {}
    for subpixel in (False, True):
        target, _ = generate_gaussian_targets(joints, joints_vis, IMAGE_SIZE, HEATMAP_SIZE, 2,
                                              subpixel=subpixel)
        coords, _ = get_max_preds(target[None])
        decoded = dark_offset(target[None], coords, 2)[0]
        errors[subpixel] = np.abs(decoded - exact_position).max(axis=1)
    assert errors[True].max() < 0.02
    # the rounded peak hands on its rounding: up to half a pixel per axis, 0.25 on average
    assert errors[False].max() > 0.35 and errors[False].mean() > 0.15
