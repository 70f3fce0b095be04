"""SPEED+'s lab test domains in the embedded generator (lightbox, sunlamp: renderer.py with
domains.py), its tool's --domains and the domain sheet (visualization/plot_domains.py)."""
import json

import cv2
import numpy as np
import pytest
from conftest import load_script

from lib.spacecraft.domains import DOMAINS
from lib.spacecraft.files import read_camera, read_labels, speed_camera, speedplus_camera
from lib.spacecraft.renderer import (
    MANIFEST_FILE,
    face_id_map,
    render_domain_image,
    render_image,
    sample_pose,
    tango_model,
    write_speed_synthetic,
)

DOMAIN_COUNT = 3  # images per domain in the module's set


def all_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def domain_root(tmp_path_factory, speed_set_args):
    """The shared set's arguments plus both domains, 3 images each."""
    root = tmp_path_factory.mktemp("speed_domains")
    counts = write_speed_synthetic(root, show_progress=False, domains=DOMAINS,
                                   num_domain=DOMAIN_COUNT, **speed_set_args)
    assert counts == {"train": speed_set_args["num_train"],
                      "validation": speed_set_args["num_val"],
                      "test": speed_set_args["num_test"], "lightbox": DOMAIN_COUNT,
                      "sunlamp": DOMAIN_COUNT}
    return root


def test_domain_layout_is_speedplus(domain_root, speed_root, speed_set_args):
    args = speed_set_args
    for name in ("camera.json", "keypoints.json"):  # the same camera and landmarks
        assert (domain_root / name).read_bytes() == (speed_root / name).read_bytes()
    camera = read_camera(domain_root / "camera.json")
    first = args["num_train"] + args["num_val"] + args["num_test"] + 1
    for k, name in enumerate(DOMAINS):
        names = json.loads((domain_root / name / "test.json").read_text())
        assert [set(entry) for entry in names] == [{"filename"}] * DOMAIN_COUNT  # unlabelled
        labels = read_labels(domain_root / name / "labels.json")
        expected = [f"img{first + k * DOMAIN_COUNT + i:06d}.jpg" for i in range(DOMAIN_COUNT)]
        assert [entry["filename"] for entry in names] == expected
        assert [label.filename for label in labels] == expected
        for label in labels:
            assert label.has_pose and 3.0 <= np.linalg.norm(label.r) <= 10.0  # same distances
            image = cv2.imread(str(domain_root / name / "images" / label.filename),
                               cv2.IMREAD_UNCHANGED)
            assert image.shape == (camera.height, camera.width) and image.dtype == np.uint8
        assert sorted(p.name for p in (domain_root / name / "images").iterdir()) == expected


def test_synthetic_splits_keep_their_bytes_with_domains(domain_root, speed_root):
    """Asking for the domains adds folders and changes no byte of the synthetic set (only the
    manifest, which records them)."""
    with_domains = {path: data for path, data in all_files(domain_root).items()
                    if path.split("/")[0] not in DOMAINS and path != MANIFEST_FILE}
    assert with_domains == {path: data for path, data in all_files(speed_root).items()
                            if path != MANIFEST_FILE}
    domains = json.loads((domain_root / MANIFEST_FILE).read_text())["domains"]
    assert set(domains) == set(DOMAINS)


def test_tool_writes_the_same_bytes_and_one_domain_alone_too(domain_root, speed_set_args,
                                                            monkeypatch, capsys, tmp_path):
    args = speed_set_args
    tool = load_script("tools/make_speed_synthetic.py", monkeypatch)
    assert tool.main(["--out", str(tmp_path / "again"), "--train", str(args["num_train"]),
                      "--val", str(args["num_val"]), "--test", str(args["num_test"]),
                      "--seed", str(args["seed"]), "--width", str(args["width"]),
                      "--height", str(args["height"]), "--domains", "lightbox", "sunlamp",
                      "--domain-count", str(DOMAIN_COUNT), "--quiet"]) == 0
    assert "3 lightbox, 3 sunlamp" in capsys.readouterr().out
    assert all_files(tmp_path / "again") == all_files(domain_root)
    # A domain's pictures depend on the seed and their index, not on the other domain's presence.
    write_speed_synthetic(tmp_path / "sunlamp_only", show_progress=False, domains=["sunlamp"],
                          num_domain=DOMAIN_COUNT, **args)
    alone = sorted((tmp_path / "sunlamp_only" / "sunlamp" / "images").iterdir())
    both = sorted((domain_root / "sunlamp" / "images").iterdir())
    assert [p.read_bytes() for p in alone] == [p.read_bytes() for p in both]


def test_domain_bytes_do_not_depend_on_the_worker_count(tmp_path, monkeypatch):
    """Two rendering processes write what one writes (the pool started for a few images)."""
    from lib.spacecraft import renderer

    monkeypatch.setattr(renderer, "_POOL_MIN_JOBS", 2)
    args = {"num_train": 1, "num_val": 0, "num_test": 0, "seed": 3, "width": 48, "height": 30,
            "show_progress": False, "domains": DOMAINS, "num_domain": 2}
    one = write_speed_synthetic(tmp_path / "one", workers=1, **args)
    two = write_speed_synthetic(tmp_path / "two", workers=2, **args)
    assert one == two == {"train": 1, "validation": 0, "test": 0, "lightbox": 2, "sunlamp": 2}
    assert all_files(tmp_path / "one") == all_files(tmp_path / "two")
    write_speed_synthetic(tmp_path / "other", workers=1, **{**args, "seed": 4})
    name = "sunlamp/images/img000004.jpg"
    assert all_files(tmp_path / "other")[name] != all_files(tmp_path / "one")[name]


