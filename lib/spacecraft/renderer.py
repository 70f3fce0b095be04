"""A SPEED+-layout data set rendered from a model of Tango (the embedded data set).

No SPEED download is possible here, so this module draws one: Tango's box body, its solar panel
on top and three antenna rods, with SLAB's 11 landmarks, shaded (lambertian + a small specular
term) under a random sun, over black space or an Earth-like background, blurred and noisy, saved
as 8-bit grayscale JPEG, through SPEED's pinhole camera or SPEED+'s distorting one.

Occlusion is exact for this model without a z-buffer: every part is convex, so back-face culling
settles each part on its own, and every pair of parts has a separating plane (found once when the
model is built) which says, for the camera's side of the plane, which part may hide the other;
the parts are painted far to near in that order. Parts are painted through a pinhole camera;
a distorting camera then sees that picture through its lens (a remap whose table comes from
OpenCV's inverse of the same distortion model), so ``lib.spacecraft.geometry.project_points``,
the loader's projection, puts every landmark where the image shows it.

SPEED+'s lab test domains (``lightbox``, ``sunlamp``) take the same poses through the same camera
and lens; here they get the geometry (what each pixel sees, shadows, where the lamp is), and
``lib.spacecraft.domains`` the lighting, materials, optics and sensor.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lib.spacecraft.domains import (
    CELL,
    DOMAINS,
    FOIL,
    FRAME,
    GRID,
    PAINT,
    ROD,
    LampView,
    Scene,
    SurfaceBuffers,
    develop,
    draw_scene,
    shade,
)
from lib.spacecraft.files import (
    Camera,
    PoseLabel,
    speed_camera,
    speedplus_camera,
    write_camera,
    write_labels,
    write_landmarks,
)
from lib.spacecraft.geometry import body_to_camera, project_points, quat_to_dcm, random_quaternions
from lib.utils.io import write_json_atomic

__all__ = [
    "SatelliteModel",
    "tango_model",
    "sample_pose",
    "render_image",
    "render_domain_image",
    "face_id_map",
    "write_speed_synthetic",
    "render_difference",
    "MANIFEST_FILE",
    "CAMERAS",
    "DOMAINS",
]

# Hexahedron faces for vertices given as end A (0-3, cyclic) then end B (4-7, same order).
_HEX_FACES = np.array(
    [[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 5, 4], [1, 2, 6, 5], [2, 3, 7, 6], [3, 0, 4, 7]]
)
_SUBPIXEL_BITS = 4  # fixed-point precision of the polygon vertices given to OpenCV


@dataclass(frozen=True)
class SatelliteModel:
    """Convex parts made of quads, their optical properties and the 11 landmarks (body frame, m).

    ``faces`` F x 4 index ``vertices``; ``normals`` are outward; ``part`` says which convex part
    a face belongs to; ``separators[i, j] = (n, b)`` has part i in n.x <= b and part j beyond.
    Decals (flat markings drawn right after their face) and the panel's cell grid lines are
    cosmetic and never occlude anything else.
    """

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    part: np.ndarray
    albedo: np.ndarray
    shininess: np.ndarray
    separators: dict
    decals: list  # (face index, K x 3 polygon, albedo)
    grid_lines: np.ndarray  # L x 2 x 3 segments on the grid face
    grid_face: int
    grid_albedo: float
    grid_spacing: float
    landmarks: np.ndarray

    @property
    def num_parts(self) -> int:
        return int(self.part.max()) + 1


def _hexahedron(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The six quads of a convex hexahedron and their outward unit normals."""
    quads = vertices[_HEX_FACES]
    normals = np.cross(quads[:, 2] - quads[:, 0], quads[:, 3] - quads[:, 1])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    outward = np.sum(normals * (quads.mean(axis=1) - vertices.mean(axis=0)), axis=1)
    return _HEX_FACES.copy(), np.where(outward[:, None] < 0, -normals, normals)


def _box(center: tuple[float, float, float], half: tuple[float, float, float]) -> np.ndarray:
    """8 vertices of an axis-aligned box: bottom (z-) ring then top (z+) ring, same order."""
    ring = np.array([[-1, -1], [-1, 1], [1, 1], [1, -1]], dtype=np.float64)
    bottom = np.column_stack([ring * half[:2], -np.full(4, half[2])])
    top = np.column_stack([ring * half[:2], np.full(4, half[2])])
    return np.round(np.vstack([bottom, top]) + np.asarray(center), 12)


def _rod(base: np.ndarray, tip: np.ndarray, half_width: float, wall_axis: int) -> np.ndarray:
    """Square-section rod ending at ``tip`` whose base end is cut by the body wall plane.

    The base corners lie exactly on the plane ``x[wall_axis] = base[wall_axis]`` so the rod
    touches the body without entering it (which keeps a separating plane between them).
    """
    direction = (tip - base) / np.linalg.norm(tip - base)
    side = np.cross(direction, [0.0, 0.0, 1.0])
    side /= np.linalg.norm(side)
    up = np.cross(side, direction)
    offsets = half_width * np.array([-side - up, -side + up, side + up, side - up])
    tip_ring = tip + offsets
    travel = (tip_ring[:, wall_axis] - base[wall_axis]) / direction[wall_axis]
    base_ring = tip_ring - travel[:, None] * direction
    return np.vstack([base_ring, tip_ring])


def _separator(a: np.ndarray, b: np.ndarray, axes: np.ndarray) -> tuple[np.ndarray, float]:
    """A plane n.x = c with all of ``a`` on the low side and all of ``b`` on the high side."""
    for axis in axes:
        for n in (axis, -axis):
            high_a, low_b = np.max(a @ n), np.min(b @ n)
            if high_a <= low_b + 1e-9:
                return n, float(0.5 * (high_a + low_b))
    raise ValueError("satellite model parts overlap: no separating plane found")


def _polygon(center: np.ndarray, u: np.ndarray, v: np.ndarray, radius: float, sides: int):
    angles = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    return center + radius * (np.cos(angles)[:, None] * u + np.sin(angles)[:, None] * v)


