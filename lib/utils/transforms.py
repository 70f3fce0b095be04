"""Crop geometry shared by data loading and decoding.

A crop is described as in the original: a `center` (x, y) in pixels and a `scale` (sx, sy) in
units of 200 pixels (`PIXEL_STD`), plus an in-plane rotation in degrees. The affine matrices
are computed in float32 through OpenCV exactly as the original does, so predictions mapped back
to the image agree with it to the last bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import cv2
import numpy as np

PIXEL_STD = 200.0  # the unit of `scale`; a property of the published data formats
# ImageNet statistics: the pretrained backbones expect inputs normalised with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ArrayOrTensor = TypeVar("ArrayOrTensor")


def box_scale(w: float, h: float, aspect_ratio: float,
              pixel_std: float = PIXEL_STD) -> np.ndarray:
    """Scale (float32, units of ``pixel_std``) of a w x h box widened or heightened to the
    input's ``aspect_ratio`` (width / height), so that the crop never squeezes the object."""
    # Python (or float64) arithmetic, then float32: under numpy 1 the original's float32
    # scalars were promoted to float64 here, and these are its numbers.
    if w > aspect_ratio * h:
        h = w * 1.0 / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    return np.array([w * 1.0 / pixel_std, h * 1.0 / pixel_std], dtype=np.float32)


def box_to_center_scale(x: float, y: float, w: float, h: float, aspect_ratio: float,
                        padding: float = 1.0, pixel_std: float = PIXEL_STD
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The crop (center, scale), both float32, of the box (x, y, w, h): its middle, and its
    size fitted to ``aspect_ratio`` (``box_scale``) and enlarged by ``padding``.

    As in the original, a center x of -1 (its mark of a missing box) is left unpadded. The
    whole image is the box (-0.5, -0.5, width, height) of its pixels' outer corners.
    """
    center = np.zeros(2, dtype=np.float32)
    center[0] = x + w * 0.5
    center[1] = y + h * 0.5
    scale = box_scale(w, h, aspect_ratio, pixel_std)
    if center[0] != -1:
        scale = scale * float(padding)  # a Python float keeps float32 (numpy 2 promotion)
    return center, scale


def flip_back(output_flipped: ArrayOrTensor,
              matched_parts: Sequence[Sequence[int]]) -> ArrayOrTensor:
    """Undo a horizontal flip of heatmaps N x J x H x W: mirror the columns and swap the pairs.

    Works on numpy arrays and torch tensors alike and returns the same kind.
    """
    if output_flipped.ndim != 4:
        raise ValueError("flip_back expects heatmaps of shape N x J x H x W, "
                         f"got shape {tuple(output_flipped.shape)}")
    order = _flip_permutation(output_flipped.shape[1], matched_parts)
    if isinstance(output_flipped, np.ndarray):
        return output_flipped[:, order, :, ::-1].copy()
    return output_flipped[:, order].flip(-1)


def _flip_permutation(num_joints: int, matched_parts: Sequence[Sequence[int]]) -> np.ndarray:
    order = np.arange(num_joints)
    for a, b in matched_parts:
        order[a], order[b] = b, a
    return order


def fliplr_joints(joints: np.ndarray, joints_vis: np.ndarray, width: int,
                  matched_parts: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Mirror joints J x 3 of an image `width` pixels wide and swap left/right pairs."""
    joints = joints.copy()
    joints[:, 0] = width - joints[:, 0] - 1
    order = _flip_permutation(len(joints), matched_parts)
    joints_vis = joints_vis[order]
    return joints[order] * joints_vis, joints_vis


def get_dir(src_point: Sequence[float], rot_rad: float) -> np.ndarray:
    """Rotate a 2D vector by `rot_rad` radians."""
    sn, cs = np.sin(rot_rad), np.cos(rot_rad)
    return np.array([src_point[0] * cs - src_point[1] * sn,
                     src_point[0] * sn + src_point[1] * cs])


def get_3rd_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The point that makes (a, b, c) a right angle at b, turning b - a by 90 degrees."""
    direct = a - b
    return b + np.array([-direct[1], direct[0]], dtype=np.float32)


def get_affine_transform(center: Sequence[float], scale: float | Sequence[float], rot: float,
                         output_size: Sequence[int], shift: Sequence[float] = (0.0, 0.0),
                         inv: int = 0) -> np.ndarray:
    """The 2 x 3 matrix mapping the crop (center, scale, rot) onto an `output_size` (w, h) image.

    With `inv` the matrix maps the output image back to the source image.
    """
    # The arithmetic runs in the caller's dtypes (float64 for MPII records, float32 for COCO)
    # and only the three points are float32, exactly as in the original.
    center = np.asarray(center)
    scale = np.asarray(scale)
    if scale.ndim == 0:
        scale = np.array([scale, scale])
    shift = np.asarray(shift, dtype=np.float32)

    scale_px = scale * PIXEL_STD
    src_w = scale_px[0]
    dst_w, dst_h = output_size[0], output_size[1]

    rot_rad = np.pi * rot / 180
    src_dir = get_dir([0, src_w * -0.5], rot_rad)
    dst_dir = np.array([0, dst_w * -0.5], np.float32)

    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0, :] = center + scale_px * shift
    src[1, :] = center + src_dir + scale_px * shift
    dst[0, :] = [dst_w * 0.5, dst_h * 0.5]
    dst[1, :] = np.array([dst_w * 0.5, dst_h * 0.5]) + dst_dir
    src[2:, :] = get_3rd_point(src[0, :], src[1, :])
    dst[2:, :] = get_3rd_point(dst[0, :], dst[1, :])

    if inv:
        return cv2.getAffineTransform(np.float32(dst), np.float32(src))
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def affine_transform(pt: Sequence[float], t: np.ndarray) -> np.ndarray:
    """Apply a 2 x 3 affine matrix to one point (x, y)."""
    return t @ np.array([pt[0], pt[1], 1.0])


def affine_transform_points(pts: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Apply a 2 x 3 affine matrix to points ... x 2 at once, bit-identical to calling
    affine_transform on each point (one 2 x 3 by 3 product per point)."""
    pts = np.asarray(pts, dtype=np.float64)
    homogeneous = np.concatenate([pts, np.ones(pts.shape[:-1] + (1,))], axis=-1)
    stacked = np.broadcast_to(t, homogeneous.shape[:-1] + t.shape)
    return np.matmul(stacked, homogeneous[..., None])[..., 0]


def transform_preds(coords: np.ndarray, center: Sequence[float], scale: Sequence[float],
                    output_size: Sequence[int]) -> np.ndarray:
    """Map heatmap coordinates J x (2+) back to image pixels; extra columns are kept."""
    target = np.array(coords, dtype=np.float64, copy=True)
    trans = get_affine_transform(center, scale, 0, output_size, inv=1)
    target[:, 0:2] = affine_transform_points(coords[:, 0:2], trans)
    return target


def crop(img: np.ndarray, center: Sequence[float], scale: Sequence[float],
         output_size: Sequence[int], rot: float = 0) -> np.ndarray:
    """Cut the crop (center, scale, rot) out of `img`, resampled to `output_size` (w, h)."""
    trans = get_affine_transform(center, scale, rot, output_size)
    return cv2.warpAffine(img, trans, (int(output_size[0]), int(output_size[1])),
                          flags=cv2.INTER_LINEAR)


def input_transform():
    """ToTensor then ImageNet Normalize: what every model input goes through (the data sets
    recognise this pair and apply it as one lookup table)."""
    import torchvision.transforms as T

    return T.Compose([T.ToTensor(), T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)])