def test_bad_domain_requests_are_clear_errors(tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match=r"unknown test domain 'moon': choose from lightbox, "
                                         r"sunlamp"):
        write_speed_synthetic(tmp_path / "a", 1, 0, 0, seed=0, width=32, height=20,
                              domains=("lightbox", "moon"))
    with pytest.raises(ValueError, match="per test domain must be >= 0, got -1"):
        write_speed_synthetic(tmp_path / "b", 1, 0, 0, seed=0, width=32, height=20,
                              domains=("sunlamp",), num_domain=-1)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    tool = load_script("tools/make_speed_synthetic.py", monkeypatch)
    assert tool.main(["--out", str(tmp_path / "c"), "--train", "1", "--val", "0", "--test", "0",
                      "--seed", "0", "--domains", "sunlamp", "lab"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "make_speed_synthetic.py: error: unknown test domain 'lab': choose from lightbox, sunlamp"]


def renders(names, camera, seeds=range(6)):
    """(image, spacecraft mask) per seed and name, all at the same poses."""
    model = tango_model()
    out = {name: [] for name in names}
    for seed in seeds:
        pose_rng = np.random.default_rng(seed)
        q, r = sample_pose(model, camera, pose_rng, (3.0, 10.0))
        mask = face_id_map(model, q, r, camera) > 0
        for name in names:
            rng = np.random.default_rng([seed, 1])
            if name in ("synthetic", "earth"):
                image = render_image(model, q, r, camera, rng, with_earth=name == "earth")
            else:
                image = render_domain_image(model, q, r, camera, rng, name)
            out[name].append((image, mask))
    return out


def test_each_domain_differs_from_the_synthetic_look_in_its_own_way():
    """Numbers that a domain made to look like the synthetic render would fail: the sun lamp
    saturates much of the spacecraft and leaves deep shadows (harder contrast than the light
    boxes' soft light); the lightbox's foil and sensor give the spacecraft a rough texture the
    flat-shaded render lacks; both labs are dark behind the spacecraft, unlike an Earth."""
    shots = renders(("synthetic", "earth", "lightbox", "sunlamp"), speed_camera(160, 100))

    def mean_over(name, statistic):
        return float(np.mean([statistic(image.astype(np.float32), mask)
                              for image, mask in shots[name]]))

    def saturated(image, mask):
        return np.mean(image[mask] >= 250)

    def contrast(image, mask):  # dark tenth of the spacecraft against its bright tenth
        return np.percentile(image[mask], 10) / max(np.percentile(image[mask], 90), 1.0)

    def texture(image, mask):  # mean |Laplacian| inside the spacecraft, per grey level
        inside = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        return np.abs(cv2.Laplacian(image, cv2.CV_32F))[inside].mean() / max(image[mask].mean(), 1)

    def background(image, mask):
        far = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
        return np.median(image[far])

    assert mean_over("sunlamp", saturated) > max(0.1, 2.0 * mean_over("synthetic", saturated))
    assert mean_over("sunlamp", contrast) < 0.7 * mean_over("lightbox", contrast)
    assert mean_over("lightbox", texture) > 1.3 * mean_over("synthetic", texture)
    earth = mean_over("earth", background)
    for name in DOMAINS:
        assert mean_over(name, background) < min(25.0, earth - 20.0), name


@pytest.mark.parametrize("camera", ["speed", "speedplus"])
def test_lightbox_pictures_agree_with_their_labels(camera):
    """The lab's light falls where the label's pose puts the spacecraft: nearly every clearly
    lit pixel lies on (or just beside) the spacecraft's faces, also through SPEED+'s lens."""
    lens = speed_camera(160, 100) if camera == "speed" else speedplus_camera(160, 100)
    for image, mask in renders(("lightbox",), lens, seeds=range(4))["lightbox"]:
        near = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        lit = image > 60
        assert lit.sum() > 0.2 * mask.sum()
        assert np.mean(near[lit]) > 0.97
        assert image[mask].mean() > np.median(image[~near]) + 30


def test_plot_domains_sheet_has_a_row_per_domain(domain_root, tmp_path, monkeypatch, capsys):
    tool = load_script("visualization/plot_domains.py", monkeypatch)
    out = tmp_path / "sheet.png"
    assert tool.main(["--root", str(domain_root), "--out", str(out), "--count", "2",
                      "--cell-width", "80", "--landmarks"]) == 0
    sheet = cv2.imread(str(out), cv2.IMREAD_COLOR)
    cell_height = 80 * 200 // 320
    assert sheet.shape == (3 * (cell_height + 4) + 4, 2 * (80 + 4) + 4, 3)
    assert "synthetic, lightbox, sunlamp" in capsys.readouterr().out
    assert tool.main(["--root", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.png")]) == 2
    assert "no readable images" in capsys.readouterr().err
