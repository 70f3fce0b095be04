"""tools/speed_score.py end to end: hand-written files in ESA's layouts against scores computed by
hand, and the test labels of the session's rendered set."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from lib.spacecraft.files import read_labels, write_submission

SCORE = "tools/speed_score.py"
KEYS = ["esa_score", "esa_score_spec2021", "rot_err_deg_mean", "rot_err_deg_median",
        "trans_err_m_mean", "trans_err_rel_mean", "n"]

# Four images, two per SPEC2021 test domain, with errors known by hand:
#   A (lightbox): exact attitude, 1 mm off at 5 m:      e_q 0,       e_t 0.0002 (< 2.173 mm/m)
#   B (lightbox): turned 10 deg about its x axis:        e_q 10 deg,  e_t 0
#   C (sunlamp):  -q (the same attitude), 0.6 m off at 3 m: e_q 0,    e_t 0.2
#   D (sunlamp):  turned 90 deg about z, 0.5 m off at 10 m: e_q 90 deg, e_t 0.05
C5, S5 = np.cos(np.radians(5.0)), np.sin(np.radians(5.0))  # half of 10 deg
TRUTH = {
    "img000001.jpg": ([1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 5.0]),
    "img000002.jpg": ([0.5, 0.5, 0.5, 0.5], [0.3, -0.4, 12.0]),
    "img000003.jpg": ([0.0, 1.0, 0.0, 0.0], [1.0, 2.0, 2.0]),
    "img000004.jpg": ([1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 10.0]),
}
# q_B * (cos 5, sin 5, 0, 0) worked out by hand with the Hamilton product
Q_B = [0.5 * (C5 - S5), 0.5 * (C5 + S5), 0.5 * (C5 + S5), 0.5 * (C5 - S5)]
ESTIMATE = {
    "img000001.jpg": ([1.0, 0.0, 0.0, 0.0], [0.001, 0.0, 5.0]),
    "img000002.jpg": (Q_B, [0.3, -0.4, 12.0]),
    "img000003.jpg": ([0.0, -1.0, 0.0, 0.0], [1.0, 2.0, 2.6]),
    "img000004.jpg": ([np.sqrt(0.5), 0.0, 0.0, np.sqrt(0.5)], [0.0, 0.5, 10.0]),
}
CATEGORY = {"img000001.jpg": "lightbox", "img000002.jpg": "lightbox",
            "img000003.jpg": "sunlamp", "img000004.jpg": "sunlamp"}
TEN = np.radians(10.0)
EXPECTED = {
    "lightbox": {"esa_score": (0.0002 + TEN) / 2, "esa_score_spec2021": TEN / 2,
                 "rot_err_deg_mean": 5.0, "rot_err_deg_median": 5.0,
                 "trans_err_m_mean": 0.0005, "trans_err_rel_mean": 0.0001, "n": 2},
    "sunlamp": {"esa_score": (0.2 + np.pi / 2 + 0.05) / 2,
                "esa_score_spec2021": (0.2 + np.pi / 2 + 0.05) / 2,
                "rot_err_deg_mean": 45.0, "rot_err_deg_median": 45.0,
                "trans_err_m_mean": 0.55, "trans_err_rel_mean": 0.125, "n": 2},
    "all": {"esa_score": (0.0002 + TEN + 0.2 + np.pi / 2 + 0.05) / 4,
            "esa_score_spec2021": (TEN + 0.2 + np.pi / 2 + 0.05) / 4,
            "rot_err_deg_mean": 25.0, "rot_err_deg_median": 5.0,
            "trans_err_m_mean": 1.101 / 4, "trans_err_rel_mean": 0.2502 / 4, "n": 4},
}


def write_labels_json(path: Path, names) -> Path:
    """A SPEED+ labels file (the list of entries with the '_true' keys) for these images."""
    path.write_text(json.dumps([{"filename": name, "q_vbs2tango_true": TRUTH[name][0],
                                 "r_Vo2To_vbs_true": TRUTH[name][1]} for name in names]))
    return path


def row(name: str, category: bool = False) -> str:
    """One submission line written by hand, as the kits write it."""
    q, r = ESTIMATE[name]
    cells = [CATEGORY[name]] * category + [name] + [repr(float(v)) for v in (*q, *r)]
    return ",".join(cells) + "\n"


def assert_scores(result: dict, expected: dict) -> None:
    assert result["n"] == expected["n"]
    for key in KEYS[:-1]:
        assert result[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key


@pytest.fixture
def spec2021(tmp_path: Path) -> dict:
    """lightbox / sunlamp labels and one SPEC2021 file with both domains' rows, mixed."""
    order = ["img000004.jpg", "img000002.jpg", "img000003.jpg", "img000001.jpg"]
    sub = tmp_path / "submission.csv"
    sub.write_text("".join(row(name, category=True) for name in order))
    return {"lightbox": write_labels_json(tmp_path / "lightbox.json",
                                          ["img000001.jpg", "img000002.jpg"]),
            "sunlamp": write_labels_json(tmp_path / "sunlamp.json",
                                         ["img000003.jpg", "img000004.jpg"]),
            "submission": sub}


