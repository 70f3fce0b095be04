"""tools/test.py's evaluation on the SPEED+ test domains writes the one SPEC2021 file of both
domains, and the scores it prints are those tools/speed_score.py gives that file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torchvision.transforms as T

from lib.dataset.speed import SpeedDataset, spec2021_path, submission_path
from lib.spacecraft.files import read_submission

NORMALIZE = T.Compose([T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])


@pytest.fixture(scope="module")
def speedplus_root(speed_root, tmp_path_factory) -> Path:
    """The shared set laid out as SPEED+ with two labelled test domains: the test split as
    lightbox, the validation split as sunlamp (file names differ between the domains)."""
    root = tmp_path_factory.mktemp("speedplus")
    for name in ("camera.json", "keypoints.json"):
        shutil.copy(speed_root / name, root / name)
    shutil.copytree(speed_root / "synthetic", root / "synthetic")
    sources = {"lightbox": (speed_root / "test" / "labels.json", speed_root / "test" / "images"),
               "sunlamp": (speed_root / "synthetic" / "validation.json",
                           speed_root / "synthetic" / "images")}
    for domain, (labels, images) in sources.items():
        (root / domain / "images").mkdir(parents=True)
        shutil.copy(labels, root / domain / "test.json")
        for entry in json.loads(labels.read_text()):
            shutil.copy(images / entry["filename"], root / domain / "images")
    return root


def noisy_predictions(ds: SpeedDataset, seed: int) -> np.ndarray:
    preds = np.ones((len(ds), ds.num_joints, 3))
    preds[:, :, :2] = [rec["joints_3d"][:, :2] for rec in ds.db]
    preds[:, :, :2] += np.random.default_rng(seed).normal(0.0, 2.0, preds[:, :, :2].shape)
    return preds


def test_both_domains_end_in_one_spec2021_file_scored_as_printed(speedplus_root, speed_cfg,
                                                                  make_cfg, run_tool, tmp_path):
    cfg = make_cfg(speed_cfg, {"DATASET.ROOT": str(speedplus_root), "TEST.SPEED_BBOX": "file"})
    printed = {}
    for seed, domain in enumerate(("sunlamp", "lightbox", "sunlamp")):  # sunlamp tested twice
        names = [e["filename"] for e in json.loads(
            (speedplus_root / domain / "test.json").read_text())]
        boxes = tmp_path / f"{domain}_boxes.json"
        boxes.write_text(json.dumps([{"filename": n, "bbox": [0, 0, 320, 200]} for n in names]))
        ds = SpeedDataset(make_cfg(cfg, {"TEST.SPEED_BBOX_FILE": str(boxes)}),
                          str(speedplus_root), f"{domain}/test", False, NORMALIZE)
        table, printed[domain] = ds.evaluate(cfg, noisy_predictions(ds, seed), str(tmp_path))
        assert table["PnP failures"] == 0
        one_domain = read_submission(submission_path(str(tmp_path), f"{domain}/test"))
        assert one_domain.categories == [domain] * len(names)

    combined = spec2021_path(str(tmp_path))
    lines = Path(combined).read_text().splitlines()
    assert len(lines) == 7 and all(len(line.split(",")) == 9 for line in lines)
    assert [line.split(",")[0] for line in lines] == ["lightbox"] * 3 + ["sunlamp"] * 4
    done = run_tool("tools/speed_score.py", "--gt",
                    f"lightbox={speedplus_root / 'lightbox' / 'test.json'}", "--gt",
                    f"sunlamp={speedplus_root / 'sunlamp' / 'test.json'}",
                    "--submission", combined)
    scores = json.loads(done.stdout)
    assert scores["lightbox"]["esa_score"] == printed["lightbox"]
    assert scores["sunlamp"]["esa_score"] == printed["sunlamp"]  # the second sunlamp run's
    assert scores["n"] == 7 and 0 < scores["esa_score"] < 0.1
    assert scores["esa_score"] == pytest.approx(
        (3 * printed["lightbox"] + 4 * printed["sunlamp"]) / 7, abs=1e-15)
