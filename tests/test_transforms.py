"""Crop geometry: affine maps, their inverses, flips."""

import numpy as np
import pytest
import torch

from lib.utils.transforms import (
    affine_transform,
    affine_transform_points,
    box_to_center_scale,
    crop,
    flip_back,
    fliplr_joints,
    get_affine_transform,
    transform_preds,
)


def _compose(a, b):
    """a after b, for 2 x 3 affine matrices."""
    a3 = np.vstack([a, [0, 0, 1]])
    b3 = np.vstack([b, [0, 0, 1]])
    return (a3 @ b3)[:2]


@pytest.mark.parametrize("rot", [0, 30, -90, 170])
def test_affine_round_trip(rot):
    center, scale, size = np.array([320.0, 240.0]), np.array([1.2, 1.6]), (192, 256)
    fwd = get_affine_transform(center, scale, rot, size)
    inv = get_affine_transform(center, scale, rot, size, inv=1)
    np.testing.assert_allclose(_compose(inv, fwd), [[1, 0, 0], [0, 1, 0]], atol=1e-4)
    # the center goes to the middle of the output and the box width to the output width
    np.testing.assert_allclose(affine_transform(center, fwd), [96, 128], atol=1e-3)
    pts = np.random.default_rng(0).uniform(0, 600, (20, 2))
    back = affine_transform_points(affine_transform_points(pts, fwd), inv)
    np.testing.assert_allclose(back, pts, atol=1e-2)


def test_affine_scale_and_rotation_hand_computed():
    # a 200 x 200 box around (100, 100) onto 50 x 50: factor 1/4; rotated by 90 degrees
    t = get_affine_transform([100, 100], [1.0, 1.0], 90, (50, 50))
    np.testing.assert_allclose(affine_transform([100, 100], t), [25, 25], atol=1e-4)
    # +90 degrees turns the crop counter-clockwise: a point right of the center lands above it
    np.testing.assert_allclose(affine_transform([140, 100], t), [25, 15], atol=1e-4)
    shifted = get_affine_transform([100, 100], [1.0, 1.0], 0, (50, 50), shift=[0.1, 0])
    np.testing.assert_allclose(affine_transform([120, 100], shifted), [25, 25], atol=1e-4)


def test_transform_preds_maps_heatmap_to_image():
    coords = np.array([[0.0, 0.0], [48.0, 64.0], [24.0, 32.0]])
    out = transform_preds(coords, [300, 200], [0.96, 1.28], [48, 64])
    # a 192 x 256 box centred at (300, 200): heatmap pixel = 4 image pixels
    np.testing.assert_allclose(out, [[204, 72], [396, 328], [300, 200]], atol=1e-3)


def test_crop_identity_and_scaled():
    img = np.arange(40 * 60, dtype=np.float32).reshape(40, 60)
    patch = crop(img, [30, 20], [20 / 200, 10 / 200], (20, 10))
    np.testing.assert_allclose(patch, img[15:25, 20:40], atol=1e-3)


def test_fliplr_joints_swaps_pairs():
    joints = np.array([[10.0, 5.0, 0], [20.0, 6.0, 0], [30.0, 7.0, 0]])
    vis = np.array([[1.0, 1.0, 0], [0.0, 0.0, 0], [1.0, 1.0, 0]])
    flipped, fvis = fliplr_joints(joints, vis, 100, [[0, 2]])
    np.testing.assert_array_equal(flipped[:, :2], [[69, 7], [0, 0], [89, 5]])
    np.testing.assert_array_equal(fvis[:, 0], [1, 0, 1])
    assert joints[0, 0] == 10  # the input is left untouched


def test_flip_back_numpy_and_torch_agree_and_invert():
    hm = np.random.default_rng(1).random((2, 5, 4, 6)).astype(np.float32)
    pairs = [[1, 2], [3, 4]]
    once = flip_back(hm, pairs)
    np.testing.assert_array_equal(once[:, 1], hm[:, 2, :, ::-1])
    np.testing.assert_array_equal(once[:, 0], hm[:, 0, :, ::-1])
    np.testing.assert_array_equal(flip_back(once, pairs), hm)
    np.testing.assert_array_equal(flip_back(torch.from_numpy(hm), pairs).numpy(), once)
    with pytest.raises(ValueError, match="N x J x H x W"):
        flip_back(hm[0], pairs)


def test_box_to_center_scale_fits_the_aspect_ratio_and_pads():
    center, scale = box_to_center_scale(10, 20, 40, 80, 0.75, 1.25)  # too tall: widened
    assert center.dtype == np.float32 and scale.dtype == np.float32
    np.testing.assert_array_equal(center, [30, 60])
    np.testing.assert_array_equal(scale, np.float32([60 / 200, 80 / 200]) * np.float32(1.25))
    _, wide = box_to_center_scale(0, 0, 150, 100, 0.75)  # too wide: heightened, unpadded
    np.testing.assert_array_equal(wide, np.float32([150 / 200, 200 / 200]))
    _, missing = box_to_center_scale(-11, 0, 20, 20, 1.0, 1.25)  # center x -1: no padding
    np.testing.assert_array_equal(missing, np.float32([0.1, 0.1]))
    _, padded = box_to_center_scale(0, 0, 20, 20, 1.0, np.float64(1.25))
    assert padded.dtype == np.float32


def test_whole_image_is_the_box_of_its_pixel_corners():
    center, scale = box_to_center_scale(-0.5, -0.5, 640.0, 400.0, 64 / 48)
    np.testing.assert_array_equal(center, np.float32([319.5, 199.5]))
    np.testing.assert_array_equal(scale, np.float32([640 / 200, 480 / 200]))
