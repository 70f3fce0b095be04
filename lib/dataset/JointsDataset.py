"""The base of every keypoint data set: records -> (input, target, target_weight, meta).

A subclass (COCO, MPII, spacecraft) only builds ``self.db``, a list of records in the original's
format, and scores predictions; reading, cropping, augmenting and target making live here.

Record keys: 'image' (path, ``archive.zip@member`` for the zip format), 'center' (x, y pixels),
'scale' (box size / PIXEL_STD, aspect ratio of the input, padded), 'joints_3d' and
'joints_3d_vis' (J x 3 float64; the third column is unused), optional 'score' (detector score),
'filename', 'imgnum' and 'gamma' (a tone curve the crop is seen through, 1 when absent: the
spacecraft's test-time tone search, TEST.SPEED_GAMMA_CANDIDATES).

Training items consume random numbers from ``np.random`` and ``random`` in the original's
order, so one random state gives the original's item (``tests/reference_pipeline.py`` keeps the
original algorithm to prove it); the shared augmentation (``lib.dataset.augmentation``) draws
after them, and nothing when it is off.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import transforms as tv

from lib.dataset.augmentation import CropAugmentation
from lib.utils.heatmap_codec import generate_gaussian_targets
from lib.utils.image_io import IMREAD_FLAGS, ImageCache, read_image
from lib.utils.io import UserFileError
from lib.utils.transforms import (
    PIXEL_STD,
    box_scale,
    box_to_center_scale,
    fliplr_joints,
    get_affine_transform,
)

logger = logging.getLogger(__name__)


class DatasetFormatError(UserFileError):
    """A data set file whose content does not follow its format (named in the message)."""


# --------------------------------------------------------------------------------------------
# Input conversion
# --------------------------------------------------------------------------------------------
def _pixel_lookup_table(transform: Callable | None) -> np.ndarray | None:
    """3 x 1 x 256 float32 table equal to ``transform`` on each uint8 value, when it is exactly
    ToTensor followed by Normalize (both per pixel); None for any other transform.

    The table is computed by the transform itself, so looking values up gives its output bit
    for bit, without its three passes over the crop.
    """
    steps = getattr(transform, "transforms", None)
    if (
        not isinstance(transform, tv.Compose)
        or len(steps) != 2
        or type(steps[0]) is not tv.ToTensor
        or type(steps[1]) is not tv.Normalize
    ):
        return None
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)  # 1 x 256 x 3
    table = transform(ramp)
    if not isinstance(table, torch.Tensor) or tuple(table.shape) != (3, 1, 256):
        return None
    return np.ascontiguousarray(table.numpy(), dtype=np.float32)  # 3 x 1 x 256, cv2.LUT's shape


@functools.lru_cache(maxsize=16)
def gamma_lookup_table(gamma: float) -> np.ndarray:
    """uint8 table of 256 entries taking v to round(255 (v / 255) ** gamma): gamma < 1 lifts
    the shadows, > 1 the highlights' contrast."""
    ramp = np.arange(256, dtype=np.float64) / 255.0
    table = np.clip(np.rint(255.0 * ramp ** float(gamma)), 0, 255).astype(np.uint8)
    table.flags.writeable = False  # shared by every caller through the cache
    return table


ABSURD_COORDINATE = 1e6  # pixels: no image is this large, so such a keypoint is a broken value