def tango_model() -> SatelliteModel:
    """Tango (PRISMA's target) with the landmarks of SLAB's ``tangoPoints.mat``.

    A 0.74 x 0.568 x 0.3015 m body (x in +-0.37, y from -0.264 to 0.304, z from 0: the origin
    lies in its bottom face), the 0.74 x 0.77 x 0.02 m solar panel on top (upper face at
    z = 0.3215, overhanging the body along y) and three 1.6 cm square antenna rods standing out
    of the +y and -y walls below the panel.

    Landmarks, in the file's order: the panel's upper corners (-x-y, -x+y, +x+y, +x-y), the
    body's bottom corners in the same ring order, then the three antenna tips. A model trained
    on the embedded set therefore uses the real landmark file as it is.
    """
    panel_top, panel_thickness = 0.3215, 0.02
    body_top = panel_top - panel_thickness
    y_low, y_high = -0.264, 0.304
    antennas = [  # (foot on a body wall, tip, wall axis)
        (np.array([-0.22, y_high, 0.235]), np.array([-0.5427, 0.4877, 0.2535]), 1),
        (np.array([0.22, y_high, 0.24]), np.array([0.5427, 0.4877, 0.2591]), 1),
        (np.array([0.20, y_low, 0.235]), np.array([0.305, -0.579, 0.2515]), 1),
    ]
    parts = [_box((0.0, 0.5 * (y_low + y_high), 0.5 * body_top),
                  (0.37, 0.5 * (y_high - y_low), 0.5 * body_top)),
             _box((0.0, 0.0, panel_top - 0.5 * panel_thickness),
                  (0.37, 0.385, 0.5 * panel_thickness))]
    parts += [_rod(foot, tip, 0.008, axis) for foot, tip, axis in antennas]
    part_albedo = [0.72, 0.55, 0.85, 0.85, 0.85]
    part_shininess = [0.25, 0.15, 0.4, 0.4, 0.4]

    vertices, faces, normals, part, albedo, shininess = [], [], [], [], [], []
    for index, corners in enumerate(parts):
        quads, quad_normals = _hexahedron(corners)
        faces.append(quads + 8 * index)
        normals.append(quad_normals)
        vertices.append(corners)
        part += [index] * 6
        albedo += [part_albedo[index]] * 6
        shininess += [part_shininess[index]] * 6
    vertices, faces, normals = np.vstack(vertices), np.vstack(faces), np.vstack(normals)
    albedo, shininess = np.array(albedo), np.array(shininess)

    def face_towards(part_index: int, direction: tuple[float, float, float]) -> int:
        candidates = np.flatnonzero(np.asarray(part) == part_index)
        return int(candidates[np.argmax(normals[candidates] @ np.asarray(direction))])

    cells = face_towards(1, (0, 0, 1))
    albedo[cells] = 0.3  # solar cells: dark, glossy
    shininess[cells] = 0.5

    ex, ey, ez = np.eye(3)
    decals = [  # flat polygons lying in their face's plane, clear of the antenna feet
        (face_towards(0, (1, 0, 0)),
         np.array([[0.37, -0.2, 0.05], [0.37, 0.2, 0.05], [0.37, 0.2, 0.25], [0.37, -0.2, 0.25]]),
         0.3),
        (face_towards(0, (-1, 0, 0)),
         np.array([[-0.37, y_low, 0.11], [-0.37, y_high, 0.11], [-0.37, y_high, 0.17],
                   [-0.37, y_low, 0.17]]), 0.95),
        (face_towards(0, (0, 1, 0)),
         np.array([[-0.12, y_high, 0.04], [0.12, y_high, 0.04], [0.12, y_high, 0.16],
                   [-0.12, y_high, 0.16]]), 0.2),
        (face_towards(0, (0, -1, 0)), _polygon(np.array([-0.12, y_low, 0.14]), ex, ez, 0.08, 12),
         0.4),
        (face_towards(0, (0, 0, -1)), _polygon(np.array([0.0, 0.02, 0.0]), ex, ey, 0.17, 16), 0.3),
        (face_towards(0, (0, 0, -1)), _polygon(np.array([0.0, 0.02, 0.0]), ex, ey, 0.11, 16), 0.6),
    ]
    # The panel's cells: 8 x 8 of 9.25 x 9.625 cm between the grid lines.
    xs = np.linspace(-0.37, 0.37, 9)[1:-1]
    ys = np.linspace(-0.385, 0.385, 9)[1:-1]
    grid = [[[x, -0.385, panel_top], [x, 0.385, panel_top]] for x in xs]
    grid += [[[-0.37, y, panel_top], [0.37, y, panel_top]] for y in ys]

    body_axes = np.vstack([np.eye(3), normals])
    separators = {}
    for i in range(len(parts)):
        for j in range(i + 1, len(parts)):
            separators[(i, j)] = _separator(parts[i], parts[j], body_axes)

    panel_corners = parts[1][4:]  # upper ring of the panel
    body_bottom = parts[0][:4]
    landmarks = np.vstack([panel_corners, body_bottom, [tip for _, tip, _ in antennas]])
    return SatelliteModel(
        vertices=vertices, faces=faces, normals=normals, part=np.asarray(part),
        albedo=albedo, shininess=shininess, separators=separators, decals=decals,
        grid_lines=np.asarray(grid), grid_face=cells, grid_albedo=0.5,
        grid_spacing=0.0925, landmarks=landmarks,
    )


# ---------------------------------------------------------------------------------------- lens
@dataclass(frozen=True)
class _LensWarp:
    """How a distorting camera's image is made from a pinhole one.

    ``canvas`` is a pinhole camera with the same focal lengths whose image holds the undistorted
    position of every output pixel; output pixel (u, v) takes the canvas at
    (``map_x[v, u]``, ``map_y[v, u]``).
    """

    canvas: Camera
    map_x: np.ndarray
    map_y: np.ndarray


_LENS_WARPS: dict[tuple, _LensWarp] = {}
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)


