"""The embedded SPEED+-layout generator (lib/spacecraft/renderer.py) and its tool
(tools/make_speed_synthetic.py), on the session's rendered set (conftest.speed_root)."""
import json

import cv2
import numpy as np
import pytest
from conftest import load_script

from lib.spacecraft.files import read_camera, read_labels, read_landmarks, speed_camera
from lib.spacecraft.geometry import body_to_camera, project_points, quat_to_dcm
from lib.spacecraft.renderer import (
    MANIFEST_FILE,
    face_id_map,
    render_difference,
    render_image,
    sample_pose,
    tango_model,
    write_speed_synthetic,
)

SIZE = dict(width=160, height=100)  # single renders, smaller than the shared set


def all_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_layout_and_keys(speed_root, speed_set_args):
    args = speed_set_args
    width, height = args["width"], args["height"]
    camera = read_camera(speed_root / "camera.json")
    assert (camera.width, camera.height) == (width, height)
    np.testing.assert_allclose(camera.matrix, speed_camera(width, height).matrix)
    assert read_landmarks(speed_root / "keypoints.json", num_joints=11).shape == (11, 3)
    train = json.loads((speed_root / "synthetic" / "train.json").read_text())
    assert len(train) == args["num_train"]
    assert set(train[0]) == {"filename", "q_vbs2tango_true", "r_Vo2To_vbs_true"}
    val = read_labels(speed_root / "synthetic" / "validation.json")
    test_names = json.loads((speed_root / "test" / "test.json").read_text())
    assert [set(entry) for entry in test_names] == [{"filename"}] * args["num_test"]
    test_labels = read_labels(speed_root / "test" / "labels.json")
    assert [label.filename for label in test_labels] == [e["filename"] for e in test_names]
    names = [e["filename"] for e in train] + [label.filename for label in val]
    total = args["num_train"] + args["num_val"] + args["num_test"]
    assert len(val) == args["num_val"]
    assert len(set(names + [e["filename"] for e in test_names])) == total
    for name in names:
        image = cv2.imread(str(speed_root / "synthetic" / "images" / name), cv2.IMREAD_UNCHANGED)
        assert image.shape == (height, width) and image.dtype == np.uint8
    for label in test_labels:
        assert (speed_root / "test" / "images" / label.filename).is_file()
        assert 3.0 <= np.linalg.norm(label.r) <= 10.0  # the default distances


def test_the_manifest_tells_a_set_of_other_settings(speed_root, speed_set_args, tmp_path,
                                                    monkeypatch):
    """render.json holds the settings; render_difference names the first that differs, and the
    demo renders a set again rather than use one of other counts."""
    manifest = json.loads((speed_root / MANIFEST_FILE).read_text())
    assert {key: manifest[key] for key in speed_set_args} == speed_set_args
    assert manifest["domains"] == {} and manifest["distance_range"] == [3.0, 10.0]
    assert render_difference(speed_root, speed_set_args) is None
    assert render_difference(speed_root, {"distance_range": (3, 10)}) is None
    asked = {**speed_set_args, "num_val": speed_set_args["num_val"] + 1}
    assert render_difference(speed_root, asked) == (
        f"num_val is {speed_set_args['num_val']}, asked {speed_set_args['num_val'] + 1}")
    assert render_difference(speed_root, {"domains": {"sunlamp": 3}}) == (
        "sunlamp: no images, asked 3")
    assert render_difference(tmp_path, {}) == f"{tmp_path / MANIFEST_FILE} is missing"

    demo = load_script("tools/speed_demo.py", monkeypatch)
    args = demo.parse_args(["--data", str(tmp_path / "set"), "--train", "2", "--val", "1",
                            "--test", "1", "--width", "64", "--height", "40", "--domains"])
    assert demo.ensure_data(args) == "rendered"
    assert demo.ensure_data(args) == "present"
    args.val = 2
    assert demo.ensure_data(args) == "rendered"
    assert len(read_labels(tmp_path / "set" / "synthetic" / "validation.json")) == 2


def test_same_seed_same_bytes_other_seed_other_images(speed_root, speed_set_args, run_tool,
                                                      tmp_path):
    """The tool with the shared set's arguments writes the very bytes the function wrote."""
    args = speed_set_args
    done = run_tool("tools/make_speed_synthetic.py", "--out", tmp_path / "again",
                    "--train", args["num_train"], "--val", args["num_val"],
                    "--test", args["num_test"], "--seed", args["seed"], "--width", args["width"],
                    "--height", args["height"], "--quiet")
    assert "wrote" in done.stdout
    assert all_files(tmp_path / "again") == all_files(speed_root)
    write_speed_synthetic(tmp_path / "other", show_progress=False,
                          **{**args, "seed": args["seed"] + 1})
    first = "synthetic/images/img000001.jpg"
    assert all_files(tmp_path / "other")[first] != all_files(speed_root)[first]


def test_rendering_processes_do_not_change_a_byte(tmp_path):
    """Two worker processes (enough images for the pool) write what one process writes."""
    args = {"num_train": 60, "num_val": 4, "num_test": 4, "seed": 5, "width": 160,
            "height": 100, "show_progress": False}
    one = write_speed_synthetic(tmp_path / "one", workers=1, **args)
    two = write_speed_synthetic(tmp_path / "two", workers=2, **args)
    assert one == two == {"train": 60, "validation": 4, "test": 4}
    assert all_files(tmp_path / "one") == all_files(tmp_path / "two")
    assert sorted(p.name for p in (tmp_path / "two" / "test" / "images").iterdir()) == [
        "img000065.jpg", "img000066.jpg", "img000067.jpg", "img000068.jpg"]