def drop_unusable_joints(db: list[dict[str, Any]], source: str,
                         entry_name: Callable[[int], str]) -> int:
    """Drop (visibility 0, position 0) every joint of ``db`` whose position or visibility is not
    finite or whose position is beyond ``ABSURD_COORDINATE``; one warning names ``source``, the
    count and the first such joint (``entry_name(record index)``). Returns the count.

    A warning rather than an error: one broken joint among thousands of people should not stop
    a training, but unchecked it would train on NaN targets (or crash the DEBUG drawing far from
    the file). Done once at load time, over the whole set as arrays."""
    if not db:
        return 0
    xy = np.stack([rec["joints_3d"][:, :2] for rec in db])  # N x J x 2
    vis = np.stack([rec["joints_3d_vis"][:, 0] for rec in db])  # N x J
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(xy) <= ABSURD_COORDINATE).all(axis=2) | ~np.isfinite(vis)  # NaN: bad
    records, joints = np.nonzero(bad)
    if len(records) == 0:
        return 0
    first_value = db[records[0]]["joints_3d"][joints[0], :2].tolist()
    for record, joint in zip(records.tolist(), joints.tolist(), strict=True):
        db[record]["joints_3d"][joint, :] = 0.0
        db[record]["joints_3d_vis"][joint, :] = 0.0
    logger.warning(
        "=> %s: %d keypoint(s) not finite or beyond %g pixels, dropped (visibility 0); the first: "
        "%s, joint %d = %s", source, len(records), ABSURD_COORDINATE,
        entry_name(int(records[0])), int(joints[0]), first_value)
    return len(records)