def _undistorted_rays(pixels: np.ndarray, camera: Camera) -> np.ndarray:
    """Camera-frame directions (x/z, y/z, 1), N x 3, of the points seen at ``pixels`` (N x 2)."""
    pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    if not camera.has_distortion:
        return np.column_stack([pixels, np.ones(len(pixels))]) @ np.linalg.inv(camera.matrix).T
    normalised = cv2.undistortPoints(pixels.reshape(-1, 1, 2), camera.matrix, camera.dist_coeffs,
                                     criteria=_UNDISTORT_CRITERIA).reshape(-1, 2)
    return np.column_stack([normalised, np.ones(len(normalised))])


def _lens_warp(camera: Camera) -> _LensWarp:
    """The canvas and remap tables of a distorting camera, computed once per camera."""
    key = (camera.width, camera.height, camera.matrix.tobytes(), camera.dist_coeffs.tobytes())
    if key not in _LENS_WARPS:
        ys, xs = np.mgrid[0:camera.height, 0:camera.width]
        rays = _undistorted_rays(np.column_stack([xs.ravel(), ys.ravel()]), camera)
        pinhole = (rays @ camera.matrix.T)[:, :2]
        if not np.all(np.isfinite(pinhole)):
            raise ValueError("this lens distortion cannot be inverted over the whole image")
        pad = 2.0  # canvas pixels beyond the outermost sample, for bilinear interpolation
        low = np.floor(pinhole.min(axis=0)) - pad
        size = np.ceil(pinhole.max(axis=0) - low + pad).astype(int) + 1
        if size[0] * size[1] > 16 * camera.width * camera.height:
            raise ValueError(f"this lens distortion spreads the image over {size[0]} x {size[1]}"
                             " pinhole pixels: too strong to render")
        matrix = camera.matrix.copy()
        matrix[:2, 2] -= low
        maps = (pinhole - low).astype(np.float32).reshape(camera.height, camera.width, 2)
        canvas = Camera(int(size[0]), int(size[1]), matrix, np.zeros(5))
        _LENS_WARPS[key] = _LensWarp(canvas, maps[..., 0].copy(), maps[..., 1].copy())
    return _LENS_WARPS[key]


def _through_lens(image: np.ndarray, camera: Camera, interpolation: int) -> np.ndarray:
    """The canvas image of :func:`_lens_warp` as the distorting camera sees it."""
    warp = _lens_warp(camera)
    return cv2.remap(image, warp.map_x, warp.map_y, interpolation,
                     borderMode=cv2.BORDER_REPLICATE)


# ------------------------------------------------------------------------------------- sampling
def _fits(pixels: np.ndarray, camera: Camera, margin: float) -> np.ndarray:
    """Per candidate (C x M x 2): every point inside the image with ``margin`` pixels to spare."""
    low = np.all(pixels >= margin, axis=(1, 2))
    high = np.all(pixels[..., 0] <= camera.width - 1 - margin, axis=1)
    high &= np.all(pixels[..., 1] <= camera.height - 1 - margin, axis=1)
    return low & high & np.all(np.isfinite(pixels), axis=(1, 2))


