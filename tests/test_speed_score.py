"""tools/speed_score.py end to end, on the test labels of the session's rendered set."""
import json
from pathlib import Path

import numpy as np
import pytest

from lib.spacecraft.files import read_labels, write_submission

SCORE = "tools/speed_score.py"


@pytest.fixture
def labels_path(speed_root: Path) -> Path:
    """Three labelled test images (rows 2-4 of a submission, after the header)."""
    return speed_root / "test" / "labels.json"


def submission_of(labels, path, turn_first_deg=0.0, drop=None, extra_line=None):
    q = np.stack([label.q for label in labels])
    r = np.stack([label.r for label in labels])
    half = np.deg2rad(turn_first_deg) / 2
    # right-multiplying by a turn about z keeps |q| = 1 and rotates by exactly that angle
    turn = np.array([np.cos(half), 0, 0, np.sin(half)])
    q0, q1, q2, q3 = q[0]
    w0, _, _, w3 = turn
    q[0] = [q0 * w0 - q3 * w3, q1 * w0 + q2 * w3, q2 * w0 - q1 * w3, q3 * w0 + q0 * w3]
    names = [label.filename for label in labels]
    keep = [i for i in range(len(names)) if i != drop]
    write_submission(path, [names[i] for i in keep], q[keep], r[keep])
    if extra_line:
        path.write_text(path.read_text() + extra_line + "\n")
    return path


def test_perfect_submission_scores_zero(labels_path, run_tool, tmp_path):
    labels = read_labels(labels_path)
    sub = submission_of(labels, tmp_path / "sub.csv")
    done = run_tool(SCORE, "--gt", labels_path, "--submission", sub,
                    "--camera", labels_path.parents[1] / "camera.json")
    result = json.loads(done.stdout)
    assert set(result) == {"esa_score", "esa_score_spec2021", "rot_err_deg_mean",
                           "rot_err_deg_median", "trans_err_m_mean", "trans_err_rel_mean", "n"}
    assert result["n"] == 3
    assert result["esa_score"] == pytest.approx(0.0, abs=1e-6)
    assert result["esa_score_spec2021"] == 0.0


def test_one_rotated_image_gives_the_known_score(labels_path, run_tool, tmp_path):
    sub = submission_of(read_labels(labels_path), tmp_path / "sub.csv", turn_first_deg=6.0)
    result = json.loads(run_tool(SCORE, "--gt", labels_path, "--submission", sub).stdout)
    assert result["esa_score"] == pytest.approx(np.deg2rad(6.0) / 3, abs=1e-6)
    assert result["rot_err_deg_mean"] == pytest.approx(2.0, abs=1e-5)
    assert result["rot_err_deg_median"] == pytest.approx(0.0, abs=1e-5)


def test_missing_row_exits_2_naming_the_file(labels_path, run_tool, tmp_path):
    labels = read_labels(labels_path)
    sub = submission_of(labels, tmp_path / "sub.csv", drop=1)
    done = run_tool(SCORE, "--gt", labels_path, "--submission", sub, check=False)
    assert done.returncode == 2
    assert f"no row for '{labels[1].filename}'" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "extra, message",
    [("img999999.jpg,1,0,0,0,0,0,5", "row 5: unknown filename 'img999999.jpg'"),
     ("img000001.jpg,1,0,0", "row 5: expected 8 columns")],
)
def test_bad_rows_exit_2_naming_the_row(labels_path, run_tool, tmp_path, extra, message):
    sub = submission_of(read_labels(labels_path), tmp_path / "sub.csv", extra_line=extra)
    done = run_tool(SCORE, "--gt", labels_path, "--submission", sub, check=False)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
