"""The domain-gap photometric steps of lib/dataset/augmentation.py (style, coarse dropout, sun
flare, motion / median blur, ISO noise): off by default without a draw, pixels only (joints and
targets bit-equal to the step being off), placed on the box of the visible joints, drawn after
the three older steps, and their config keys checked."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lib.config import ConfigValueError, default_config, merge_from_list
from lib.dataset import COCODataset, SpeedDataset
from lib.dataset.augmentation import CropAugmentation, object_box
from lib.utils.transforms import input_transform
from tests.datagen import fixture_cfg, make_coco_fixture

# Each new step on its own at p = 1, as DATASET keys.
STEPS = {
    "style": {"PROB_STYLE": 1.0},
    "hard_light": {"PROB_HARD_LIGHT": 1.0},
    "coarse_dropout": {"PROB_COARSE_DROPOUT": 1.0},
    "sun_flare": {"PROB_SUN_FLARE": 1.0},
    "motion_blur": {"PROB_MOTION_BLUR": 1.0},
    "median_blur": {"PROB_MEDIAN_BLUR": 1.0},
    "iso_noise": {"PROB_ISO_NOISE": 1.0},
}
FIELDS = {"style": "prob_style", "hard_light": "prob_hard_light",
          "coarse_dropout": "prob_coarse_dropout",
          "sun_flare": "prob_sun_flare", "motion_blur": "prob_motion_blur",
          "median_blur": "prob_median_blur", "iso_noise": "prob_iso_noise"}


def _state() -> tuple:
    state = np.random.get_state()
    return state[1].tobytes(), state[2], state[3], state[4]


def _scene(channels: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 96 x 128 crop (dark background, a textured bright object) and 5 joints: 4 visible
    on the object's corners, one invisible far away (it must not widen the box)."""
    rng = np.random.default_rng(seed)
    crop = np.full((96, 128), 12, np.uint8)
    crop[30:70, 40:100] = rng.integers(90, 200, (40, 60), dtype=np.uint8)
    if channels == 3:
        crop = np.ascontiguousarray(np.stack([crop, crop // 2, 255 - crop], axis=2))
    joints = np.array([[40.0, 30.0, 0], [99.0, 30.0, 0], [40.0, 69.0, 0], [99.0, 69.0, 0],
                       [5.0, 90.0, 0]])
    vis = np.array([[1.0, 1, 0]] * 4 + [[0.0, 0, 0]])
    return crop, joints, vis


# ---- defaults, draw order -------------------------------------------------------------------
def test_defaults_are_off_and_draw_nothing():
    augmentation = CropAugmentation.from_config(default_config())
    assert augmentation == CropAugmentation() and not augmentation.photometric
    crop, joints, vis = _scene()
    np.random.seed(0)
    before = _state()
    assert augmentation.adjust_pixels(crop, joints, vis) is crop
    assert _state() == before


def test_a_step_that_is_off_draws_nothing_whatever_its_other_keys():
    """PROB_NOISE alone, and PROB_NOISE with every new step's size keys changed but their
    probabilities 0: the same pixels and the same random state after."""
    crop, joints, vis = _scene()
    plain = CropAugmentation(prob_noise=1.0)
    tuned = CropAugmentation(prob_noise=1.0, style_shading=0.9, hard_light_shadow=0.9,
                             hard_light_gain=3.0, coarse_dropout_holes=2,
                             coarse_dropout_size=(0.5, 0.6), sun_flare_radius=(0.5, 1.0),
                             sun_flare_jitter=0.0, motion_blur_length=15, median_blur_size=3,
                             iso_noise_gain=5.0, iso_noise_speckle=0.5)
    np.random.seed(4)
    expected, after = plain.adjust_pixels(crop, joints, vis), _state()
    np.random.seed(4)
    np.testing.assert_array_equal(tuned.adjust_pixels(crop, joints, vis), expected)
    assert _state() == after


def test_new_steps_draw_after_the_older_ones():
    """ISO noise with zero gain and speckle changes no pixel but draws: the brightness /
    contrast drawn before it must be the same as without it."""
    crop = np.full((32, 32), 100, np.uint8)
    bright = CropAugmentation(prob_brightness_contrast=1.0)
    both = CropAugmentation(prob_brightness_contrast=1.0, prob_iso_noise=1.0,
                            iso_noise_gain=0.0, iso_noise_speckle=0.0)
    np.random.seed(7)
    expected, after = bright.adjust_pixels(crop), _state()
    np.random.seed(7)
    np.testing.assert_array_equal(both.adjust_pixels(crop), expected)
    assert _state() != after


# ---- pixels only: items through the real pipeline --------------------------------------------
@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco_domain")
    make_coco_fixture(root, image_set="train2017", num_images=1)
    return root


def _items(ds, count: int = 3) -> list:
    """Items each from its own seed (a step on draws after an item's geometry, so the next
    item's geometry would differ)."""
    items = []
    for index in range(count):
        np.random.seed(11 + index)
        random.seed(11 + index)
        items.append(ds[index % len(ds)])
    return items


def _assert_pixels_only(plain_items, step_items) -> None:
    changed = False
    for (image, target, weight, meta), (image2, target2, weight2, meta2) in zip(
            plain_items, step_items, strict=True):
        assert torch.equal(target, target2) and torch.equal(weight, weight2)
        for key in ("joints", "joints_vis", "center", "scale"):
            np.testing.assert_array_equal(meta[key], meta2[key])
        assert meta["rotation"] == meta2["rotation"]
        changed |= not torch.equal(image, image2)
    assert changed


@pytest.mark.parametrize("step", sorted(STEPS))
def test_spacecraft_step_changes_pixels_only(step, speed_root, speed_cfg, make_cfg):
    base = {"DATASET.SCALE_FACTOR": 0.25, "DATASET.ROT_FACTOR": 30, "DATASET.SHIFT_FACTOR": 0.1}
    plain = SpeedDataset(make_cfg(speed_cfg, base), str(speed_root), "train", True,
                         input_transform())
    options = {**base, **{f"DATASET.{k}": v for k, v in STEPS[step].items()}}
    with_step = SpeedDataset(make_cfg(speed_cfg, options), str(speed_root), "train", True,
                             input_transform())
    _assert_pixels_only(_items(plain), _items(with_step))


@pytest.mark.parametrize("step", sorted(STEPS))
def test_colour_person_step_changes_pixels_only(step, coco_root):
    plain = COCODataset(fixture_cfg("coco", coco_root), str(coco_root), "train2017", True,
                        input_transform())
    options = {f"DATASET.{k}": v for k, v in STEPS[step].items()}
    with_step = COCODataset(fixture_cfg("coco", coco_root, options), str(coco_root),
                            "train2017", True, input_transform())
    _assert_pixels_only(_items(plain), _items(with_step))


def test_the_dataset_hands_the_target_joints_to_the_augmentation(speed_root, speed_cfg,
                                                                 make_cfg):
    ds = SpeedDataset(make_cfg(speed_cfg, {"DATASET.PROB_SUN_FLARE": 1.0}), str(speed_root),
                      "train", True, input_transform())
    seen = {}

    def spy(crop, joints=None, joints_vis=None):
        seen.update(shape=crop.shape, joints=joints.copy(), joints_vis=joints_vis.copy())
        return crop

    ds._augment_image = spy
    np.random.seed(0)
    _, _, _, meta = ds[0]
    assert seen["shape"] == (64, 64)  # the spacecraft's crops are one grey channel
    np.testing.assert_array_equal(seen["joints"], meta["joints"])
    np.testing.assert_array_equal(seen["joints_vis"], meta["joints_vis"])


# ---- what each step does ---------------------------------------------------------------------
def test_object_box_of_the_visible_joints_clipped_to_the_crop():
    crop, joints, vis = _scene()
    assert object_box(crop.shape, joints, vis) == (40, 30, 100, 70)
    assert object_box(crop.shape, None, None) == (0, 0, 128, 96)
    assert object_box(crop.shape, joints, np.zeros_like(vis)) == (0, 0, 128, 96)
    outside = joints.copy()
    outside[0] = [-30.0, -8.5, 0]
    assert object_box(crop.shape, outside, vis) == (0, 0, 100, 70)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("step", sorted(STEPS))
def test_each_step_keeps_shape_and_dtype_and_leaves_its_input_alone(step, channels):
    crop, joints, vis = _scene(channels)
    kept, kept_joints = crop.copy(), joints.copy()
    np.random.seed(1)
    out = CropAugmentation(**{FIELDS[step]: 1.0}).adjust_pixels(crop, joints, vis)
    assert out.shape == crop.shape and out.dtype == np.uint8
    assert not np.array_equal(out, crop)
    np.testing.assert_array_equal(crop, kept)
    np.testing.assert_array_equal(joints, kept_joints)


@pytest.mark.parametrize("seed", range(6))
def test_dropout_holes_lie_inside_the_box_of_the_visible_joints(seed):
    crop, joints, vis = _scene(3, seed)
    np.random.seed(seed)
    out = CropAugmentation(prob_coarse_dropout=1.0).adjust_pixels(crop, joints, vis)
    changed = np.argwhere((out != crop).any(axis=2))
    assert len(changed) > 0
    assert changed[:, 1].min() >= 40 and changed[:, 1].max() < 100  # x in [40, 100)
    assert changed[:, 0].min() >= 30 and changed[:, 0].max() < 70  # y in [30, 70)
    grey = out[changed[:, 0], changed[:, 1]]
    assert (grey == grey[:, :1]).all()  # a grey fill: equal channels


@pytest.mark.parametrize("seed", range(4))
def test_sun_flare_brightens_around_the_box_center_and_never_darkens(seed):
    crop = np.full((96, 128), 30, np.uint8)
    _, joints, vis = _scene()
    np.random.seed(seed)
    out = CropAugmentation(prob_sun_flare=1.0, sun_flare_jitter=0.0).adjust_pixels(
        crop, joints, vis)
    assert (out >= crop).all()
    center = out[48:52, 68:72]  # the box (40..99, 30..69) is centred on (69.5, 49.5)
    assert center.min() > 200
    assert out[:8, :8].mean() < center.mean() - 100


def test_style_restyles_the_whole_crop_alike_in_every_channel():
    """The style step remaps the whole crop (confining it to the box drew a rectangle on the
    landmarks' extremes); grey and colour crops get the same curve and shading per channel."""
    crop, joints, vis = _scene()
    colour = np.ascontiguousarray(np.repeat(crop[..., None], 3, axis=2))
    np.random.seed(3)
    grey_out = CropAugmentation(prob_style=1.0).adjust_pixels(crop, joints, vis)
    np.random.seed(3)
    colour_out = CropAugmentation(prob_style=1.0).adjust_pixels(colour, joints, vis)
    for channel in range(3):
        np.testing.assert_array_equal(colour_out[..., channel], grey_out)
    assert (grey_out[:20] != crop[:20]).any()  # outside the box too


@pytest.mark.parametrize("seed", range(4))
def test_hard_light_splits_the_crop_at_a_terminator_through_the_box(seed):
    """A flat crop comes back in two parts: the shadowed one at most HARD_LIGHT_SHADOW of the
    grey, the lit one brightened by at most HARD_LIGHT_GAIN, the sharp edge between them
    crossing the object's box."""
    crop = np.full((64, 96), 100, np.uint8)
    box = (30, 20, 60, 40)
    np.random.seed(seed)
    out = CropAugmentation(prob_hard_light=1.0, hard_light_shadow=0.3,
                           hard_light_gain=1.5)._hard_light(crop.astype(np.float32), box)
    dark, bright = out <= 30.0 + 1e-3, out >= 100.0 - 1e-3
    assert out.max() <= 150.0 + 1e-3 and dark.mean() > 0.02 and bright.mean() > 0.02
    assert (dark | bright).mean() > 0.6  # a sharp terminator: a narrow band in between
    inside = out[box[1]:box[3], box[0]:box[2]]
    assert inside.min() <= 30.0 + 1e-3 and inside.max() >= 100.0 - 1e-3


def test_iso_noise_grows_with_the_signal():
    crop = np.zeros((64, 128), np.uint8)
    crop[:, 64:] = 200
    np.random.seed(0)
    out = CropAugmentation(prob_iso_noise=1.0, iso_noise_gain=4.0,
                           iso_noise_speckle=0.0).adjust_pixels(crop).astype(np.float64)
    assert out[:, :64].std() == 0.0 and out[:, 64:].std() > 1.0


def test_motion_blur_is_one_dimensional_and_median_keeps_edges():
    crop = np.zeros((64, 64), np.uint8)
    crop[32, 32] = 255  # a point light: motion blur spreads it along a line
    np.random.seed(2)
    out = CropAugmentation(prob_motion_blur=1.0, motion_blur_length=9).adjust_pixels(crop)
    ys, xs = np.nonzero(out)
    extent = np.hypot(np.ptp(xs), np.ptp(ys))
    assert extent >= 2 and len(xs) < 0.5 * extent**2  # a streak, not a disc
    step = np.zeros((32, 32), np.uint8)
    step[:, 16:] = 200
    step[10, 5] = 200  # a lone hot pixel: the median removes it, the edge stays
    np.random.seed(2)
    out = CropAugmentation(prob_median_blur=1.0).adjust_pixels(step)
    assert out[10, 5] == 0 and (out[:, 20:] == 200).all() and (out[:, :12] == 0).all()


# ---- config -----------------------------------------------------------------------------------
BAD = [
    ("DATASET.PROB_STYLE", "1.5"), ("DATASET.PROB_COARSE_DROPOUT", "-0.1"),
    ("DATASET.PROB_SUN_FLARE", "2.0"), ("DATASET.PROB_MOTION_BLUR", "-1.0"),
    ("DATASET.PROB_MEDIAN_BLUR", "1.01"), ("DATASET.PROB_ISO_NOISE", "3.0"),
    ("DATASET.STYLE_SHADING", "1.5"), ("DATASET.COARSE_DROPOUT_HOLES", "0"),
    ("DATASET.PROB_HARD_LIGHT", "1.2"), ("DATASET.HARD_LIGHT_SHADOW", "-0.1"),
    ("DATASET.HARD_LIGHT_GAIN", "0.5"),
    ("DATASET.COARSE_DROPOUT_SIZE", "[0.5, 0.2]"), ("DATASET.COARSE_DROPOUT_SIZE", "[0.0, 0.2]"),
    ("DATASET.SUN_FLARE_RADIUS", "[0.1, 9.0]"), ("DATASET.SUN_FLARE_JITTER", "-0.1"),
    ("DATASET.MOTION_BLUR_LENGTH", "2"), ("DATASET.MEDIAN_BLUR_SIZE", "7"),
    ("DATASET.ISO_NOISE_GAIN", "-1.0"), ("DATASET.ISO_NOISE_SPECKLE", "-0.5"),
]


@pytest.mark.parametrize(("key", "value"), BAD, ids=[f"{k}={v}" for k, v in BAD])
def test_config_refuses_an_impossible_value_in_one_line(key, value):
    cfg = default_config()
    with pytest.raises(ConfigValueError) as err:
        merge_from_list(cfg, [key, value])
    message = str(err.value)
    assert message.startswith(f"{key} must ") and "\n" not in message


def test_config_keys_reach_the_augmentation():
    cfg = default_config()
    merge_from_list(cfg, ["DATASET.PROB_SUN_FLARE", "0.5", "DATASET.COARSE_DROPOUT_SIZE",
                          "[0.1, 0.3]", "DATASET.MEDIAN_BLUR_SIZE", "3"])
    augmentation = CropAugmentation.from_config(cfg)
    assert augmentation.prob_sun_flare == 0.5 and augmentation.photometric
    assert augmentation.coarse_dropout_size == (0.1, 0.3)
    assert augmentation.median_blur_size == 3