# --------------------------------------------------------------------------------------------
# The data set
# --------------------------------------------------------------------------------------------
class JointsDataset(Dataset):
    """Crops, augments and makes heatmap targets for the records in ``self.db``.

    Subclasses set the class facts below, build ``self.db`` (then call ``self._finish_db``) and
    implement ``evaluate``. Hooks for data sets with their own needs: ``read_grayscale``
    (decode one channel, feed it as three), ``_augment_box`` and ``_augment_image`` (by
    default the shared DATASET.SHIFT_FACTOR / PROB_* steps of ``self.augmentation``).
    """

    num_joints: int = 0
    flip_pairs: list[list[int]] = []
    parent_ids: list[int] | None = None
    upper_body_ids: tuple[int, ...] = ()
    lower_body_ids: tuple[int, ...] = ()
    joints_weight: np.ndarray | float = 1
    read_grayscale: bool = False  # decode 1 channel and repeat it (same pixels as IMREAD_COLOR)

    def __init__(self, cfg: Any, root: str, image_set: str, is_train: bool,
                 transform: Callable | None = None) -> None:
        self.pixel_std = PIXEL_STD
        self.is_train = is_train
        self.root = root
        self.image_set = image_set

        self.output_path = cfg.OUTPUT_DIR
        self.data_format = cfg.DATASET.DATA_FORMAT
        self.scale_factor = cfg.DATASET.SCALE_FACTOR
        self.rotation_factor = cfg.DATASET.ROT_FACTOR
        self.flip = cfg.DATASET.FLIP
        self.num_joints_half_body = cfg.DATASET.NUM_JOINTS_HALF_BODY
        self.prob_half_body = cfg.DATASET.PROB_HALF_BODY
        self.color_rgb = cfg.DATASET.COLOR_RGB
        self.bbox_padding = cfg.DATASET.BBOX_PADDING
        self.select = cfg.DATASET.SELECT_DATA
        self.augmentation = CropAugmentation.from_config(cfg)
        cache_mb = cfg.DATASET.CACHE_IMAGES_MB
        self.image_cache = ImageCache(cache_mb * 2**20) if cache_mb > 0 else None

        self.target_type = cfg.MODEL.TARGET_TYPE
        self.image_size = np.array(cfg.MODEL.IMAGE_SIZE)
        self.heatmap_size = np.array(cfg.MODEL.HEATMAP_SIZE)
        self.aspect_ratio = self.image_size[0] * 1.0 / self.image_size[1]
        self.sigma = cfg.MODEL.SIGMA
        self.use_different_joints_weight = cfg.LOSS.USE_DIFFERENT_JOINTS_WEIGHT

        if cfg.MODEL.NUM_JOINTS != self.num_joints:
            raise ValueError(
                f"MODEL.NUM_JOINTS is {cfg.MODEL.NUM_JOINTS} but the {type(self).__name__} "
                f"data set has {self.num_joints} joints"
            )

        self.transform = transform
        self.db: list[dict[str, Any]] = []

    @property
    def transform(self) -> Callable | None:
        return self._transform

    @transform.setter
    def transform(self, transform: Callable | None) -> None:
        self._transform = transform
        self._lookup_table = _pixel_lookup_table(transform)

    # ---- what subclasses provide ---------------------------------------------------------
    def _get_db(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def evaluate(self, cfg: Any, preds: np.ndarray, output_dir: str, *args: Any,
                 **kwargs: Any) -> tuple[dict[str, float], float]:
        raise NotImplementedError

    def _augment_box(self, center: np.ndarray, scale: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Training step after the original's draws (and the flip): the crop shift of
        DATASET.SHIFT_FACTOR (no draw when 0)."""
        return self.augmentation.shift_crop(center, scale, self.pixel_std)

    def _augment_image(self, crop: np.ndarray, joints: np.ndarray | None = None,
                       joints_vis: np.ndarray | None = None) -> np.ndarray:
        """Training step on the uint8 crop (decoder channel order) before it becomes the input:
        the photometric steps of DATASET.PROB_* (``crop`` itself, no draw, when all are off),
        placed on the object by the joints in crop pixels (the whole crop without them);
        returns uint8 of the same shape and never changes the joints."""
        return self.augmentation.adjust_pixels(crop, joints, joints_vis)

    # ---- building the records -------------------------------------------------------------
    def _box_to_center_scale(self, x: float, y: float, w: float, h: float
                             ) -> tuple[np.ndarray, np.ndarray]:
        """Center and scale of a box (x, y, w, h) at the input's aspect ratio, enlarged by
        DATASET.BBOX_PADDING (``lib.utils.transforms.box_to_center_scale``)."""
        return box_to_center_scale(x, y, w, h, self.aspect_ratio, self.bbox_padding,
                                   self.pixel_std)

    def _image_center_scale(self, width: float, height: float
                            ) -> tuple[np.ndarray, np.ndarray]:
        """Center and scale of a whole `width` x `height` image at the input's aspect ratio,
        unpadded (the crop of a model that sees the entire image): the box of its pixels'
        outer corners."""
        return box_to_center_scale(-0.5, -0.5, float(width), float(height), self.aspect_ratio,
                                   1.0, self.pixel_std)

    def _joints_arrays(self, xy: np.ndarray, vis: np.ndarray, source: str, entry: Any
                       ) -> tuple[np.ndarray, np.ndarray]:
        """(joints_3d, joints_3d_vis) J x 3 float64 from J x 2 positions and J visibilities,
        checking the count against the data set (``source`` and ``entry`` name the culprit)."""
        xy = np.asarray(xy, dtype=np.float64)
        vis = np.asarray(vis, dtype=np.float64).reshape(-1)
        if xy.ndim != 2 or xy.shape[1] < 2 or len(xy) != self.num_joints:
            raise DatasetFormatError(
                f"{source}: entry {entry} has {len(xy)} joints, expected {self.num_joints} "
                f"(MODEL.NUM_JOINTS)"
            )
        if len(vis) != self.num_joints:
            raise DatasetFormatError(
                f"{source}: entry {entry} has {len(vis)} joint visibilities, expected "
                f"{self.num_joints} (MODEL.NUM_JOINTS)"
            )
        joints_3d = np.zeros((self.num_joints, 3), dtype=np.float64)
        joints_3d_vis = np.zeros((self.num_joints, 3), dtype=np.float64)
        joints_3d[:, :2] = xy[:, :2]
        joints_3d_vis[:, 0] = vis
        joints_3d_vis[:, 1] = vis
        return joints_3d, joints_3d_vis

    def _finish_db(self, db: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
        """SELECT_DATA for training, then refuse an empty data set (naming ``source``)."""
        if self.is_train and self.select:
            db = self.select_data(db)
        if not db:
            raise DatasetFormatError(
                f"{type(self).__name__} '{self.image_set}' has no samples after filtering "
                f"(source: {source})"
            )
        logger.info("=> load %d samples from %s", len(db), source)
        return db

    def select_data(self, db: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Keep records whose visible joints' centroid sits near the box center (the original's
        SELECT_DATA rule: a keypoint-similarity score against a bar rising with the number of
        visible joints)."""
        selected = []
        for rec in db:
            visible = rec["joints_3d_vis"][:, 0] > 0
            num_vis = int(visible.sum())
            if num_vis == 0:
                continue
            joints_center = rec["joints_3d"][visible, :2].mean(axis=0)
            area = rec["scale"][0] * rec["scale"][1] * (self.pixel_std**2)
            diff_norm2 = np.linalg.norm(joints_center - np.asarray(rec["center"]), 2)
            ks = np.exp(-1.0 * (diff_norm2**2) / ((0.2) ** 2 * 2.0 * area))
            metric = (0.2 / 16) * num_vis + 0.45 - 0.2 / 16
            if ks > metric:
                selected.append(rec)
        logger.info("=> num db: %d, selected: %d", len(db), len(selected))
        return selected

    # ---- items ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.db)

    def _read_image(self, path: str) -> np.ndarray:
        flags = (cv2.IMREAD_GRAYSCALE if self.read_grayscale else IMREAD_FLAGS) \
            | cv2.IMREAD_IGNORE_ORIENTATION
        if self.image_cache is None:
            return read_image(path, flags, self.data_format)
        return self.image_cache.get(path, flags,
                                    lambda: read_image(path, flags, self.data_format))

    def half_body_transform(self, joints: np.ndarray, joints_vis: np.ndarray
                            ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Center and scale of the upper or the lower body's visible joints (one np.random
        draw), or (None, None) when fewer than two joints are available."""
        visible = joints_vis[:, 0] > 0
        upper = np.zeros(len(joints), dtype=bool)
        upper[list(self.upper_body_ids)] = True
        upper_joints = joints[visible & upper]
        lower_joints = joints[visible & ~upper]

        if np.random.randn() < 0.5 and len(upper_joints) > 2:
            selected = upper_joints
        else:
            selected = lower_joints if len(lower_joints) > 2 else upper_joints
        if len(selected) < 2:
            return None, None

        selected = np.asarray(selected, dtype=np.float32)
        center = selected.mean(axis=0)[:2]
        left_top = np.amin(selected, axis=0)
        right_bottom = np.amax(selected, axis=0)
        # Python floats: the original ran under numpy 1, where float32 scalar arithmetic with
        # Python numbers was carried out in float64.
        w = float(right_bottom[0] - left_top[0])
        h = float(right_bottom[1] - left_top[1])
        return center, box_scale(w, h, self.aspect_ratio, self.pixel_std) * 1.5

    def _sample_augmentation(self, joints: np.ndarray, joints_vis: np.ndarray,
                             center: np.ndarray, scale: np.ndarray
                             ) -> tuple[np.ndarray, np.ndarray, float, bool]:
        """(center, scale, rotation, flip) for one training item, drawing from np.random and
        random in the original's order: [rand, half-body randn], randn scale, random rotation
        gate [, randn angle], [random flip]."""
        if (np.sum(joints_vis[:, 0]) > self.num_joints_half_body
                and np.random.rand() < self.prob_half_body):
            c_half, s_half = self.half_body_transform(joints, joints_vis)
            if c_half is not None and s_half is not None:
                center, scale = c_half, s_half

        sf, rf = self.scale_factor, self.rotation_factor
        factor = np.clip(np.random.randn() * sf + 1, 1 - sf, 1 + sf)
        # The original multiplied under numpy 1 value-based casting: float32 scale stays float32.
        scale = scale * np.asarray(factor, dtype=scale.dtype)
        rotation = np.clip(np.random.randn() * rf, -rf * 2, rf * 2) if random.random() <= 0.6 else 0
        flip = bool(self.flip and random.random() <= 0.5)
        return center, scale, rotation, flip

    def generate_target(self, joints: np.ndarray, joints_vis: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Heatmaps J x H x W and weights J x 1 (float32) for joints in input pixels."""
        target, target_weight = generate_gaussian_targets(
            joints, joints_vis, self.image_size, self.heatmap_size, self.sigma,
            subpixel=self.target_type == "gaussian_subpixel",
        )
        if self.use_different_joints_weight:
            target_weight = np.multiply(target_weight, self.joints_weight)
        return target, target_weight

    def _to_input(self, crop: np.ndarray) -> Any:
        """The crop as the model's input: through ``transform`` (a ToTensor + Normalize pair is
        applied as one table lookup with identical values), in RGB order when COLOR_RGB."""
        if self._lookup_table is not None:
            height, width = crop.shape[:2]
            planes = [crop] * 3 if crop.ndim == 2 else cv2.split(crop)
            if self.color_rgb:
                planes = planes[::-1]
            out = np.empty((3, height, width), dtype=np.float32)
            for channel in range(3):
                cv2.LUT(planes[channel], self._lookup_table[channel], dst=out[channel])
            return torch.from_numpy(out)
        if crop.ndim == 2:
            crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
        if self.color_rgb:
            crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
        return self.transform(crop) if self.transform is not None else crop

    def __getitem__(self, idx: int) -> tuple[Any, torch.Tensor, torch.Tensor, dict[str, Any]]:
        rec = self.db[idx]
        image_file = rec["image"]
        image = self._read_image(image_file)

        # Copies only of what meta hands out (the record itself is never modified).
        joints = rec["joints_3d"]
        joints_vis = rec["joints_3d_vis"].copy()
        center = np.array(rec["center"], copy=True)
        scale = np.array(rec["scale"], copy=True)
        score = rec.get("score", 1)
        rotation: float = 0

        if self.is_train:
            center, scale, rotation, flip = self._sample_augmentation(
                joints, joints_vis, center, scale)
            if flip:
                # cv2.flip then warp gives the pixels of warping the mirrored view, many times
                # faster than handing OpenCV a negative-stride array.
                image = cv2.flip(image, 1)
                joints, joints_vis = fliplr_joints(
                    joints, joints_vis, image.shape[1], self.flip_pairs)
                center[0] = image.shape[1] - float(center[0]) - 1  # float64, as under numpy 1
            center, scale = self._augment_box(center, scale)

        trans = get_affine_transform(center, scale, rotation, self.image_size)
        crop = cv2.warpAffine(image, trans, (int(self.image_size[0]), int(self.image_size[1])),
                              flags=cv2.INTER_LINEAR)

        # Visible joints into input pixels. A stack of (2 x 3) @ (3 x 1) products runs the same
        # kernel as the original's per-joint t @ (x, y, 1), so the values agree bit for bit
        # (one N x 3 @ 3 x 2 product rounds differently in the last bit).
        homogeneous = np.ones((len(joints), 3, 1))
        homogeneous[:, :2, 0] = joints[:, :2]
        moved = np.matmul(np.broadcast_to(trans, (len(joints), 2, 3)), homogeneous)[:, :, 0]
        joints = joints.copy()
        visible = joints_vis[:, 0] > 0.0
        joints[visible, :2] = moved[visible]

        if self.is_train:  # after the joints: the photometric steps work on the object's box
            crop = self._augment_image(crop, joints, joints_vis)
        gamma = rec.get("gamma", 1.0)
        if gamma != 1.0:
            crop = cv2.LUT(crop, gamma_lookup_table(gamma))
        model_input = self._to_input(crop)

        target, target_weight = self.generate_target(joints, joints_vis)
        meta = {
            "image": image_file,
            "filename": rec.get("filename", ""),
            "imgnum": rec.get("imgnum", ""),
            "joints": joints,
            "joints_vis": joints_vis,
            "center": center,
            "scale": scale,
            "rotation": rotation,
            "score": score,
        }
        return model_input, torch.from_numpy(target), torch.from_numpy(target_weight), meta