def test_spec2021_file_scored_per_category_and_together(spec2021, run_tool):
    done = run_tool(SCORE, "--gt", f"lightbox={spec2021['lightbox']}",
                    "--gt", f"sunlamp={spec2021['sunlamp']}",
                    "--submission", spec2021["submission"])
    result = json.loads(done.stdout)
    assert list(result) == [*KEYS, "lightbox", "sunlamp"]
    assert list(result["lightbox"]) == KEYS and list(result["sunlamp"]) == KEYS
    assert_scores(result, EXPECTED["all"])
    assert_scores(result["lightbox"], EXPECTED["lightbox"])
    assert_scores(result["sunlamp"], EXPECTED["sunlamp"])


def test_worst_lists_the_images_of_highest_score_and_their_share(spec2021, run_tool):
    done = run_tool(SCORE, "--gt", f"lightbox={spec2021['lightbox']}",
                    "--gt", f"sunlamp={spec2021['sunlamp']}",
                    "--submission", spec2021["submission"], "--worst", "2")
    result = json.loads(done.stdout)
    assert_scores(result, EXPECTED["all"])  # the scores do not move
    d_score, c_score = np.pi / 2 + 0.05, 0.2
    assert [(w["category"], w["filename"]) for w in result["worst"]] == [
        ("sunlamp", "img000004.jpg"), ("sunlamp", "img000003.jpg")]
    assert result["worst"][0]["esa_score"] == pytest.approx(d_score, rel=1e-9)
    assert result["worst"][0]["rot_err_deg"] == pytest.approx(90.0, rel=1e-9)
    assert result["worst"][1]["trans_err_rel"] == pytest.approx(0.2, rel=1e-9)
    total = 0.0002 + TEN + c_score + d_score
    assert result["worst_share"] == pytest.approx((d_score + c_score) / total, rel=1e-9)
    done = run_tool(SCORE, "--gt", f"lightbox={spec2021['lightbox']}",
                    "--submission", spec2021["submission"], "--worst", "-1", check=False)
    assert done.returncode == 2 and "--worst -1" in done.stderr


def test_kit_file_and_older_headered_file_score_the_same(tmp_path, run_tool):
    names = list(TRUTH)
    labels = write_labels_json(tmp_path / "labels.json", names)
    kit = tmp_path / "kit.csv"
    kit.write_text("".join(row(name) for name in reversed(names)))
    # our older runs: a header line, here with the columns in another order and a BOM
    older = tmp_path / "older.csv"
    older.write_text("filename,x,y,z,q0,q1,q2,q3\n" + "".join(
        ",".join([name, *map(repr, ESTIMATE[name][1]), *map(repr, map(float, ESTIMATE[name][0]))])
        + "\n" for name in names), encoding="utf-8-sig")
    for sub in (kit, older):
        result = json.loads(run_tool(SCORE, "--gt", labels, "--submission", sub).stdout)
        assert list(result) == KEYS
        assert_scores(result, EXPECTED["all"])


