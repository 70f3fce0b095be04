"""Drawing predictions over images: keypoint skeletons, wireframes, text boxes.

Used by the plotting scripts in visualization/. Images are OpenCV BGR uint8 arrays, drawn on in
place; coordinates are 0-based pixels with pixel centres at integers. Lines are anti-aliased and
placed with sub-pixel precision (OpenCV fixed point), so a drawn point lands where it should.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from lib.utils.io import write_bytes_atomic

__all__ = [
    "COCO_SKELETON",
    "MPII_SKELETON",
    "TRUTH_COLOR",
    "PREDICTION_COLOR",
    "distinct_colors",
    "stroke_width",
    "to_bgr",
    "draw_skeleton",
    "draw_wireframe",
    "draw_text_box",
    "save_image",
]

_SHIFT = 4  # fractional bits of the fixed-point coordinates given to OpenCV
_SCALE = 1 << _SHIFT

# COCO's 17 person keypoints (nose, eyes, ears, shoulders, elbows, wrists, hips, knees,
# ankles; left before right): the 19 limbs of the annotation files' skeleton, 0-based.
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)

# MPII's 16 joints: 0 r ankle, 1 r knee, 2 r hip, 3 l hip, 4 l knee, 5 l ankle, 6 pelvis,
# 7 thorax, 8 upper neck, 9 head top, 10 r wrist, 11 r elbow, 12 r shoulder, 13 l shoulder,
# 14 l elbow, 15 l wrist. Limbs, 0-based: legs, trunk and head, arms.
MPII_SKELETON: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5),
    (6, 7), (7, 8), (8, 9),
    (10, 11), (11, 12), (12, 7), (7, 13), (13, 14), (14, 15),
)

TRUTH_COLOR = (0, 200, 0)  # BGR green
PREDICTION_COLOR = (0, 0, 255)  # BGR red


def distinct_colors(count: int) -> list[tuple[int, int, int]]:
    """``count`` saturated BGR colours of evenly spaced hue, e.g. one per limb."""
    if count <= 0:
        return []
    hues = (np.arange(count) * 180 // count).astype(np.uint8)  # OpenCV hue runs 0..179
    hsv = np.stack([hues, np.full(count, 255, np.uint8), np.full(count, 255, np.uint8)], axis=1)
    bgr = cv2.cvtColor(hsv[None], cv2.COLOR_HSV2BGR)[0]
    return [tuple(int(v) for v in color) for color in bgr]


def stroke_width(extent: float, divisor: float = 60.0, minimum: int = 2) -> int:
    """Line thickness in pixels for a figure ``extent`` pixels across (thicker for big people)."""
    if not np.isfinite(extent):
        return minimum
    return max(minimum, int(round(extent / divisor)))


def to_bgr(image: np.ndarray) -> np.ndarray:
    """A 3-channel BGR copy of a grayscale (H x W or H x W x 1) or BGR image."""
    image = np.asarray(image)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    return image.copy()


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points, dtype=np.float64) * _SCALE).astype(np.int32)


def _point(xy: np.ndarray) -> tuple[int, int]:
    fixed = _fixed(xy)
    return int(fixed[0]), int(fixed[1])


def draw_skeleton(
    image: np.ndarray,
    keypoints: np.ndarray,
    skeleton: Sequence[tuple[int, int]],
    limb_colors: Sequence[tuple[int, int, int]],
    scores: np.ndarray | None = None,
    threshold: float = 0.0,
    thickness: int | None = None,
) -> np.ndarray:
    """Limbs (one colour each) and joints of one person; returns ``image``, drawn on in place.

    ``keypoints`` K x 2 pixels; a joint is drawn when its score (``scores`` K, all 1 when None)
    reaches ``threshold`` and it is finite, a limb when both its joints are. Joints are dots in
    the colour of their first limb with a black ring. ``thickness`` None scales with the size of
    the drawn person.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim != 2 or keypoints.shape[1] < 2:
        raise ValueError(f"keypoints must be K x 2, got shape {keypoints.shape}")
    keypoints = keypoints[:, :2]
    count = len(keypoints)
    scores = np.ones(count) if scores is None else np.asarray(scores, dtype=np.float64)
    if scores.shape != (count,):
        raise ValueError(f"scores must hold one value per keypoint ({count}), got {scores.shape}")
    skeleton = np.asarray(skeleton, dtype=np.int64).reshape(-1, 2)
    if skeleton.size and (skeleton.min() < 0 or skeleton.max() >= count):
        raise ValueError(f"skeleton joins joints outside 0..{count - 1}: {skeleton.tolist()}")
    if len(limb_colors) < len(skeleton):
        raise ValueError(f"{len(skeleton)} limbs but only {len(limb_colors)} colours")

    shown = np.all(np.isfinite(keypoints), axis=1) & (scores >= threshold)
    if not shown.any():
        return image
    if thickness is None:
        width, height = np.ptp(keypoints[shown], axis=0)
        thickness = stroke_width(float(np.sqrt(width * height)))
    for (a, b), color in zip(skeleton, limb_colors, strict=False):
        if shown[a] and shown[b]:
            cv2.line(image, _point(keypoints[a]), _point(keypoints[b]), color, thickness,
                     cv2.LINE_AA, _SHIFT)
    joint_colors = {}
    for (a, b), color in zip(skeleton, limb_colors, strict=False):
        joint_colors.setdefault(int(a), color)
        joint_colors.setdefault(int(b), color)
    radius = (thickness + 1) * _SCALE
    for joint in np.flatnonzero(shown):
        center = _point(keypoints[joint])
        cv2.circle(image, center, radius, joint_colors.get(int(joint), (255, 255, 255)),
                   cv2.FILLED, cv2.LINE_AA, _SHIFT)
        cv2.circle(image, center, radius, (0, 0, 0), 1, cv2.LINE_AA, _SHIFT)
    return image