def sample_pose(
    model: SatelliteModel,
    camera: Camera,
    rng: np.random.Generator,
    distance_range: tuple[float, float],
    candidates: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Random attitude (uniform on SO(3)) and position at ||r|| in ``distance_range``.

    The model origin is aimed at a uniformly drawn pixel; of ``candidates`` such pixels the
    first whose whole projected model (through the lens distortion, if any) stays inside the
    image (margin 3 % of the shorter side) is kept. If none fits, the distance grows by 15 %
    (never past the range's maximum) and the draw repeats; at the maximum the centred position
    is the last resort.
    """
    q = random_quaternions(1, rng)[0]
    distance = float(rng.uniform(*distance_range))
    margin = 0.03 * min(camera.width, camera.height)
    canvas = _lens_warp(camera).canvas if camera.has_distortion else None
    while True:
        pixels = rng.uniform([0, 0], [camera.width - 1, camera.height - 1], size=(candidates, 2))
        rays = _undistorted_rays(pixels, camera)
        positions = distance * rays / np.linalg.norm(rays, axis=1, keepdims=True)
        attitudes = np.tile(q, (candidates, 1))
        projected = project_points(model.vertices, attitudes, positions, camera.matrix,
                                   camera.dist_coeffs)
        fits = _fits(projected, camera, margin)
        if canvas is not None:
            # A lens model can fold far-off points back into the image: the undistorted
            # points must also lie on the canvas, where the distortion is one-to-one.
            fits &= _fits(project_points(model.vertices, attitudes, positions, canvas.matrix),
                          canvas, 0.0)
        good = np.flatnonzero(fits)
        if len(good):
            return q, positions[good[0]]
        if distance >= distance_range[1]:
            return q, np.array([0.0, 0.0, distance])
        distance = min(distance * 1.15, distance_range[1])


# ------------------------------------------------------------------------------------ rendering
def _fractal_noise(height: int, width: int, rng: np.random.Generator, cells: int) -> np.ndarray:
    """Smooth value noise in [0, 1] (five octaves of bicubically enlarged random grids)."""
    small_h, small_w = max(8, height // 2), max(8, width // 2)
    total = np.zeros((small_h, small_w), np.float32)
    for octave in range(5):
        grid_w = cells * 2**octave
        grid_h = max(2, int(round(grid_w * small_h / small_w)))
        grid = rng.random((grid_h + 1, grid_w + 1), dtype=np.float32)
        total += 0.5**octave * cv2.resize(grid, (small_w, small_h), interpolation=cv2.INTER_CUBIC)
    total -= total.min()
    total /= max(float(total.max()), 1e-6)
    return cv2.resize(total, (width, height), interpolation=cv2.INTER_LINEAR)


def _earth_background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Grayscale Earth seen from orbit: ocean, land, clouds, a day-night ramp and a glowing limb."""
    diagonal = float(np.hypot(width, height))
    radius = diagonal * rng.uniform(1.5, 4.0)
    angle = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    depth = rng.uniform(0.1, 1.1)  # how far past the image centre the limb lies
    center = np.array([width / 2, height / 2]) + direction * (radius + diagonal * (0.5 - depth))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    distance = np.hypot(xs - np.float32(center[0]), ys - np.float32(center[1]))

    land = _fractal_noise(height, width, rng, 3)
    clouds = _fractal_noise(height, width, rng, 4)
    surface = 45.0 + 25.0 * land + 45.0 * np.clip((land - 0.58) / 0.08, 0, 1)
    cloud_cover = np.clip((clouds - 0.45) / 0.3, 0, 1) ** 1.5
    brightness = surface * (1 - cloud_cover) + 235.0 * cloud_cover
    sun = rng.uniform(0, 2 * np.pi)
    ramp = (xs * np.float32(np.cos(sun)) + ys * np.float32(np.sin(sun))) / np.float32(diagonal)
    brightness *= np.clip(0.75 + rng.uniform(0.2, 0.6) * ramp, 0.25, 1.0)
    inside = np.clip((radius - distance) / (0.004 * diagonal), 0, 1)
    glow = 110.0 * np.exp(-np.abs(distance - radius) / (0.008 * diagonal))
    return np.clip(brightness * inside + glow, 0, 255).astype(np.uint8)


def _face_intensity(
    normals: np.ndarray, centers: np.ndarray, albedo: np.ndarray, shininess: np.ndarray,
    sun: np.ndarray, ambient: float, gain: float,
) -> np.ndarray:
    """Lambert + Blinn-Phong gray level of flat faces (camera frame normals and centres)."""
    diffuse = np.maximum(normals @ sun, 0.0)
    view = -centers / np.linalg.norm(centers, axis=-1, keepdims=True)
    half = sun + view
    half /= np.linalg.norm(half, axis=-1, keepdims=True)
    specular = shininess * np.maximum(np.sum(normals * half, axis=-1), 0.0) ** 30 * (diffuse > 0)
    return np.clip(255.0 * gain * (albedo * (ambient + diffuse) + specular), 0, 255)


def _paint_order(model: SatelliteModel, camera_in_body: np.ndarray, depth: np.ndarray) -> list:
    """Parts far to near: a part is painted only after every part it may hide."""
    hides = np.zeros((model.num_parts, model.num_parts), dtype=bool)  # hides[a, b]: a over b
    for (i, j), (normal, offset) in model.separators.items():
        if camera_in_body @ normal > offset:
            hides[j, i] = True
        else:
            hides[i, j] = True
    remaining = list(np.argsort(-depth))
    order = []
    while remaining:
        # Paint a part that hides none of the parts still waiting; the farthest one if a cycle.
        free = [p for p in remaining if not any(hides[p, o] for o in remaining if o != p)]
        chosen = free[0] if free else remaining[0]
        order.append(int(chosen))
        remaining.remove(chosen)
    return order


def _faces_far_to_near(
    model: SatelliteModel, q: np.ndarray, r: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Visible (front-facing) faces in paint order, with camera-frame normals and centres."""
    points_cam = body_to_camera(model.vertices, q, r)
    normals_cam = model.normals @ quat_to_dcm(q)  # rows n^T dcm = (dcm^T n)^T
    centers_cam = points_cam[model.faces].mean(axis=1)
    visible = np.sum(normals_cam * centers_cam, axis=1) < 0
    part_depth = np.array(
        [points_cam[model.faces[model.part == p]][..., 2].mean() for p in range(model.num_parts)]
    )
    camera_in_body = -quat_to_dcm(q) @ np.asarray(r, dtype=np.float64)
    order = _paint_order(model, camera_in_body, part_depth)
    faces = np.concatenate([np.flatnonzero((model.part == p) & visible) for p in order])
    return faces, normals_cam, centers_cam


def face_id_map(model: SatelliteModel, q: np.ndarray, r: np.ndarray, camera: Camera) -> np.ndarray:
    """H x W int32 map of the face seen at each pixel (index + 1, 0 for space), no anti-aliasing.

    It is painted in the same order as :func:`render_image`, so a z-buffer can check occlusion;
    with a distorting camera it goes through the lens as the image does (nearest neighbour).
    """
    pinhole = _lens_warp(camera).canvas if camera.has_distortion else camera
    faces, _, _ = _faces_far_to_near(model, q, r)
    polygons = _fixed_point(project_points(model.vertices, q, r, pinhole.matrix))[model.faces]
    canvas = np.zeros((pinhole.height, pinhole.width), np.float32)  # ids are exact in float32
    for face in faces:
        cv2.fillConvexPoly(canvas, polygons[face], int(face) + 1, cv2.LINE_8, _SUBPIXEL_BITS)
    if camera.has_distortion:
        canvas = _through_lens(canvas, camera, cv2.INTER_NEAREST)
    return canvas.astype(np.int32)


def _fixed_point(pixels: np.ndarray) -> np.ndarray:
    return np.round(pixels * (1 << _SUBPIXEL_BITS)).astype(np.int32)


def render_image(
    model: SatelliteModel,
    q: np.ndarray,
    r: np.ndarray,
    camera: Camera,
    rng: np.random.Generator,
    with_earth: bool,
) -> np.ndarray:
    """One H x W uint8 image of the model at pose (q, r), lit by a random sun from the camera side.

    The sun direction, ambient level, exposure, blur and noise come from ``rng``. A distorting
    camera sees the pinhole image of a larger canvas through its lens (one remap, see
    :func:`_lens_warp`), so straight edges bend as they do in the real SPEED+ images and the
    distorting projection of a landmark falls on its place in the image.
    """
    sun = rng.standard_normal(3)
    sun /= np.linalg.norm(sun)
    sun[2] = -abs(sun[2])  # light from the camera's hemisphere, as in most SPEED images
    ambient = rng.uniform(0.12, 0.2)
    gain = rng.uniform(0.85, 1.15)
    blur_sigma = rng.uniform(0.4, 1.0)
    noise_sigma = rng.uniform(1.5, 5.0)
    pinhole = _lens_warp(camera).canvas if camera.has_distortion else camera
    if with_earth:
        canvas = _earth_background(pinhole.height, pinhole.width, rng)
    else:
        canvas = np.zeros((pinhole.height, pinhole.width), np.uint8)

    faces, normals_cam, centers_cam = _faces_far_to_near(model, q, r)
    shades = _face_intensity(
        normals_cam, centers_cam, model.albedo, model.shininess, sun, ambient, gain
    )
    polygons = _fixed_point(project_points(model.vertices, q, r, pinhole.matrix))[model.faces]
    for face in faces:
        cv2.fillConvexPoly(canvas, polygons[face], float(shades[face]), cv2.LINE_AA,
                           _SUBPIXEL_BITS)
        _paint_markings(canvas, model, face, q, r, pinhole, normals_cam[face], centers_cam[face],
                        sun, ambient, gain)
    if camera.has_distortion:
        canvas = _through_lens(canvas, camera, cv2.INTER_LINEAR)

    canvas = cv2.GaussianBlur(canvas, (0, 0), blur_sigma)
    noisy = canvas.astype(np.float32) + rng.standard_normal(canvas.shape, dtype=np.float32) * (
        np.float32(noise_sigma)
    )
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)


def _paint_markings(
    canvas: np.ndarray, model: SatelliteModel, face: int, q: np.ndarray, r: np.ndarray,
    camera: Camera, normal_cam: np.ndarray, center_cam: np.ndarray, sun: np.ndarray,
    ambient: float, gain: float,
) -> None:
    """Decals and solar-cell grid lines of one visible face, lit like the face itself
    (``camera`` is the pinhole camera of the canvas being painted)."""
    for decal_face, polygon, albedo in model.decals:
        if decal_face != face:
            continue
        shade = _face_intensity(normal_cam, center_cam, albedo, model.shininess[face], sun,
                                ambient, gain)
        points = project_points(polygon, q, r, camera.matrix, camera.dist_coeffs)
        cv2.fillConvexPoly(canvas, _fixed_point(points), float(shade), cv2.LINE_AA,
                           _SUBPIXEL_BITS)
    if face != model.grid_face:
        return
    # Cell lines only where cells are a few pixels wide; finer they would just grey the panel.
    if camera.matrix[0, 0] * model.grid_spacing / center_cam[2] < 5.0:
        return
    shade = _face_intensity(normal_cam, center_cam, model.grid_albedo, model.shininess[face],
                            sun, ambient, gain)
    ends = project_points(model.grid_lines.reshape(-1, 3), q, r, camera.matrix,
                          camera.dist_coeffs)
    ends = _fixed_point(ends).reshape(-1, 2, 2)
    for start, stop in ends:
        cv2.line(canvas, tuple(int(v) for v in start), tuple(int(v) for v in stop), float(shade),
                 1, cv2.LINE_AA, _SUBPIXEL_BITS)


# ------------------------------------------------------------------ SPEED+'s lab test domains
def _surface_tables(model: SatelliteModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per surface id (0 nothing, 1..F faces, then the decals, then the cell grid): the face it
    lies on (-1 for none), its kind of surface and its albedo (the decals' own, else 1).

    Tango's mock-up: the body is wrapped in MLI foil, the panel's upper face holds the solar
    cells (the grid between them is metal), the rest of the panel is its painted frame, the
    antennas are metal rods and the decals are paint.
    """
    num_faces, num_decals = len(model.faces), len(model.decals)
    face = np.concatenate([[-1], np.arange(num_faces), [f for f, _, _ in model.decals],
                           [model.grid_face]])
    kind = np.full(num_faces + num_decals + 2, FOIL)
    kind[1:num_faces + 1] = np.select(
        [model.part == 0, np.arange(num_faces) == model.grid_face, model.part == 1],
        [FOIL, CELL, FRAME], ROD)
    kind[num_faces + 1:num_faces + num_decals + 1] = PAINT
    kind[-1] = GRID
    albedo = np.ones(len(kind))
    albedo[num_faces + 1:num_faces + num_decals + 1] = [a for _, _, a in model.decals]
    return face, kind, albedo


def _surface_ids(model: SatelliteModel, q: np.ndarray, r: np.ndarray, pinhole: Camera
                 ) -> np.ndarray:
    """H x W int32 map of the surface id (see :func:`_surface_tables`) seen at each canvas pixel,
    painted in :func:`render_image`'s order (faces far to near, each with its markings)."""
    faces, _, centers_cam = _faces_far_to_near(model, q, r)
    polygons = _fixed_point(project_points(model.vertices, q, r, pinhole.matrix))[model.faces]
    ids = np.zeros((pinhole.height, pinhole.width), np.int32)
    num_faces = len(model.faces)
    for face in faces:
        cv2.fillConvexPoly(ids, polygons[face], int(face) + 1, cv2.LINE_8, _SUBPIXEL_BITS)
        for k, (decal_face, polygon, _) in enumerate(model.decals):
            if decal_face == face:
                points = _fixed_point(project_points(polygon, q, r, pinhole.matrix))
                cv2.fillConvexPoly(ids, points, num_faces + 1 + k, cv2.LINE_8, _SUBPIXEL_BITS)
        cell_px = pinhole.matrix[0, 0] * model.grid_spacing / centers_cam[face, 2]
        if face == model.grid_face and cell_px >= 5.0:  # as render_image draws them
            ends = project_points(model.grid_lines.reshape(-1, 3), q, r, pinhole.matrix)
            for start, stop in _fixed_point(ends).reshape(-1, 2, 2):
                cv2.line(ids, tuple(int(v) for v in start), tuple(int(v) for v in stop),
                         num_faces + len(model.decals) + 1, 1, cv2.LINE_8, _SUBPIXEL_BITS)
    return ids


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a x b of two 3-vectors (np.cross costs more than the whole sum for one pair)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2],
                     a[0] * b[1] - a[1] * b[0]])


