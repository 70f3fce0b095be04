"""The real thing in the embedded set: Tango's landmarks in tangoPoints' order, the SPEED+
camera.json with every key SLAB ships, and rendering through the SPEED+ lens distortion
(lib/spacecraft/renderer.py, lib/spacecraft/files.py)."""
import json

import cv2
import numpy as np
import pytest
import scipy.io

from lib.spacecraft.files import (
    load_camera,
    read_camera,
    read_labels,
    read_landmarks,
    speedplus_camera,
    write_camera,
)
from lib.spacecraft.geometry import project_points, random_quaternions
from lib.spacecraft.renderer import face_id_map, render_image, sample_pose, tango_model

# SLAB's tangoPoints.mat (tango3Dpoints, 3 x 11, metres), as rows, in the file's order.
TANGO_POINTS = np.array([
    [-0.37, -0.385, 0.3215], [-0.37, 0.385, 0.3215], [0.37, 0.385, 0.3215],
    [0.37, -0.385, 0.3215],  # solar-panel corners
    [-0.37, -0.264, 0.0], [-0.37, 0.304, 0.0], [0.37, 0.304, 0.0],
    [0.37, -0.264, 0.0],  # body-bottom corners
    [-0.5427, 0.4877, 0.2535], [0.5427, 0.4877, 0.2591], [0.305, -0.579, 0.2515],  # antennas
])

# SLAB's SPEED+ camera.json, key for key.
SPEEDPLUS_JSON = """{"Nu": 1920, "Nv": 1200, "ppx": 5.86e-6, "ppy": 5.86e-6,
 "fx": 0.017513075965995915, "fy": 0.017511673079277208, "ccx": 960, "ccy": 600,
 "cameraMatrix": [[2988.5795163815555, 0, 960], [0, 2988.3401159176124, 600], [0, 0, 1]],
 "distCoeffs": [-0.22383016606510672, 0.51409797089106379, -0.00066499611998340662,
                -0.00021404771667484594, -0.13124227429077406]}"""
REAL_KEYS = {"Nu", "Nv", "ppx", "ppy", "fx", "fy", "ccx", "ccy", "cameraMatrix", "distCoeffs"}


# ----------------------------------------------------------------------------------- landmarks
def test_default_landmark_file_is_tango_points_in_order(speed_root, tmp_path):
    """keypoints.json of the embedded set holds the 11 tangoPoints rows in the same order, so
    the real .mat file and ours give the same landmarks."""
    ours = read_landmarks(speed_root / "keypoints.json", num_joints=11)
    np.testing.assert_allclose(ours, TANGO_POINTS, atol=1e-6, rtol=0)
    mat = tmp_path / "tangoPoints.mat"
    scipy.io.savemat(mat, {"tango3Dpoints": TANGO_POINTS.T})  # 3 x 11, as SLAB ships it
    np.testing.assert_allclose(read_landmarks(mat, num_joints=11), ours, atol=1e-6, rtol=0)


def test_tango_geometry():
    """Body 0.74 x 0.568 x 0.3015 m under a 0.02 m panel; each antenna tip is the centre of its
    rod's end, and the rods stand below the panel and outside the body."""
    model = tango_model()
    body, panel = model.vertices[:8], model.vertices[8:16]
    np.testing.assert_allclose(body.min(axis=0), [-0.37, -0.264, 0.0], atol=1e-12)
    np.testing.assert_allclose(body.max(axis=0), [0.37, 0.304, 0.3015], atol=1e-12)
    np.testing.assert_allclose(panel.min(axis=0), [-0.37, -0.385, 0.3015], atol=1e-12)
    np.testing.assert_allclose(panel.max(axis=0), [0.37, 0.385, 0.3215], atol=1e-12)
    for k, tip in enumerate(TANGO_POINTS[8:]):
        rod = model.vertices[16 + 8 * k:24 + 8 * k]
        np.testing.assert_allclose(rod[4:].mean(axis=0), tip, atol=1e-12)
        assert rod[:, 2].max() < 0.3015  # under the panel
        on_wall = 0.304 if tip[1] > 0 else -0.264
        np.testing.assert_allclose(rod[:4, 1], on_wall, atol=1e-12)  # foot on the wall
        assert np.all(np.abs(rod[4:, 1]) > 0.304)  # the tip end outside the body
    assert len(model.separators) == 10  # every pair of the 5 convex parts is separated


# -------------------------------------------------------------------------------------- camera
def test_speedplus_camera_matches_the_real_file_and_scales(tmp_path):
    real = tmp_path / "camera.json"
    real.write_text(SPEEDPLUS_JSON)
    read = read_camera(real)
    camera = speedplus_camera()
    np.testing.assert_array_equal(read.matrix, camera.matrix)
    np.testing.assert_array_equal(read.dist_coeffs, camera.dist_coeffs)
    assert (read.width, read.height) == (1920, 1200) and camera.has_distortion
    # A third of the size: focal lengths and principal point / 3, the same coefficients.
    small = speedplus_camera(640, 400)
    np.testing.assert_allclose(
        small.matrix, [[996.1931721271852, 0, 320], [0, 996.1133719725375, 200], [0, 0, 1]],
        rtol=1e-14)
    np.testing.assert_array_equal(small.dist_coeffs, camera.dist_coeffs)
    with pytest.raises(ValueError, match="positive"):
        speedplus_camera(0, 400)


