"""Spacecraft wireframes over images: the model's edges projected at a pose.

The drawing primitives are those of ``lib.utils.drawing``; this module adds what needs the
spacecraft geometry (the landmark model and the projection).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lib.spacecraft.geometry import project_points
from lib.utils.drawing import draw_wireframe

__all__ = ["Wireframe", "SPACECRAFT_WIREFRAME", "draw_projected_wireframe"]


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