def _occlusion_query(model: SatelliteModel, q: np.ndarray, r: np.ndarray, points: np.ndarray,
                     pixel_part: np.ndarray, footprint: float):
    """SurfaceBuffers.occlusion for the surface points ``points`` (N x 3, camera frame) lying on
    the parts ``pixel_part``: a shadow map per light direction.

    The model is painted as the light sees it (orthographic, parts far to near by the same
    separating planes as for the camera), each pixel of a part with the part's number. A point
    is lit where the map shows its own part or nothing: convex parts never shadow themselves,
    so only other parts cast shadows. A light of angular radius a blurs the map over the
    penumbra a * 0.15 m (a typical gap between a part and the shadow it casts).
    """
    dcm = quat_to_dcm(q)
    vertices = body_to_camera(model.vertices, q, r)
    normals = model.normals @ dcm
    part_centers = np.array([vertices[model.faces[model.part == p]].reshape(-1, 3).mean(axis=0)
                             for p in range(model.num_parts)])
    extent = float(np.ptp(vertices, axis=0).max())
    parts_seen = np.flatnonzero(np.bincount(pixel_part, minlength=model.num_parts))

    def occlusion(direction: np.ndarray, radius: float) -> np.ndarray:
        light = np.asarray(direction, dtype=np.float64)
        light = light / np.linalg.norm(light)
        # two axes across the light: x (or y) less its share along the light, then light x that
        helper = np.eye(3)[0 if abs(light[0]) < 0.9 else 1]
        across = helper - (helper @ light) * light
        across /= np.linalg.norm(across)
        basis = np.column_stack([across, _cross(light, across)])
        # no finer than a pixel, nor than a third of the penumbra (which blurs it anyway)
        cell = max(footprint, extent / 768.0, radius * 0.05)
        flat = vertices @ basis
        low = flat.min(axis=0) - 2.0 * cell
        size = np.ceil((flat.max(axis=0) - low) / cell).astype(int) + 3
        shadow_map = np.zeros((size[1], size[0]), np.int32)
        polygons = _fixed_point((flat - low) / cell)[model.faces]
        light_in_body = dcm @ (1e4 * light)  # the light's place seen from the body's origin
        for part in _paint_order(model, light_in_body, -(part_centers @ light)):
            for face in np.flatnonzero((model.part == part) & (normals @ light > 0)):
                cv2.fillConvexPoly(shadow_map, polygons[face], int(part) + 1, cv2.LINE_8,
                                   _SUBPIXEL_BITS)
        where = np.rint((points @ basis.astype(np.float32) - low.astype(np.float32))
                        / np.float32(cell)).astype(np.int32)
        np.maximum(where, 0, out=where)
        np.minimum(where, size - 1, out=where)
        place = where[:, 1] * size[0] + where[:, 0]
        penumbra = radius * 0.15 / cell
        if penumbra < 0.5:
            seen = shadow_map.ravel().take(place)
            return ((seen == 0) | (seen == pixel_part + 1)).astype(np.float32)
        lit = np.zeros((model.num_parts, *shadow_map.shape), np.float32)
        for part in parts_seen:
            mask = ((shadow_map == 0) | (shadow_map == part + 1)).astype(np.float32)
            lit[part] = cv2.GaussianBlur(mask, (0, 0), penumbra)
        return lit.ravel().take(place + pixel_part * shadow_map.size)

    return occlusion