@pytest.mark.parametrize("size", [(1920, 1200), (640, 400)])
def test_camera_json_round_trip_with_every_real_key(tmp_path, size):
    """Our camera.json has SLAB's keys and values (at full size: the same numbers as the real
    file; smaller: the same sensor in larger pixels, so fx, fy in metres stay)."""
    camera = speedplus_camera(*size)
    write_camera(tmp_path / "camera.json", camera)
    data = json.loads((tmp_path / "camera.json").read_text())
    assert set(data) == REAL_KEYS
    real = json.loads(SPEEDPLUS_JSON)
    scale = 1920 / size[0]
    assert (data["Nu"], data["Nv"]) == size
    assert data["ppx"] == pytest.approx(5.86e-6 * scale, rel=1e-12)
    assert data["ppy"] == pytest.approx(5.86e-6 * scale, rel=1e-12)
    for key in ("fx", "fy"):
        assert data[key] == pytest.approx(real[key], rel=1e-12)
    assert (data["ccx"], data["ccy"]) == (960 / scale, 600 / scale)
    back = load_camera(tmp_path)
    assert (back.width, back.height) == size
    np.testing.assert_array_equal(back.matrix, camera.matrix)
    np.testing.assert_array_equal(back.dist_coeffs, real["distCoeffs"])


# ---------------------------------------------------------------------- the distorting camera
def spacecraft_hits(model, camera, q, r, radius=1):
    """Whether each landmark's distorting projection has a rendered spacecraft pixel within
    ``radius`` pixels (the face-id map, which the image shares its outline with)."""
    faces = face_id_map(model, q, r, camera)
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    near = cv2.dilate((faces > 0).astype(np.uint8), kernel) > 0
    pixels = np.round(project_points(model.landmarks, q, r, camera.matrix, camera.dist_coeffs))
    inside = np.all((pixels >= 0) & (pixels < [camera.width, camera.height]), axis=1)
    u, v = pixels[inside].astype(int).T
    return np.concatenate([near[v, u], np.zeros(np.count_nonzero(~inside), bool)])


def test_landmarks_fall_on_the_spacecraft_through_the_lens():
    """90 % or more of the projected landmarks, occluded ones included, lie on the rendered
    spacecraft (within one pixel), over random poses of the real SPEED+ camera."""
    model, camera = tango_model(), speedplus_camera(960, 600)
    rng = np.random.default_rng(3)
    hits = [spacecraft_hits(model, camera, *sample_pose(model, camera, rng, (3.0, 10.0)))
            for _ in range(15)]
    assert np.mean(np.concatenate(hits)) >= 0.9


def test_rendering_follows_the_distortion_where_it_is_strong():
    """Near an image corner the lens moves points by ~10 px: the rendered outline follows the
    distorting projection there (its extent matches the distorted vertices' to 2 px, while a
    pinhole projection misses by much more), and so does the image itself."""
    model, camera = tango_model(), speedplus_camera()
    rng = np.random.default_rng(0)
    for corner in ([1650.0, 950.0], [270.0, 250.0], [1650.0, 250.0]):
        q = random_quaternions(1, rng)[0]
        ray = np.linalg.solve(camera.matrix, [*corner, 1.0])  # pinhole ray: close enough
        r = 12.0 * ray / np.linalg.norm(ray)
        distorted = project_points(model.vertices, q, r, camera.matrix, camera.dist_coeffs)
        pinhole = project_points(model.vertices, q, r, camera.matrix)
        assert np.all((distorted > 2) & (distorted < [1917, 1197]))  # fully in view
        assert np.abs(distorted - pinhole).max() > 8
        faces = face_id_map(model, q, r, camera)
        rows, cols = np.nonzero(faces)
        extent = np.array([cols.min(), rows.min(), cols.max(), rows.max()])
        expected = np.concatenate([distorted.min(axis=0), distorted.max(axis=0)])
        wrong = np.concatenate([pinhole.min(axis=0), pinhole.max(axis=0)])
        assert np.abs(extent - expected).max() <= 2.0
        assert np.abs(extent - wrong).max() > 6.0
        assert spacecraft_hits(model, camera, q, r).mean() >= 10 / 11
        # The image: bright pixels only on or right next to the outline (blur, anti-aliasing).
        image = render_image(model, q, r, camera, np.random.default_rng(1), with_earth=False)
        near = cv2.dilate((faces > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        assert np.count_nonzero((image > 40) & ~near) == 0
        assert np.count_nonzero(image > 40) > 1000


def test_speedplus_set_is_deterministic_and_labels_fit(tmp_path, run_tool):
    """--camera speedplus writes the real camera (scaled), the same bytes for the same seed,
    and every pose projects whole into the image through the distortion."""
    args = ["--train", 3, "--val", 1, "--test", 1, "--seed", 4, "--width", 320, "--height", 200,
            "--camera", "speedplus", "--quiet"]
    run_tool("tools/make_speed_synthetic.py", "--out", tmp_path / "a", *args)
    run_tool("tools/make_speed_synthetic.py", "--out", tmp_path / "b", *args)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                   if p.is_file())
    assert len(files) == 7 + 5  # camera, keypoints, 4 label files, render.json; 5 images
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    camera = load_camera(tmp_path / "a")
    np.testing.assert_array_equal(camera.matrix, speedplus_camera(320, 200).matrix)
    landmarks = read_landmarks(tmp_path / "a" / "keypoints.json")
    for label in read_labels(tmp_path / "a" / "synthetic" / "train.json"):
        pixels = project_points(landmarks, label.q, label.r, camera.matrix, camera.dist_coeffs)
        assert np.all((pixels >= 0) & (pixels < [320, 200]))
        assert 3.0 <= np.linalg.norm(label.r) <= 10.0
