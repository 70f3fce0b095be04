"""Spacecraft wireframes over images (the model's edges projected at a pose), and sheets of
images of the data set's domains side by side.

The drawing primitives are those of ``lib.utils.drawing``; this module adds what needs the
spacecraft geometry (the landmark model and the projection) or its data sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from lib.spacecraft.geometry import project_points
from lib.utils.drawing import draw_text_box, draw_wireframe, to_bgr

__all__ = ["Wireframe", "SPACECRAFT_WIREFRAME", "draw_projected_wireframe", "domain_sheet"]


@dataclass(frozen=True)
class Wireframe:
    """Edges joining a model's landmarks (indices below ``num_landmarks``) and fixed anchor
    points (index ``num_landmarks + k`` is ``anchors[k]``, body frame, metres).

    Anchors let an edge end at a point that is no landmark, such as an antenna's foot.
    """

    num_landmarks: int
    edges: tuple[tuple[int, int], ...]
    anchors: tuple[tuple[float, float, float], ...] = ()

    def points(self, landmarks: np.ndarray) -> np.ndarray:
        """The landmarks followed by the anchors, (num_landmarks + A) x 3."""
        landmarks = np.asarray(landmarks, dtype=np.float64)
        if landmarks.shape != (self.num_landmarks, 3):
            raise ValueError(
                f"this wireframe joins {self.num_landmarks} landmarks (N x 3), got an array of "
                f"shape {landmarks.shape}")
        anchors = np.asarray(self.anchors, dtype=np.float64).reshape(-1, 3)
        return np.vstack([landmarks, anchors])


# Tango as lib/spacecraft/renderer.py (tango_model) builds it, 11 landmarks in the order of SLAB's
# tangoPoints.mat: 0-3 the upper corners of the solar panel, 4-7 the bottom corners of the body
# (both rings -x-y, -x+y, +x+y, +x-y), 8-10 the antenna tips. Anchors 11-13 are the antennas'
# feet on the body walls, where each rod starts; 14-17 the body's top corners under the panel,
# above landmarks 4-7, so the body's vertical edges show.
SPACECRAFT_WIREFRAME = Wireframe(
    num_landmarks=11,
    edges=(
        (0, 1), (1, 2), (2, 3), (3, 0),  # solar panel rectangle
        (4, 5), (5, 6), (6, 7), (7, 4),  # body bottom rectangle
        (8, 11), (9, 12), (10, 13),  # antenna tip -> its foot on the body
        (4, 14), (5, 15), (6, 16), (7, 17),  # body's vertical edges
    ),
    anchors=((-0.22, 0.304, 0.235), (0.22, 0.304, 0.24), (0.20, -0.264, 0.235),
             (-0.37, -0.264, 0.3015), (-0.37, 0.304, 0.3015), (0.37, 0.304, 0.3015),
             (0.37, -0.264, 0.3015)),
)


def draw_projected_wireframe(
    image: np.ndarray,
    wireframe: Wireframe,
    landmarks: np.ndarray,
    q: np.ndarray,
    r: np.ndarray,
    camera_matrix: np.ndarray,
    dist_coeffs: np.ndarray | None,
    color: tuple[int, int, int],
    thickness: int = 2,
) -> np.ndarray:
    """The wireframe of a model at pose (q, r) (SPEED convention, lib.spacecraft.geometry), with
    a dot on each landmark; returns the 2-D landmark positions (N x 2, NaN behind the camera)."""
    pixels = project_points(wireframe.points(landmarks), q, r, camera_matrix, dist_coeffs)
    draw_wireframe(image, pixels, wireframe.edges, color, thickness,
                   dots=range(wireframe.num_landmarks))
    return pixels[: wireframe.num_landmarks]


def domain_sheet(
    rows: Sequence[tuple[str, Sequence[np.ndarray]]],
    cell_width: int = 320,
    gap: int = 4,
) -> np.ndarray:
    """One BGR picture of labelled rows of images (e.g. synthetic, lightbox, sunlamp), each
    image scaled to ``cell_width`` pixels wide and the row's label in its first image's corner,
    so that the domains of a data set can be compared at a glance."""
    if not rows or not any(images for _, images in rows):
        raise ValueError("a domain sheet needs at least one image")
    first = next(image for _, images in rows for image in images)
    cell_height = max(1, int(round(cell_width * first.shape[0] / first.shape[1])))
    columns = max(len(images) for _, images in rows)
    sheet = np.full((len(rows) * (cell_height + gap) + gap, columns * (cell_width + gap) + gap, 3),
                    255, np.uint8)
    for row, (label, images) in enumerate(rows):
        top = gap + row * (cell_height + gap)
        for column, image in enumerate(images):
            left = gap + column * (cell_width + gap)
            cell = cv2.resize(to_bgr(image), (cell_width, cell_height),
                              interpolation=cv2.INTER_AREA)
            if column == 0:
                draw_text_box(cell, [label], font_scale=max(0.4, cell_height / 300.0))
            sheet[top:top + cell_height, left:left + cell_width] = cell
    return sheet