def draw_wireframe(
    image: np.ndarray,
    points: np.ndarray,
    edges: Sequence[tuple[int, int]],
    color: tuple[int, int, int],
    thickness: int = 2,
    dots: Sequence[int] = (),
) -> np.ndarray:
    """Straight edges between 2-D ``points`` (M x 2), all in one colour, and a dot on each of
    the points indexed by ``dots``; edges with a non-finite end (behind the camera) are left out.
    """
    points = np.asarray(points, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if edges.size and (edges.min() < 0 or edges.max() >= len(points)):
        raise ValueError(f"edges join points outside 0..{len(points) - 1}")
    finite = np.all(np.isfinite(points), axis=1)
    segments = points[edges[finite[edges].all(axis=1)]]
    if len(segments):
        cv2.polylines(image, list(_fixed(segments)), False, color, thickness, cv2.LINE_AA, _SHIFT)
    for index in dots:
        if finite[index]:
            cv2.circle(image, _point(points[index]), (thickness + 1) * _SCALE, color, cv2.FILLED,
                       cv2.LINE_AA, _SHIFT)
    return image


def draw_text_box(
    image: np.ndarray,
    lines: Sequence[str],
    colors: Sequence[tuple[int, int, int]] | None = None,
    origin: tuple[int, int] = (0, 0),
    font_scale: float | None = None,
    box_color: tuple[int, int, int] = (0, 0, 0),
    opacity: float = 0.6,
) -> np.ndarray:
    """Lines of text on a translucent box whose top-left corner is ``origin``.

    ``colors`` gives one BGR colour per line (white when None); ``font_scale`` None scales the
    text with the image height so that it stays legible on big and small images alike.
    """
    if not lines:
        return image
    colors = list(colors) if colors is not None else [(255, 255, 255)] * len(lines)
    if len(colors) != len(lines):
        raise ValueError(f"{len(lines)} lines of text but {len(colors)} colours")
    height, width = image.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = font_scale if font_scale is not None else max(0.35, height / 900.0)
    weight = max(1, int(round(scale * 1.5)))
    sizes = [cv2.getTextSize(line, font, scale, weight) for line in lines]
    text_height = max(h for (_, h), _ in sizes)
    descent = max(base for _, base in sizes)
    pad = max(3, int(6 * scale))
    line_height = text_height + descent + pad // 2
    x0, y0 = origin
    x1 = min(width, x0 + max(w for (w, _), _ in sizes) + 2 * pad)
    y1 = min(height, y0 + 2 * pad + line_height * len(lines))
    if x1 > x0 and y1 > y0:
        region = image[y0:y1, x0:x1]
        box = np.empty_like(region)
        box[:] = box_color
        cv2.addWeighted(box, opacity, region, 1.0 - opacity, 0.0, dst=region)
    for k, (line, color) in enumerate(zip(lines, colors, strict=True)):
        baseline_y = y0 + pad + k * line_height + text_height
        cv2.putText(image, line, (x0 + pad, baseline_y), font, scale, color, weight, cv2.LINE_AA)
    return image


def save_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Encode ``image`` by the file's extension and write it atomically."""
    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise OSError(f"could not encode the image for {path}")
    return write_bytes_atomic(path, encoded.tobytes())