def test_plain_gt_scores_a_spec2021_file_of_one_domain(spec2021, tmp_path, run_tool):
    sub = tmp_path / "lightbox_only.csv"
    sub.write_text(row("img000002.jpg", True) + row("img000001.jpg", True))
    result = json.loads(run_tool(SCORE, "--gt", spec2021["lightbox"], "--submission",
                                 sub).stdout)
    assert list(result) == KEYS
    assert_scores(result, EXPECTED["lightbox"])
    # with the category form and only that domain's labels: the same, plus its own object
    result = json.loads(run_tool(SCORE, "--gt", f"lightbox={spec2021['lightbox']}",
                                 "--submission", sub).stdout)
    assert list(result) == [*KEYS, "lightbox"]
    assert_scores(result, EXPECTED["lightbox"])
    assert_scores(result["lightbox"], EXPECTED["lightbox"])


def failing(run_tool, *args) -> str:
    """stderr of a run that must exit 2 with one line and no traceback."""
    done = run_tool(SCORE, *map(str, args), check=False)
    assert done.returncode == 2, done.stdout
    assert "Traceback" not in done.stderr
    return done.stderr.strip()


@pytest.mark.parametrize(
    "lines, message",
    [
        # a sunlamp row but no --gt sunlamp=...
        (None, r"submission.csv: line 1: category 'sunlamp' has no --gt sunlamp=LABELS.json"),
        # a lightbox image under sunlamp: unknown there, named with its line
        (["img000001.jpg,sunlamp", "img000002.jpg", "img000003.jpg", "img000004.jpg"],
         r"bad.csv: line 1: unknown sunlamp filename 'img000001.jpg' \(not in .*sunlamp.json\); "
         r"it is a lightbox image"),
        (["img000002.jpg", "img000003.jpg", "img000004.jpg"],
         r"bad.csv: no lightbox row for 'img000001.jpg' listed in .*lightbox.json \(entry 0\)"),
        (["img000001.jpg", "img000002.jpg", "img000003.jpg", "img000004.jpg",
          "lightbox,img000099.jpg,1,0,0,0,0,0,5"],
         r"bad.csv: line 5: unknown lightbox filename 'img000099.jpg'"),
        (["img000001.jpg", "img000002.jpg", "img000002.jpg,sunlamp"],
         r"bad.csv: line 3: 'img000002.jpg' is under 'sunlamp' here and under 'lightbox' on "
         r"line 2"),
        (["img000001.jpg", "moon,img000003.jpg,1,0,0,0,0,0,5"],
         r"bad.csv: line 2: unknown category 'moon'"),
    ],
)
def test_bad_spec2021_file_exits_2_naming_the_line(spec2021, tmp_path, run_tool, lines,
                                                     message):
    gts = ["--gt", f"lightbox={spec2021['lightbox']}", "--gt", f"sunlamp={spec2021['sunlamp']}"]
    # lines: a name alone is its row under its own category; "NAME,CATEGORY" its row under
    # that category; anything else goes in as it stands. None: the good file, one --gt only.
    sub = spec2021["submission"]
    if lines is None:
        gts = gts[:2]
    else:
        sub = tmp_path / "bad.csv"
        text = ""
        for line in lines:
            name, _, category = line.partition(",")
            if name in ESTIMATE and category in ("", "lightbox", "sunlamp"):
                text += (category + "," if category else "") + row(name, not category)
            else:
                text += line + "\n"
        sub.write_text(text)
    error = failing(run_tool, *gts, "--submission", sub)
    assert len(error.splitlines()) == 1
    assert re.search(message, error), error


