"""The base of every keypoint data set: records -> (input, target, target_weight, meta).

A subclass (COCO, MPII, spacecraft) only builds ``self.db``, a list of records in the original's
format, and scores predictions; reading, cropping, augmenting and target making live here.

Record keys: 'image' (path, ``archive.zip@member`` for the zip format), 'center' (x, y pixels),
'scale' (box size / PIXEL_STD, aspect ratio of the input, padded), 'joints_3d' and
'joints_3d_vis' (J x 3 float64; the third column is unused), optional 'score' (detector score),
'filename', 'imgnum'.

Training items consume random numbers from ``np.random`` and ``random`` in the original's
order, so one random state gives the original's item; ``_reference_getitem`` is the original
algorithm, kept to prove it (tests, ``tools/bench_data.py``).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import random
import zipfile
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import transforms as tv

from lib.utils.io import UserFileError
from lib.utils.transforms import (
    PIXEL_STD,
    affine_transform,
    fliplr_joints,
    get_affine_transform,
)

logger = logging.getLogger(__name__)

IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
_ZIP_READERS: dict[tuple[int, str], zipfile.ZipFile] = {}  # (pid, archive) -> open archive


class DatasetFormatError(UserFileError):
    """A data set file whose content does not follow its format (named in the message)."""


# --------------------------------------------------------------------------------------------
# Reading images
# --------------------------------------------------------------------------------------------
def _zip_reader(archive: str) -> zipfile.ZipFile:
    """One open ZipFile per process: a handle inherited through fork shares its file offset."""
    key = (os.getpid(), archive)
    reader = _ZIP_READERS.get(key)
    if reader is None:
        if not os.path.isfile(archive):
            raise FileNotFoundError(f"zip archive of images not found: {archive}")
        reader = _ZIP_READERS[key] = zipfile.ZipFile(archive, "r")
    return reader


def _read_zip_member(path: str) -> bytes:
    """Bytes of ``archive.zip@member`` (the original also writes ``archive.zip@/member``)."""
    archive, _, member = path.partition("@")
    member = member.lstrip("/")
    reader = _zip_reader(archive)
    try:
        return reader.read(member)
    except KeyError:
        # Official archives (e.g. COCO's val2017.zip) keep their files in a folder of that name.
        folder = os.path.splitext(os.path.basename(archive))[0]
        try:
            return reader.read(f"{folder}/{member}")
        except KeyError:
            raise FileNotFoundError(
                f"image listed in the data set but missing: {member} is not in {archive}"
            ) from None


def read_image(path: str, flags: int = IMREAD_FLAGS, data_format: str = "jpg") -> np.ndarray:
    """Decode an image as OpenCV does (BGR uint8 by default); a missing or broken file is an error
    naming it. ``data_format`` 'zip' reads ``archive.zip@member``."""
    if data_format == "zip":
        buffer = np.frombuffer(_read_zip_member(path), np.uint8)
        image = cv2.imdecode(buffer, flags)
    else:
        image = cv2.imread(path, flags)
        if image is None and not os.path.isfile(path):
            raise FileNotFoundError(f"image listed in the data set but missing: {path}")
    if image is None:
        raise ValueError(f"cannot decode image (corrupt or not an image): {path}")
    return image


class ImageCache:
    """Decoded images kept in memory up to a byte budget, so that epochs after the first skip
    the decoding (0.66 ms per 640x400 JPEG here: 7-14% of a `make demo` training step).

    Filled on first read and never evicted (a shuffled epoch would thrash any eviction order);
    past the budget images are decoded every time. Cached arrays are read-only: the pipeline
    writes only to new arrays (flip, warp), and anything that did not would fail loudly rather
    than corrupt the next epoch.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = max(int(budget_bytes), 0)
        self.used_bytes = 0
        self._images: dict[tuple[str, int], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._images)

    def get(self, path: str, flags: int, read: Callable[[], np.ndarray]) -> np.ndarray:
        key = (path, flags)
        image = self._images.get(key)
        if image is None:
            image = read()
            if self.used_bytes + image.nbytes <= self.budget_bytes:
                image.flags.writeable = False
                self._images[key] = image
                self.used_bytes += image.nbytes
        return image


def configure_opencv_for_workers(num_workers: int) -> None:
    """Call in the main process before creating DataLoaders with ``num_workers`` processes.

    With workers, each worker process is one unit of the parallelism, so OpenCV's own thread
    pool is switched off here, before the fork: the workers inherit that setting. (Changing
    it inside a forked worker instead can deadlock in OpenCV when the parent's pool was running.)
    """
    if num_workers > 0:
        cv2.setNumThreads(0)