def _surface_buffers(model: SatelliteModel, q: np.ndarray, r: np.ndarray, pinhole: Camera,
                     ids: np.ndarray) -> SurfaceBuffers:
    """Per covered canvas pixel: the 3-D point its ray meets on its face, the face's frame, the
    surface kind and texture coordinates (see lib.spacecraft.domains.SurfaceBuffers)."""
    id_face, id_kind, id_albedo = _surface_tables(model)
    corners = project_points(model.vertices, q, r, pinhole.matrix)
    left, top = np.clip(np.floor(corners.min(axis=0)).astype(int) - 1, 0, None)
    right, bottom = np.ceil(corners.max(axis=0)).astype(int) + 2
    rows, cols = np.nonzero(ids[top:bottom, left:right])
    rows, cols = rows + top, cols + left
    pixel_ids = ids[rows, cols]
    face = id_face[pixel_ids]
    dcm = quat_to_dcm(q)
    normals = model.normals @ dcm
    vertices = body_to_camera(model.vertices, q, r)
    offsets = np.sum(normals * vertices[model.faces[:, 0]], axis=1)  # planes n . x = offset
    matrix = pinhole.matrix
    rays = np.empty((len(rows), 3), np.float32)
    rays[:, 0] = (cols - matrix[0, 2]) / matrix[0, 0]
    rays[:, 1] = (rows - matrix[1, 2]) / matrix[1, 1]
    rays[:, 2] = 1.0
    pixel_normals = normals.astype(np.float32)[face]
    slant = np.einsum("ij,ij->i", pixel_normals, rays)
    slant[np.abs(slant) < 1e-6] = -1e-6
    points = rays * (offsets.astype(np.float32)[face] / slant)[:, None]
    # A tangent frame per face (along its first edge), texture coordinates in metres from an
    # origin of its own so that no two faces show the same patch of texture:
    # u = (body point) . t_u = (camera point - r) . (t_u turned into the camera frame).
    edges = model.vertices[model.faces[:, 1]] - model.vertices[model.faces[:, 0]]
    tangent_u = (edges / np.linalg.norm(edges, axis=1, keepdims=True)) @ dcm
    tangent_v = np.cross(normals, tangent_u)
    origin = np.column_stack([0.137 * np.arange(len(edges)) - tangent_u @ r,
                              0.291 * np.arange(len(edges)) - tangent_v @ r])
    pixel_u = tangent_u.astype(np.float32)[face]
    pixel_v = tangent_v.astype(np.float32)[face]
    uv = np.column_stack([np.einsum("ij,ij->i", points, pixel_u),
                          np.einsum("ij,ij->i", points, pixel_v)]) + origin[face]
    footprint = float(np.linalg.norm(r)) / float(matrix[0, 0])
    return SurfaceBuffers(
        shape=ids.shape, rows=rows, cols=cols, kind=id_kind[pixel_ids],
        albedo=id_albedo[pixel_ids].astype(np.float32), points=points, normals=pixel_normals,
        tangent_u=pixel_u, tangent_v=pixel_v, uv=uv, footprint=footprint,
        occlusion=_occlusion_query(model, q, r, points, model.part[face], footprint),
    )