def test_projected_landmarks_land_in_the_image(speed_root):
    camera = read_camera(speed_root / "camera.json")
    landmarks = read_landmarks(speed_root / "keypoints.json")
    labels = read_labels(speed_root / "synthetic" / "train.json")
    labels += read_labels(speed_root / "test" / "labels.json")
    for label in labels:
        pixels = project_points(landmarks, label.q, label.r, camera.matrix, camera.dist_coeffs)
        assert np.all(pixels >= 0) and np.all(pixels < [camera.width, camera.height])


def test_satellite_is_brighter_than_space_near_its_centre():
    model, camera = tango_model(), speed_camera(**SIZE)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        q, r = sample_pose(model, camera, rng, (3.0, 12.0))
        image = render_image(model, q, r, camera, rng, with_earth=False).astype(float)
        u, v = np.round(project_points(np.array([[0, 0, 0.15]]), q, r, camera.matrix)[0])
        centre = image[int(v) - 1:int(v) + 2, int(u) - 1:int(u) + 2].mean()
        background = np.median(image[face_id_map(model, q, r, camera) == 0])
        assert centre > background + 5


def zbuffer_face_ids(model, q, r, camera):
    """Nearest face per pixel by ray casting, the reference for the painter's order."""
    ys, xs = np.mgrid[0:camera.height, 0:camera.width]
    rays = np.stack([xs, ys, np.ones_like(xs)], -1).reshape(-1, 3) @ np.linalg.inv(camera.matrix).T
    corners = body_to_camera(model.vertices, q, r)[model.faces]
    normals = model.normals @ quat_to_dcm(q)
    nearest, ids = np.full(len(rays), np.inf), np.zeros(len(rays), np.int32)
    for face, (quad, normal) in enumerate(zip(corners, normals, strict=True)):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (quad[0] @ normal) / (rays @ normal)
        hits = rays * t[:, None]
        sides = np.stack([np.cross(quad[(k + 1) % 4] - quad[k], hits - quad[k]) @ normal
                          for k in range(4)])
        inside = np.all(sides >= -1e-12, axis=0) | np.all(sides <= 1e-12, axis=0)
        closer = inside & (t > 0) & (t < nearest)
        nearest[closer], ids[closer] = t[closer], face + 1
    return ids.reshape(camera.height, camera.width)


def test_occlusion_matches_a_zbuffer():
    model, camera = tango_model(), speed_camera(**SIZE)
    rng = np.random.default_rng(1)
    for _ in range(12):
        q, r = sample_pose(model, camera, rng, (3.0, 4.0))
        painted = face_id_map(model, q, r, camera)
        reference = zbuffer_face_ids(model, q, r, camera)
        edges = cv2.Laplacian(reference.astype(np.float32), cv2.CV_32F) != 0
        edges = cv2.dilate(edges.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        assert np.count_nonzero((painted != reference) & ~edges) == 0
        assert np.count_nonzero(reference) > 200  # the satellite is really there


def test_bad_arguments_are_clear_errors(tmp_path, run_tool):
    with pytest.raises(ValueError, match=r"distance range must satisfy 2.2 <= MIN <= MAX <= 50"):
        write_speed_synthetic(tmp_path, 1, 0, 0, seed=0, distance_range=(1.0, 5.0), **SIZE)
    with pytest.raises(ValueError, match="distance range"):
        write_speed_synthetic(tmp_path, 1, 0, 0, seed=0, distance_range=(10.0, 60.0), **SIZE)
    with pytest.raises(ValueError, match="earth fraction"):
        write_speed_synthetic(tmp_path, 1, 0, 0, seed=0, earth_fraction=1.5, **SIZE)
    with pytest.raises(ValueError, match="camera must be one of speed, speedplus, got 'pinhole'"):
        write_speed_synthetic(tmp_path, 1, 0, 0, seed=0, camera="pinhole", **SIZE)
    done = run_tool("tools/make_speed_synthetic.py", "--out", tmp_path / "far", "--train", 1,
                    "--val", 0, "--test", 0, "--seed", 0, "--distance", 2, 60, check=False)
    assert done.returncode == 2 and "2.2 <= MIN <= MAX <= 50 m, got 2 60" in done.stderr


def test_far_poses_up_to_fifty_metres_still_fit():
    """SPEED's range: at 40-50 m the spacecraft is small but whole and where the label says."""
    model, camera = tango_model(), speed_camera(640, 400)
    rng = np.random.default_rng(7)
    for _ in range(5):
        q, r = sample_pose(model, camera, rng, (40.0, 50.0))
        assert 40.0 <= np.linalg.norm(r) <= 50.0
        faces = face_id_map(model, q, r, camera)
        # Tango spans about 1.1-1.4 m: 20-35 px at 640 x 400 (f = 1001 px) from 40-50 m.
        rows, cols = np.nonzero(faces)
        assert 10 <= max(np.ptp(cols), np.ptp(rows)) <= 40


def test_demo_size_spacecraft_is_neither_a_dot_nor_cut_off():
    """The default distances (3-10 m) at the demo's 640 x 400: Tango spans at least ~0.8 m in
    any view, so 80 px or more at 10 m (f = 1001 px), and the whole outline is in the image."""
    model, camera = tango_model(), speed_camera(640, 400)
    rng = np.random.default_rng(2)
    for _ in range(10):
        q, r = sample_pose(model, camera, rng, (3.0, 10.0))
        faces = face_id_map(model, q, r, camera)
        rows, cols = np.nonzero(faces)
        assert max(np.ptp(cols), np.ptp(rows)) >= 60
        assert rows.min() > 0 and cols.min() > 0 and rows.max() < 399 and cols.max() < 639