# --------------------------------------------------------------------------------------------
# Gaussian targets
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def gaussian_patch(sigma: float) -> np.ndarray:
    """The unnormalised Gaussian (peak 1) of the original, float32, side 2 * 3 sigma + 1
    (read-only: one array is shared by every call with this sigma)."""
    tmp_size = sigma * 3
    size = 2 * tmp_size + 1
    x = np.arange(0, size, 1, np.float32)
    y = x[:, np.newaxis]
    x0 = y0 = size // 2
    patch = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
    patch.setflags(write=False)
    return patch


def generate_gaussian_targets(
    joints: np.ndarray,
    joints_vis: np.ndarray,
    image_size: Sequence[int],
    heatmap_size: Sequence[int],
    sigma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps J x H x W (float32) and weights J x 1 for joints in input-image pixels.

    The original's rules, for all joints at once: the peak sits at int(joint / stride + 0.5)
    (int truncates towards zero), the window spans int(mu - 3 sigma) .. int(mu + 3 sigma + 1),
    the weight is the visibility, set to 0 when the window lies entirely outside the heatmap,
    and only joints with weight > 0.5 are drawn. Values are copied from ``gaussian_patch``, so
    they equal the per-joint loop bit for bit.
    """
    width, height = int(heatmap_size[0]), int(heatmap_size[1])
    num_joints = len(joints)
    tmp_size = sigma * 3
    stride = np.asarray(image_size) / np.asarray(heatmap_size)

    target_weight = np.asarray(joints_vis)[:, :1].astype(np.float32)
    mu_x = np.trunc(joints[:, 0] / stride[0] + 0.5)
    mu_y = np.trunc(joints[:, 1] / stride[1] + 0.5)
    ul_x = np.trunc(mu_x - tmp_size).astype(np.int64)
    ul_y = np.trunc(mu_y - tmp_size).astype(np.int64)
    br_x = np.trunc(mu_x + tmp_size + 1).astype(np.int64)
    br_y = np.trunc(mu_y + tmp_size + 1).astype(np.int64)
    outside = (ul_x >= width) | (ul_y >= height) | (br_x < 0) | (br_y < 0)
    target_weight[outside] = 0

    patch = gaussian_patch(sigma)
    offsets = np.arange(patch.shape[0])
    cols = ul_x[:, None] + offsets  # J x S heatmap columns covered by each joint's patch
    rows = ul_y[:, None] + offsets
    col_ok = (cols >= 0) & (cols < np.minimum(br_x, width)[:, None])
    row_ok = (rows >= 0) & (rows < np.minimum(br_y, height)[:, None])
    drawn = (target_weight[:, 0] > 0.5)[:, None, None]
    inside = row_ok[:, :, None] & col_ok[:, None, :] & drawn  # J x S x S

    target = np.zeros((num_joints, height, width), dtype=np.float32)
    joint_index, patch_row, patch_col = np.nonzero(inside)
    target[joint_index, rows[joint_index, patch_row], cols[joint_index, patch_col]] = patch[
        patch_row, patch_col
    ]
    return target, target_weight


def _generate_gaussian_targets_loop(
    joints: np.ndarray,
    joints_vis: np.ndarray,
    image_size: Sequence[int],
    heatmap_size: Sequence[int],
    sigma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference: the original per-joint loop (tests and ``tools/bench_data.py`` only)."""
    image_size = np.asarray(image_size)
    heatmap_size = np.asarray(heatmap_size)
    num_joints = len(joints)
    target_weight = np.ones((num_joints, 1), dtype=np.float32)
    target_weight[:, 0] = joints_vis[:, 0]
    target = np.zeros((num_joints, heatmap_size[1], heatmap_size[0]), dtype=np.float32)
    tmp_size = sigma * 3
    for joint_id in range(num_joints):
        feat_stride = image_size / heatmap_size
        mu_x = int(joints[joint_id][0] / feat_stride[0] + 0.5)
        mu_y = int(joints[joint_id][1] / feat_stride[1] + 0.5)
        ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
        br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
        if ul[0] >= heatmap_size[0] or ul[1] >= heatmap_size[1] or br[0] < 0 or br[1] < 0:
            target_weight[joint_id] = 0
            continue
        size = 2 * tmp_size + 1
        x = np.arange(0, size, 1, np.float32)
        y = x[:, np.newaxis]
        x0 = y0 = size // 2
        g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
        g_x = max(0, -ul[0]), min(br[0], heatmap_size[0]) - ul[0]
        g_y = max(0, -ul[1]), min(br[1], heatmap_size[1]) - ul[1]
        img_x = max(0, ul[0]), min(br[0], heatmap_size[0])
        img_y = max(0, ul[1]), min(br[1], heatmap_size[1])
        if target_weight[joint_id] > 0.5:
            target[joint_id][img_y[0] : img_y[1], img_x[0] : img_x[1]] = g[
                g_y[0] : g_y[1], g_x[0] : g_x[1]
            ]
    return target, target_weight


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


# --------------------------------------------------------------------------------------------
# Small shared helpers for subclasses
# --------------------------------------------------------------------------------------------
def merge_rank_outputs(
    parts: Sequence[tuple[Sequence[int], np.ndarray, np.ndarray, Sequence[str]]],
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Merge per-rank (sample indices, preds, all_boxes, image paths) into data-set order.

    A DistributedSampler pads the last shard with repeated samples; every index is kept once,
    so ``evaluate`` sees each sample exactly once, as in a single-process run.
    """
    if not parts:
        raise ValueError("merge_rank_outputs: no rank outputs given")
    indices = np.concatenate([np.asarray(p[0], dtype=np.int64) for p in parts])
    preds = np.concatenate([np.asarray(p[1]) for p in parts])
    boxes = np.concatenate([np.asarray(p[2]) for p in parts])
    paths = [path for p in parts for path in p[3]]
    if not len(indices) == len(preds) == len(boxes) == len(paths):
        raise ValueError(
            f"merge_rank_outputs: {len(indices)} indices, {len(preds)} preds, "
            f"{len(boxes)} boxes and {len(paths)} image paths must match"
        )
    _, first = np.unique(indices, return_index=True)  # sorted by index, first occurrence
    return preds[first], boxes[first], [paths[i] for i in first]


# --------------------------------------------------------------------------------------------
# The data set
# --------------------------------------------------------------------------------------------
class JointsDataset(Dataset):
    """Crops, augments and makes heatmap targets for the records in ``self.db``.

    Subclasses set the class facts below, build ``self.db`` (then call ``self._finish_db``) and
    implement ``evaluate``. Hooks for data sets with their own needs: ``read_grayscale``
    (decode one channel, feed it as three), ``_augment_box`` and ``_augment_image``.
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
        cache_mb = cfg.DATASET.CACHE_IMAGES_MB
        if cache_mb < 0:
            raise ValueError(f"DATASET.CACHE_IMAGES_MB must be 0 (off) or a budget in MiB, got "
                             f"{cache_mb}")
        self.image_cache = ImageCache(cache_mb * 2**20) if cache_mb > 0 else None

        self.target_type = cfg.MODEL.TARGET_TYPE
        if self.target_type != "gaussian":
            raise ValueError(
                f"MODEL.TARGET_TYPE '{self.target_type}' is not supported (only 'gaussian')"
            )
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
        """Training hook after the standard draws (e.g. crop translation); no-op here."""
        return center, scale

    def _augment_image(self, crop: np.ndarray) -> np.ndarray:
        """Training hook on the uint8 crop (decoder channel order) before it becomes the input;
        must return uint8 of the same shape; no-op here."""
        return crop

    # ---- building the records -------------------------------------------------------------
    def _box_to_center_scale(self, x: float, y: float, w: float, h: float
                             ) -> tuple[np.ndarray, np.ndarray]:
        """Center and scale of a box (x, y, w, h): widened or heightened to the input's
        aspect ratio, in units of PIXEL_STD, enlarged by DATASET.BBOX_PADDING."""
        center = np.zeros(2, dtype=np.float32)
        center[0] = x + w * 0.5
        center[1] = y + h * 0.5
        if w > self.aspect_ratio * h:
            h = w * 1.0 / self.aspect_ratio
        elif w < self.aspect_ratio * h:
            w = h * self.aspect_ratio
        scale = np.array([w * 1.0 / self.pixel_std, h * 1.0 / self.pixel_std], dtype=np.float32)
        if center[0] != -1:
            scale = scale * self.bbox_padding
        return center, scale

    def _image_center_scale(self, width: float, height: float
                            ) -> tuple[np.ndarray, np.ndarray]:
        """Center and scale of a whole `width` x `height` image at the input's aspect ratio,
        unpadded (the crop of a model that sees the entire image)."""
        w, h = float(width), float(height)
        center = np.array([(w - 1) * 0.5, (h - 1) * 0.5], dtype=np.float32)
        if w > self.aspect_ratio * h:
            h = w / self.aspect_ratio
        else:
            w = h * self.aspect_ratio
        return center, np.array([w / self.pixel_std, h / self.pixel_std], dtype=np.float32)

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
        if w > self.aspect_ratio * h:
            h = w * 1.0 / self.aspect_ratio
        elif w < self.aspect_ratio * h:
            w = h * self.aspect_ratio
        scale = np.array([w * 1.0 / self.pixel_std, h * 1.0 / self.pixel_std], dtype=np.float32)
        return center, scale * 1.5

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
            joints, joints_vis, self.image_size, self.heatmap_size, self.sigma
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
        if self.is_train:
            crop = self._augment_image(crop)
        model_input = self._to_input(crop)

        # Visible joints into input pixels. A stack of (2 x 3) @ (3 x 1) products runs the same
        # kernel as the original's per-joint t @ (x, y, 1), so the values agree bit for bit
        # (one N x 3 @ 3 x 2 product rounds differently in the last bit).
        homogeneous = np.ones((len(joints), 3, 1))
        homogeneous[:, :2, 0] = joints[:, :2]
        moved = np.matmul(np.broadcast_to(trans, (len(joints), 2, 3)), homogeneous)[:, :, 0]
        joints = joints.copy()
        visible = joints_vis[:, 0] > 0.0
        joints[visible, :2] = moved[visible]

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


def _reference_getitem(dataset: JointsDataset, idx: int
                       ) -> tuple[Any, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Reference: the original __getitem__ step by step (deep copy, full-image colour
    conversion, mirrored view, transform call, per-joint loops). Tests and benchmark only."""
    db_rec = copy.deepcopy(dataset.db[idx])
    image_file = db_rec["image"]
    filename = db_rec.get("filename", "")
    imgnum = db_rec.get("imgnum", "")
    flags = cv2.IMREAD_GRAYSCALE if dataset.read_grayscale else IMREAD_FLAGS
    data_numpy = read_image(image_file, flags | cv2.IMREAD_IGNORE_ORIENTATION,
                            dataset.data_format)
    if data_numpy.ndim == 2:
        data_numpy = cv2.cvtColor(data_numpy, cv2.COLOR_GRAY2BGR)
    if dataset.color_rgb:
        data_numpy = cv2.cvtColor(data_numpy, cv2.COLOR_BGR2RGB)

    joints = db_rec["joints_3d"]
    joints_vis = db_rec["joints_3d_vis"]
    c = db_rec["center"]
    s = db_rec["scale"]
    score = db_rec.get("score", 1)
    r = 0

    if dataset.is_train:
        if (np.sum(joints_vis[:, 0]) > dataset.num_joints_half_body
                and np.random.rand() < dataset.prob_half_body):
            c_half_body, s_half_body = dataset.half_body_transform(joints, joints_vis)
            if c_half_body is not None and s_half_body is not None:
                c, s = c_half_body, s_half_body
        sf = dataset.scale_factor
        rf = dataset.rotation_factor
        s = s * np.asarray(np.clip(np.random.randn() * sf + 1, 1 - sf, 1 + sf), dtype=s.dtype)
        r = np.clip(np.random.randn() * rf, -rf * 2, rf * 2) if random.random() <= 0.6 else 0
        if dataset.flip and random.random() <= 0.5:
            data_numpy = data_numpy[:, ::-1, :]
            joints, joints_vis = fliplr_joints(
                joints, joints_vis, data_numpy.shape[1], dataset.flip_pairs)
            c[0] = data_numpy.shape[1] - float(c[0]) - 1  # numpy 1 computed this in float64

    trans = get_affine_transform(c, s, r, dataset.image_size)
    model_input = cv2.warpAffine(
        data_numpy, trans, (int(dataset.image_size[0]), int(dataset.image_size[1])),
        flags=cv2.INTER_LINEAR)
    if dataset.transform:
        model_input = dataset.transform(model_input)
    for i in range(len(joints)):
        if joints_vis[i, 0] > 0.0:
            joints[i, 0:2] = affine_transform(joints[i, 0:2], trans)[:2]

    target, target_weight = _generate_gaussian_targets_loop(
        joints, joints_vis, dataset.image_size, dataset.heatmap_size, dataset.sigma)
    if dataset.use_different_joints_weight:
        target_weight = np.multiply(target_weight, dataset.joints_weight)
    meta = {
        "image": image_file, "filename": filename, "imgnum": imgnum, "joints": joints,
        "joints_vis": joints_vis, "center": c, "scale": s, "rotation": r, "score": score,
    }
    return model_input, torch.from_numpy(target), torch.from_numpy(target_weight), meta