def _lamp_view(scene: Scene, r: np.ndarray, camera: Camera, pinhole: Camera,
               ids: np.ndarray) -> LampView | None:
    """Where the sun lamp appears in the picture; None when it sends no light into the lens
    (behind the camera or more than 60 degrees off its axis) or the spacecraft hides it."""
    if scene.lamp is None:
        return None
    position = np.asarray(r, dtype=np.float64) + scene.lamp.offset
    if position[2] < 0.5 * np.linalg.norm(position):
        return None
    on_canvas = (pinhole.matrix @ position)[:2] / position[2]
    column, row = np.round(on_canvas).astype(int)
    inside = 0 <= column < pinhole.width and 0 <= row < pinhole.height
    if inside and ids[row, column] > 0:
        return None
    identity = np.array([1.0, 0.0, 0.0, 0.0])
    if inside:  # on the canvas the lens distortion is one-to-one: project through it
        pixel = project_points(position[None], identity, np.zeros(3), camera.matrix,
                               camera.dist_coeffs)[0]
    else:  # far outside the frame only the direction of its glare matters
        pixel = (camera.matrix @ position)[:2] / position[2]
    return LampView(pixel, float(camera.matrix[0, 0] * scene.lamp.radius / position[2]))


def render_domain_image(
    model: SatelliteModel,
    q: np.ndarray,
    r: np.ndarray,
    camera: Camera,
    rng: np.random.Generator,
    domain: str,
) -> np.ndarray:
    """One H x W uint8 picture of the model at pose (q, r) as SPEED+'s lab test ``domain``
    (``lightbox`` or ``sunlamp``) would take it, from ``rng``'s draws.

    The geometry is :func:`render_image`'s (the same canvas, painting order and lens remap), so
    the labels' projection puts every landmark on its place; the looks are those of
    :mod:`lib.spacecraft.domains`: the lab's lights and the mock-up's materials shade the
    canvas, then the lens and the sensor make the picture.
    """
    scene = draw_scene(domain, rng)
    pinhole = _lens_warp(camera).canvas if camera.has_distortion else camera
    ids = _surface_ids(model, q, r, pinhole)
    surface = _surface_buffers(model, q, r, pinhole, ids)
    radiance = np.zeros(ids.shape, np.float32)
    radiance[surface.rows, surface.cols] = shade(surface, scene)
    if camera.has_distortion:
        radiance = _through_lens(radiance, camera, cv2.INTER_LINEAR)
    lamp = _lamp_view(scene, r, camera, pinhole, ids)
    return develop(radiance, scene, lamp, camera.matrix[:2, 2], rng)


# -------------------------------------------------------------------------------------- writing
MANIFEST_FILE = "render.json"  # write_speed_synthetic's settings, written when the set is whole
CAMERAS = {"speed": speed_camera, "speedplus": speedplus_camera}  # write_speed_synthetic's choice
MIN_DISTANCE, MAX_DISTANCE = 2.2, 50.0  # SPEED+'s closest poses; SPEED's farthest


def _validate_arguments(counts: tuple[int, int, int], width: int, height: int,
                        earth_fraction: float, distance_range: tuple[float, float],
                        camera: str) -> None:
    if any(count < 0 for count in counts):
        raise ValueError(f"image counts must be >= 0, got train/val/test = {counts}")
    if width < 16 or height < 16:
        raise ValueError(f"image size must be at least 16 x 16, got {width} x {height}")
    if not 0.0 <= earth_fraction <= 1.0:
        raise ValueError(f"earth fraction must lie in [0, 1], got {earth_fraction}")
    low, high = distance_range
    if not MIN_DISTANCE <= low <= high <= MAX_DISTANCE:
        raise ValueError(f"distance range must satisfy {MIN_DISTANCE:g} <= MIN <= MAX <= "
                         f"{MAX_DISTANCE:g} m, got {low:g} {high:g}")
    if camera not in CAMERAS:
        raise ValueError(f"camera must be one of {', '.join(CAMERAS)}, got {camera!r}")


# The generator's split numbers are part of every image's seed: 0-2 train, validation and test,
# then one per lab test domain, the same whichever domains a call asks for.
_DOMAIN_SPLITS = {"lightbox": 3, "sunlamp": 4}
_SPLIT_DOMAINS = {number: name for name, number in _DOMAIN_SPLITS.items()}
_RenderSettings = tuple  # (model, camera, seed, distance range, earth fraction, JPEG quality)
_POOL_MIN_JOBS = 64  # fewer images render sooner in this process than a pool of them starts
_WORKER_SETTINGS: _RenderSettings | None = None  # a render worker's copy, set once per process


def _set_worker_settings(settings: _RenderSettings) -> None:
    global _WORKER_SETTINGS
    _WORKER_SETTINGS = settings


def _render_job(job: tuple[int, int, int, Path]) -> tuple[int, PoseLabel]:
    """Render and write image ``index`` of split ``split_index`` (``number`` of the whole set,
    which names the file); its label. The image draws from its own generator seeded by (seed,
    split, index), so any worker renders it to the same bytes."""
    split_index, index, number, folder = job
    model, lens, seed, distance_range, earth_fraction, jpeg_quality = _WORKER_SETTINGS
    rng = np.random.default_rng(np.random.SeedSequence([seed, split_index, index]))
    q, r = sample_pose(model, lens, rng, distance_range)
    if split_index in _SPLIT_DOMAINS:
        image = render_domain_image(model, q, r, lens, rng, _SPLIT_DOMAINS[split_index])
    else:
        with_earth = bool(rng.random() < earth_fraction)
        image = render_image(model, q, r, lens, rng, with_earth)
    filename = f"img{number:06d}.jpg"
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {filename}")
    (folder / filename).write_bytes(encoded.tobytes())
    return split_index, PoseLabel(filename, q, r)


def _render_jobs(jobs: list, settings: _RenderSettings, workers: int):
    """(split index, label) of every job, in job order, from ``workers`` processes."""
    if workers <= 0:
        workers = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count() or 1)
    if workers <= 1 or len(jobs) < _POOL_MIN_JOBS:
        _set_worker_settings(settings)
        yield from map(_render_job, jobs)
        return
    # spawn, not fork: a forked OpenCV whose thread pool was busy in the parent can deadlock
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_set_worker_settings, initargs=(settings,)) as pool:
        yield from pool.imap(_render_job, jobs, chunksize=16)