def test_category_gt_on_a_kit_file_and_bad_gt_arguments(spec2021, tmp_path, run_tool):
    kit = tmp_path / "kit.csv"
    kit.write_text(row("img000001.jpg") + row("img000002.jpg"))
    error = failing(run_tool, "--gt", f"lightbox={spec2021['lightbox']}", "--submission", kit)
    assert "kit.csv: has no category column (8 columns)" in error
    sub = spec2021["submission"]
    assert "unknown category 'lightbx'" in failing(
        run_tool, "--gt", f"lightbx={spec2021['lightbox']}", "--submission", sub)
    assert "not both" in failing(run_tool, "--gt", spec2021["lightbox"],
                                 "--gt", f"sunlamp={spec2021['sunlamp']}", "--submission", sub)
    assert "given twice" in failing(run_tool, "--gt", f"sunlamp={spec2021['sunlamp']}",
                                    "--gt", f"sunlamp={spec2021['sunlamp']}", "--submission", sub)


def test_the_tool_imports_no_torch(spec2021, run_tool):
    done = run_tool(SCORE, "--gt", f"lightbox={spec2021['lightbox']}", "--gt",
                    f"sunlamp={spec2021['sunlamp']}", "--submission", spec2021["submission"],
                    env={"PYTHONPROFILEIMPORTTIME": "1"})
    imported = re.findall(r"^import time:.*\|\s*(\S+)\s*$", done.stderr, re.MULTILINE)
    assert "lib.spacecraft.files" in imported
    assert not [name for name in imported if name.split(".")[0] == "torch"]


# ---------------------------------------------------------------- the session's rendered set
@pytest.fixture
def labels_path(speed_root: Path) -> Path:
    """Three labelled test images (lines 1-3 of a kit submission)."""
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
    assert not sub.read_text().startswith("filename")  # the kit's rows: no header
    done = run_tool(SCORE, "--gt", labels_path, "--submission", sub,
                    "--camera", labels_path.parents[1] / "camera.json")
    result = json.loads(done.stdout)
    assert list(result) == KEYS
    assert result["n"] == 3
    assert result["esa_score"] == pytest.approx(0.0, abs=1e-6)
    assert result["esa_score_spec2021"] == 0.0


def test_one_rotated_image_gives_the_known_score(labels_path, run_tool, tmp_path):
    sub = submission_of(read_labels(labels_path), tmp_path / "sub.csv", turn_first_deg=6.0)
    result = json.loads(run_tool(SCORE, "--gt", labels_path, "--submission", sub).stdout)
    assert result["esa_score"] == pytest.approx(np.deg2rad(6.0) / 3, abs=1e-6)
    assert result["rot_err_deg_mean"] == pytest.approx(2.0, abs=1e-5)
    assert result["rot_err_deg_median"] == pytest.approx(0.0, abs=1e-5)
    assert "worst" not in result
    ranked = json.loads(run_tool(SCORE, "--gt", labels_path, "--submission", sub,
                                 "--worst", "5").stdout)
    first = read_labels(labels_path)[0].filename
    assert [w["filename"] for w in ranked["worst"]][0] == first
    assert len(ranked["worst"]) == 3 and "category" not in ranked["worst"][0]
    assert ranked["worst"][0]["rot_err_deg"] == pytest.approx(6.0, abs=1e-5)
    assert ranked["worst_share"] == pytest.approx(1.0, abs=1e-6)


def test_missing_row_exits_2_naming_the_file(labels_path, run_tool, tmp_path):
    labels = read_labels(labels_path)
    sub = submission_of(labels, tmp_path / "sub.csv", drop=1)
    error = failing(run_tool, "--gt", labels_path, "--submission", sub)
    assert f"sub.csv: no row for '{labels[1].filename}'" in error
    assert len(error.splitlines()) == 1


@pytest.mark.parametrize(
    "extra, message",
    [("img999999.jpg,1,0,0,0,0,0,5", "line 4: unknown filename 'img999999.jpg'"),
     ("img000001.jpg,1,0,0", "line 4: expected 8 columns")],
)
def test_bad_rows_exit_2_naming_the_line(labels_path, run_tool, tmp_path, extra, message):
    sub = submission_of(read_labels(labels_path), tmp_path / "sub.csv", extra_line=extra)
    assert message in failing(run_tool, "--gt", labels_path, "--submission", sub)