def write_speed_synthetic(
    out_dir: str | os.PathLike,
    num_train: int,
    num_val: int,
    num_test: int,
    seed: int,
    width: int = 1920,
    height: int = 1200,
    earth_fraction: float = 0.3,
    distance_range: tuple[float, float] = (3.0, 10.0),
    jpeg_quality: int = 95,
    show_progress: bool = True,
    camera: str = "speed",
    workers: int = 0,
    domains: Sequence[str] = (),
    num_domain: int | None = None,
) -> dict:
    """Render and write the data set; returns {split: number of images}.

    Layout (SPEED+): camera.json, keypoints.json, synthetic/{train,validation}.json,
    synthetic/images/, test/test.json (filenames only), test/labels.json, test/images/.
    ``domains`` adds SPEED+'s lab test sets, ``lightbox`` and/or ``sunlamp`` (see
    :func:`render_domain_image`), ``num_domain`` images each (None: as many as ``num_test``),
    as <domain>/test.json (filenames only), <domain>/labels.json and <domain>/images/; their
    poses are drawn as the synthetic ones are. Asking for them changes no byte of the others.
    File names run img000001.jpg ... across all splits. Each image draws from its own
    generator seeded by (seed, split, index), so the same arguments give the same bytes.
    ``camera``: ``"speed"``, SPEED's pinhole camera (the faster one), or ``"speedplus"``, the
    real SPEED+ camera with its lens distortion; either scaled to ``width`` x ``height``.
    The default distances, 3-10 m, lie within SPEED+'s (about 2.2-10 m) where the whole
    spacecraft fits the image; SPEED's reach 50 m. ``workers`` processes render (0: one per
    core this process may use); the bytes do not depend on how many.
    """
    counts = (int(num_train), int(num_val), int(num_test))
    _validate_arguments(counts, width, height, earth_fraction, distance_range, camera)
    wanted = _domain_names(domains)
    domain_count = counts[2] if num_domain is None else int(num_domain)
    if domain_count < 0:
        raise ValueError(f"the number of images per test domain must be >= 0, got {domain_count}")
    out = Path(out_dir)
    lens = CAMERAS[camera](width, height)
    model = tango_model()
    splits = [  # (name, folder, count, split number)
        ("train", out / "synthetic" / "images", counts[0], 0),
        ("validation", out / "synthetic" / "images", counts[1], 1),
        ("test", out / "test" / "images", counts[2], 2),
    ]
    splits += [(name, out / name / "images", domain_count, _DOMAIN_SPLITS[name])
               for name in wanted]
    for _, folder, _, _ in splits:
        folder.mkdir(parents=True, exist_ok=True)
    jobs = []  # (split, index in the split, number in the whole set, folder)
    for _, folder, count, split_index in splits:
        jobs += [(split_index, index, len(jobs) + index + 1, folder) for index in range(count)]
    name_of = {split_index: name for name, _, _, split_index in splits}
    labels: dict[str, list[PoseLabel]] = {name: [] for name, _, _, _ in splits}
    total = len(jobs)
    report_every = max(total // 50, 1)
    settings = (model, lens, seed, distance_range, earth_fraction, jpeg_quality)
    for number, (split_index, label) in enumerate(_render_jobs(jobs, settings, workers), 1):
        labels[name_of[split_index]].append(label)
        if show_progress and (number % report_every == 0 or number == total):
            print(f"\rrendering: {number}/{total} images", end="", file=sys.stderr, flush=True)
    if show_progress and total:
        print(file=sys.stderr)

    write_camera(out / "camera.json", lens)
    write_landmarks(out / "keypoints.json", model.landmarks)
    write_labels(out / "synthetic" / "train.json", labels["train"])
    write_labels(out / "synthetic" / "validation.json", labels["validation"])
    for name in ["test", *wanted]:  # unlabelled as the challenge gave them, truth beside
        write_labels(out / name / "test.json", [PoseLabel(lab.filename) for lab in labels[name]])
        write_labels(out / name / "labels.json", labels[name])
    # last: its presence says the set is complete, and what rendered it
    write_json_atomic(out / MANIFEST_FILE, {
        "num_train": counts[0], "num_val": counts[1], "num_test": counts[2], "seed": int(seed),
        "width": int(width), "height": int(height), "earth_fraction": float(earth_fraction),
        "distance_range": [float(value) for value in distance_range],
        "jpeg_quality": int(jpeg_quality), "camera": camera,
        "domains": {name: domain_count for name in wanted}}, indent=1)
    return {name: count for name, _, count, _ in splits}


def render_difference(out_dir: str | os.PathLike, wanted: dict) -> str | None:
    """Why the set in ``out_dir`` is not what :func:`write_speed_synthetic` with the keyword
    arguments ``wanted`` (any of them; ``domains`` as {name: images}) would write, in a few
    words; None when it is. Only the settings are compared, from the set's MANIFEST_FILE: a set
    without one (unfinished, or older than it) differs."""
    path = Path(out_dir) / MANIFEST_FILE
    try:
        have = json.loads(path.read_text())
    except FileNotFoundError:
        return f"{path} is missing"
    except (OSError, ValueError) as error:
        return f"{path} is unreadable ({error})"
    if not isinstance(have, dict):
        return f"{path} is not a JSON object"
    for key, value in wanted.items():
        if key == "domains":
            rendered = have.get("domains") if isinstance(have.get("domains"), dict) else {}
            for name, count in value.items():
                if rendered.get(name) != count:
                    return f"{name}: {rendered.get(name, 'no')} images, asked {count}"
            continue
        expected = [float(v) for v in value] if key == "distance_range" else value
        if have.get(key) != expected:
            return f"{key} is {have.get(key)!r}, asked {expected!r}"
    return None


def _domain_names(domains: Sequence[str] | str) -> list[str]:
    """The requested lab test domains, in order, each once; an unknown name is a ValueError."""
    names = [domains] if isinstance(domains, str) else list(domains)
    for name in names:
        if name not in DOMAINS:
            raise ValueError(f"unknown test domain {name!r}: choose from {', '.join(DOMAINS)}")
    return list(dict.fromkeys(names))
