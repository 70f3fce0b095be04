"""A user's mistakes through the command line end with one line `error: ...`, exit status 2,
no traceback, and no file of the run folder changed; Ctrl-C says what was saved (exit 130);
a full disk names the folder and its free space; --debug / HRNET_DEBUG=1 shows the traceback.

The subprocess cases are marked slow (a fresh interpreter imports torch); run_cli itself is
tested in-process too.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY_HRNET, load_script
from datagen import make_mpii_fixture

from lib.models import build_model
from lib.utils.checkpoint import KILL_IN_SAVE_VARIABLE, load_checkpoint_file

REPO = Path(__file__).resolve().parents[1]
CFG = "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml"
RUN = Path("coco", "pose_hrnet", "w32_256x192_adam_lr1e-3")



def _cli_module():
    """tools/cli.py as a module (the tools import it as a sibling script)."""
    return load_script("tools/cli.py", module_name="hrnet_cli")


# --------------------------------------------------------------------------- run_cli in-process

def _exit_of(cli, capsys, error: BaseException, monkeypatch, argv=("tool.py",)):
    monkeypatch.setattr(sys, "argv", list(argv))
    monkeypatch.delenv("HRNET_DEBUG", raising=False)

    def main():
        raise error

    with pytest.raises(SystemExit) as done:
        cli.run_cli(main)
    return done.value.code, capsys.readouterr().err


def test_project_errors_become_one_line_and_exit_2(capsys, monkeypatch):
    from lib.dataset import UnknownDatasetError
    from lib.models import UnknownModelError
    from lib.spacecraft.files import SpeedFileError
    from lib.utils.checkpoint import CheckpointMismatchError, UnsafeCheckpointError

    cli = _cli_module()
    for error, text in [
        (UnknownDatasetError("DATASET.DATASET 'cocoa' is unknown"),
         "error: DATASET.DATASET 'cocoa' is unknown\n"),
        (UnknownModelError("MODEL.NAME 'x' is not a known model"),
         "error: MODEL.NAME 'x' is not a known model\n"),
        (SpeedFileError("train.json entry 3: q has 3 values"),
         "error: train.json entry 3: q has 3 values\n"),
        (UnsafeCheckpointError("'a.pth' stores Python objects"),
         "error: 'a.pth' stores Python objects\n"),
        (CheckpointMismatchError("'a.pth' does not fit\n  PoseHighResolutionNet"),
         "error: 'a.pth' does not fit PoseHighResolutionNet\n"),
    ]:
        code, err = _exit_of(cli, capsys, error, monkeypatch)
        assert (code, err) == (2, text)


def test_debug_lets_the_traceback_through(capsys, monkeypatch):
    cli = _cli_module()
    monkeypatch.setattr(sys, "argv", ["tool.py", "--cfg", "x.yaml", "--debug"])

    def main():
        raise cli.ConfigInputError("config x.yaml: Type mismatch")

    with pytest.raises(cli.ConfigInputError):
        cli.run_cli(main)
    monkeypatch.setattr(sys, "argv", ["tool.py"])
    monkeypatch.setenv("HRNET_DEBUG", "1")
    with pytest.raises(cli.ConfigInputError):
        cli.run_cli(main)


def test_unknown_failures_keep_their_traceback(capsys, monkeypatch):
    cli = _cli_module()
    monkeypatch.setattr(sys, "argv", ["tool.py"])
    monkeypatch.delenv("HRNET_DEBUG", raising=False)

    def main():
        raise ZeroDivisionError("a bug, not a user's mistake")

    with pytest.raises(ZeroDivisionError):
        cli.run_cli(main)


def test_full_disk_names_folder_and_free_space(capsys, monkeypatch, tmp_path):
    cli = _cli_module()
    target = tmp_path / "run" / "checkpoint.pth"
    target.parent.mkdir()
    free = 3 * 2**20 + 2**19  # 3.5 MiB
    monkeypatch.setattr(cli.shutil, "disk_usage",
                        lambda folder: SimpleNamespace(total=2**34, used=2**34 - free, free=free))
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as cause:
        buried = RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos")
        buried.__cause__ = OSError(errno.ENOSPC, "no space left on device", str(target))
        buried.__cause__.__context__ = cause
    code, err = _exit_of(cli, capsys, buried, monkeypatch)
    assert code == 2
    assert err == (f"error: no space left on the device writing {target}: 3.5 MiB free in "
                   f"{target.parent.resolve()}; the files written before are intact\n")


def test_ctrl_c_says_what_was_saved(capsys, monkeypatch, tmp_path):
    cli = _cli_module()
    # the record of the last checkpoint is per process: other tests in this one have saved
    monkeypatch.setattr(cli, "last_saved_checkpoint", lambda: "")
    code, err = _exit_of(cli, capsys, KeyboardInterrupt(), monkeypatch)
    assert code == 130
    assert err == "interrupted: this run wrote no checkpoint; no file was left half-written\n"
    monkeypatch.setattr(cli, "last_saved_checkpoint", lambda: "/run/checkpoint.pth")
    code, err = _exit_of(cli, capsys, KeyboardInterrupt(), monkeypatch)
    assert code == 130 and err.startswith("interrupted: the last checkpoint is "
                                          "/run/checkpoint.pth (resume with AUTO_RESUME True)")


def test_debug_flag_is_taken_out_of_the_overrides():
    cli = _cli_module()
    args = cli.parse_args("t", ["--cfg", "a.yaml", "TRAIN.LR", "0.1", "--debug"])
    assert args.debug and args.opts == ["TRAIN.LR", "0.1"]
    args = cli.parse_args("t", ["--cfg", "a.yaml", "TRAIN.LR", "0.1"])
    assert not args.debug and args.opts == ["TRAIN.LR", "0.1"]
    # a '--' where the options end is no override, in every tool
    args = cli.parse_args("t", ["--cfg", "a.yaml", "--", "TRAIN.LR", "0.1"])
    assert args.opts == ["TRAIN.LR", "0.1"]
    assert cli.overrides(["--", "--", "A"]) == ["--", "A"] and cli.overrides([]) == []


def test_the_demo_reads_its_overrides_after_an_optional_double_dash(monkeypatch):
    demo = load_script("tools/speed_demo.py", monkeypatch)
    for argv in (["--budget-minutes", "8", "--", "TRAIN.LR", "0.1"],
                 ["--budget-minutes", "8", "TRAIN.LR", "0.1"]):
        args = demo.parse_args(argv)
        assert args.budget_minutes == 8 and args.opts == ["TRAIN.LR", "0.1"]


# ------------------------------------------------------------------ the tools, as a user runs them

@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, make_cfg) -> dict[str, Path]:
    """Weight files a user might hand over: good, with a NaN, of another model, pickled code,
    no checkpoint at all, and the broken config files."""
    folder = tmp_path_factory.mktemp("user_files")
    cfg = make_cfg(CFG, TINY_HRNET)
    torch.manual_seed(0)
    weights = build_model(cfg, is_train=False).state_dict()
    paths = {name: folder / f"{name}.pth" for name in
             ("good", "nan", "other", "pickled", "garbage")}
    torch.save(weights, paths["good"])
    broken = {key: value.clone() for key, value in weights.items()}
    broken["final_layer.weight"][0] = float("nan")
    torch.save(broken, paths["nan"])
    torch.save(torch.nn.Linear(3, 2).state_dict(), paths["other"])
    torch.save({"state_dict": weights, "note": Path("x")}, paths["pickled"])
    paths["garbage"].write_bytes(b"this is not a checkpoint\n")
    paths["empty_yaml"] = folder / "empty.yaml"
    paths["empty_yaml"].write_text("\n# nothing here\n")
    paths["bad_yaml"] = folder / "bad.yaml"
    paths["bad_yaml"].write_text("TRAIN:\n  LR: [0.1\n  END_EPOCH: 3\n")
    return paths


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run_folder(tmp_path: Path, files: dict[str, Path]) -> Path:
    """An output folder holding a trained run's files, which no failing command may touch."""
    run_dir = tmp_path / "output" / RUN
    run_dir.mkdir(parents=True)
    for name in ("final_state.pth", "model_best.pth"):
        (run_dir / name).write_bytes(files["good"].read_bytes())
    return tmp_path


def _base(root: Path, out: Path) -> list[str]:
    return [*TINY_HRNET, "DATASET.ROOT", str(root), "OUTPUT_DIR", str(out / "output"),
            "LOG_DIR", str(out / "log"), "WORKERS", "0", "GPUS", "(0,)",
            "TRAIN.BATCH_SIZE_PER_GPU", "4", "TEST.BATCH_SIZE_PER_GPU", "4",
            "DEBUG.DEBUG", "False", "TRAIN.END_EPOCH", "1"]


# (id, tool, config file key or path, extra arguments, text the error line must hold).
# {name} in an argument is the path of that entry of `files`.
CASES = [
    ("yaml syntax", "train", "{bad_yaml}", [], "bad.yaml is not valid YAML"),
    ("empty yaml", "train", "{empty_yaml}", [], "empty.yaml is empty"),
    ("missing yaml", "train", "experiments/nope.yaml", [], "experiments/nope.yaml"),
    ("type mismatch", "train", CFG, ["TRAIN.LR_STEP", "abc"], "TRAIN.LR_STEP"),
    ("odd overrides", "train", CFG, ["TRAIN.LR"], "KEY VALUE pairs"),
    ("unknown key", "train", CFG, ["TRAIN.LRR", "0.1"], "unknown config key 'TRAIN.LRR'"),
    ("image size of one value", "train", CFG, ["MODEL.IMAGE_SIZE", "[64]"],
     "MODEL.IMAGE_SIZE must be two positive ints"),
    ("batch size 0", "train", CFG, ["TRAIN.BATCH_SIZE_PER_GPU", "0"],
     "TRAIN.BATCH_SIZE_PER_GPU must be an int >= 1, got 0"),
    ("negative lr", "train", CFG, ["TRAIN.LR", "-0.001"], "TRAIN.LR must be at least 0"),
    ("zero epochs", "train", CFG, ["TRAIN.END_EPOCH", "0", "AUTO_RESUME", "False"],
     "TRAIN.END_EPOCH must be an int >= 1"),
    ("begin after end", "train", CFG, ["TRAIN.BEGIN_EPOCH", "3", "TRAIN.END_EPOCH", "2"],
     "TRAIN.END_EPOCH must be greater than TRAIN.BEGIN_EPOCH (3), got 2"),
    ("unknown model", "train", CFG, ["MODEL.NAME", "pose_hrnet2"], "MODEL.NAME 'pose_hrnet2'"),
    ("weights as resume checkpoint", "train", CFG,
     ["TRAIN.RESUME", "True", "TRAIN.CHECKPOINT", "{good}"], "not a training checkpoint"),
    ("missing weights", "test", CFG, ["TEST.MODEL_FILE", "/nonexistent/w.pth"],
     "/nonexistent/w.pth"),
    ("not a checkpoint", "test", CFG, ["TEST.MODEL_FILE", "{garbage}"],
     "garbage.pth' is not a readable PyTorch checkpoint"),
    ("nan in weights", "test", CFG, ["TEST.MODEL_FILE", "{nan}"],
     "'final_layer.weight' holds 4 non-finite value(s)"),
    ("other architecture", "test", CFG, ["TEST.MODEL_FILE", "{other}"],
     "other.pth' does not fit"),
    ("pickled code", "test", CFG, ["TEST.MODEL_FILE", "{pickled}"],
     "pickled.pth' stores Python objects"),
    ("model_summary yaml syntax", "model_summary", "{bad_yaml}", [], "bad.yaml is not valid"),
    ("convert missing file", "convert", "", ["--in", "/nonexistent/old.pth", "--out", "{good}"],
     "/nonexistent/old.pth"),
]
SCRIPTS = {"train": "tools/train.py", "test": "tools/test.py",
           "model_summary": "tools/model_summary.py", "convert": "tools/convert_checkpoint.py"}


@pytest.mark.slow
@pytest.mark.parametrize(("tool", "config", "extra", "expected"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_users_mistake_is_one_line(tool, config, extra, expected, coco_root, files,
                                     run_folder, run_tool):
    def fill(text: str) -> str:
        return text.format(**{k: str(v) for k, v in files.items()})

    before = _digests(run_folder)
    good_before = files["good"].read_bytes()
    if tool == "convert":
        args = [fill(a) for a in extra]
    else:
        overrides = _base(coco_root, run_folder) + [fill(a) for a in extra]
        if tool == "model_summary":
            overrides = [fill(a) for a in extra]
        args = ["--cfg", fill(config), *overrides]
    done = run_tool(SCRIPTS[tool], *args, check=False, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert lines and lines[-1].startswith("error: ") and expected in lines[-1], lines[-3:]
    assert sum(line.startswith("error:") for line in lines) == 1
    after = _digests(run_folder)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [k for k in after if k not in before and k.endswith(".pth")]
    assert files["good"].read_bytes() == good_before
    if tool != "test" and not {"TRAIN.RESUME", "MODEL.NAME"} & set(extra):
        assert after == before and len(lines) == 1  # refused before any log was written


@pytest.mark.slow
def test_debug_shows_the_traceback(coco_root, run_folder, run_tool):
    done = run_tool("tools/train.py", "--cfg", CFG, *_base(coco_root, run_folder),
                    "TRAIN.LR_STEP", "abc", "--debug", check=False, timeout=120)
    assert done.returncode == 1 and "Traceback" in done.stderr and "TRAIN.LR_STEP" in done.stderr


@pytest.mark.slow
def test_ctrl_c_names_the_last_checkpoint_and_exits_130(coco_root, tmp_path, run_tool):
    done = run_tool("tools/train.py", "--cfg", CFG, *_base(coco_root, tmp_path),
                    "TRAIN.END_EPOCH", "2", check=False, timeout=300,
                    env={KILL_IN_SAVE_VARIABLE: f"checkpoint.pth:begin:2:{signal.SIGINT.name[3:]}"})
    checkpoint = tmp_path / "output" / RUN / "checkpoint.pth"
    assert done.returncode == 130, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"interrupted: the last checkpoint is {checkpoint} (resume with AUTO_RESUME True); "
        f"no file was left half-written")
    assert load_checkpoint_file(checkpoint)["epoch"] == 1  # the first epoch's, intact


# ------------------------------------------------------------- bad data files, named at load time

MPII_CFG = "experiments/mpii/hrnet/w32_256x256_adam_lr1e-3.yaml"
SPEED_CFG = "experiments/speed/hrnet/demo_fine.yaml"


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory: pytest.TempPathFactory, speed_root: Path, coco_root: Path,
             make_cfg) -> dict[str, Path]:
    """Data a user might really hand over: an MPII set without gt_valid.mat, SPEED sets whose
    camera.json or labels are wrong, folders and files with nothing for infer.py to read."""
    from lib.spacecraft.files import read_labels, write_submission

    folder = tmp_path_factory.mktemp("bad_data")
    paths: dict[str, Path] = {}
    paths["mpii"] = folder / "mpii"
    make_mpii_fixture(paths["mpii"], num_train=2, num_valid=2, seed=0)
    paths["mpii_weights"] = folder / "mpii_tiny.pth"
    torch.manual_seed(0)
    torch.save(build_model(make_cfg(MPII_CFG, TINY_HRNET), is_train=False).state_dict(),
               paths["mpii_weights"])

    paths["speed_camera"] = folder / "speed_camera"
    shutil.copytree(speed_root, paths["speed_camera"])
    camera_file = paths["speed_camera"] / "camera.json"
    camera = json.loads(camera_file.read_text())
    camera["Nu"], camera["Nv"] = 1920, 1200  # SLAB's numbers, for images of 320 x 200
    camera_file.write_text(json.dumps(camera))

    paths["speed_behind"] = folder / "speed_behind"
    shutil.copytree(speed_root, paths["speed_behind"])
    labels_file = paths["speed_behind"] / "synthetic" / "validation.json"
    entries = json.loads(labels_file.read_text())
    write_submission(folder / "submission.csv", *_poses_of(read_labels(labels_file)))
    paths["submission"] = folder / "submission.csv"
    entries[1]["r_Vo2To_vbs_true"][2] *= -1  # a sign flipped by hand
    labels_file.write_text(json.dumps(entries))
    paths["behind_labels"] = labels_file

    def variant(name: str, source: Path, relative: str, edit) -> None:
        """paths[name]: a copy of the data set ``source`` with its JSON file ``relative``
        edited in place (edit returns the new content, or None when it changed its argument)."""
        paths[name] = folder / name
        shutil.copytree(source, paths[name])
        path = paths[name] / relative
        data = json.loads(path.read_text())
        changed = edit(data)
        path.write_text(changed if isinstance(changed, str) else json.dumps(data))

    coco_train = "annotations/person_keypoints_train2017.json"
    variant("coco_cut_json", coco_root, coco_train, lambda d: json.dumps(d)[:300])
    variant("coco_kp_count", coco_root, coco_train,
            lambda d: d["annotations"][0].update(keypoints=d["annotations"][0]["keypoints"][:48]))
    variant("coco_no_kp", coco_root, coco_train, lambda d: d["annotations"][0].pop("keypoints"))
    variant("mpii_not_list", paths["mpii"], "annot/train.json", lambda d: json.dumps({"0": d}))
    variant("mpii_no_vis", paths["mpii"], "annot/train.json", lambda d: d[1].pop("joints_vis"))
    (paths["mpii"] / "annot" / "gt_valid.mat").unlink()  # after the copies, which keep theirs
    speed_train = "synthetic/train.json"
    variant("speed_half", speed_root, speed_train, lambda d: d[0].pop("r_Vo2To_vbs_true"))
    variant("speed_twice", speed_root, speed_train,
            lambda d: d[2].update(filename=d[1]["filename"]))
    variant("speed_q3", speed_root, speed_train,
            lambda d: d[3].update(q_vbs2tango_true=d[3]["q_vbs2tango_true"][:3]))
    variant("speed_camera_zero", speed_root, "camera.json", lambda d: d.update(Nu=0))
    variant("speed_no_landmarks", speed_root, "camera.json", lambda d: None)
    (paths["speed_no_landmarks"] / "keypoints.json").unlink()

    rows = paths["submission"].read_text().splitlines()
    paths["sub_7_columns"] = folder / "sub_7_columns.csv"
    paths["sub_7_columns"].write_text("\n".join([rows[0], rows[1].rsplit(",", 1)[0], *rows[2:]]))
    paths["sub_nan"] = folder / "sub_nan.csv"
    cells = rows[2].split(",")
    paths["sub_nan"].write_text("\n".join([*rows[:2], ",".join([*cells[:5], "nan", *cells[6:]]),
                                           *rows[3:]]))
    paths["clean_labels"] = speed_root / "synthetic" / "validation.json"
    paths["clean_images"] = speed_root / "synthetic" / "images"
    first = rows[0].split(",")
    submissions = {  # the mistakes of a hand-edited or concatenated submission file
        "sub_repeated": [*rows, rows[0]],
        "sub_unknown": [*rows, ",".join(["zzz.jpg", *first[1:]])],
        "sub_missing": rows[:-1],
        "sub_zero_q": [",".join([first[0], "0", "0", "0", "0", *first[5:]]), *rows[1:]],
        "sub_moon": ["moon," + rows[0], *("lightbox," + row for row in rows[1:])],
        "sub_lightbox": ["lightbox," + row for row in rows],
        "sub_bad_header": ["filename,q0,q1,q2,q3,x,y,zz", *rows],
    }
    for name, lines in submissions.items():
        paths[name] = folder / f"{name}.csv"
        paths[name].write_text("\n".join(lines) + "\n")
    paths["labels_cut"] = folder / "labels_cut.json"
    paths["labels_cut"].write_text(paths["clean_labels"].read_text()[:200])

    paths["empty_dir"] = folder / "empty"
    paths["empty_dir"].mkdir()
    paths["text_dir"] = folder / "notes"
    paths["text_dir"].mkdir()
    (paths["text_dir"] / "readme.txt").write_text("images come tomorrow\n")
    paths["broken_dir"] = folder / "broken"
    paths["broken_dir"].mkdir()
    (paths["broken_dir"] / "frame.jpg").write_bytes(b"")  # an interrupted copy
    paths["text_file"] = paths["text_dir"] / "readme.txt"
    return paths


def _poses_of(labels):
    return ([label.filename for label in labels], np.stack([label.q for label in labels]),
            np.stack([label.r for label in labels]))


def _train_args(cfg: str, root: str, out: Path, *extra: str) -> list[str]:
    tiny = [] if cfg == SPEED_CFG else TINY_HRNET
    return ["--cfg", cfg, *tiny, "DATASET.ROOT", root, "OUTPUT_DIR", str(out / "output"),
            "LOG_DIR", str(out / "log"), "WORKERS", "0", "GPUS", "(0,)",
            "TRAIN.BATCH_SIZE_PER_GPU", "2", "TEST.BATCH_SIZE_PER_GPU", "2",
            "TRAIN.END_EPOCH", "1", *extra]


# (id, script, arguments (with {name} for a path of bad_data, {out} for the run folder), the
# text the error line must hold (formatted the same way)).
DATA_CASES = [
    ("mpii gt_valid.mat missing", "tools/train.py",
     ["@train", MPII_CFG, "{mpii}"], "MPII ground-truth file not found: {mpii}/annot/gt_valid.mat"),
    ("mpii gt_valid.mat missing for test", "tools/test.py",
     ["@train", MPII_CFG, "{mpii}", "TEST.MODEL_FILE", "{mpii_weights}"],
     "MPII ground-truth file not found: {mpii}/annot/gt_valid.mat"),
    ("speed camera size not the images'", "tools/train.py",
     ["@train", SPEED_CFG, "{speed_camera}"],
     "{speed_camera}/camera.json: Nu x Nv = 1920 x 1200 but the image "
     "{speed_camera}/synthetic/images/img0000"),
    ("speed position behind the camera", "tools/train.py",
     ["@train", SPEED_CFG, "{speed_behind}"],
     "{behind_labels}: entry 1 ('img000008.jpg'): 'r_Vo2To_vbs_true' z = -"),
    ("speed_score labels behind the camera", "tools/speed_score.py",
     ["--gt", "{behind_labels}", "--submission", "{submission}"],
     "{behind_labels}: entry 1 ('img000008.jpg'): 'r_Vo2To_vbs_true' z = -"),
    ("coco annotations cut short", "tools/train.py", ["@train", CFG, "{coco_cut_json}"],
     "COCO annotation file is not valid JSON: {coco_cut_json}/annotations/"
     "person_keypoints_train2017.json"),
    ("coco 16 keypoints", "tools/train.py", ["@train", CFG, "{coco_kp_count}"],
     "{coco_kp_count}/annotations/person_keypoints_train2017.json: annotation"),
    ("coco annotation without keypoints", "tools/train.py", ["@train", CFG, "{coco_no_kp}"],
     "person_keypoints_train2017.json: annotation"),
    ("mpii annotations not a list", "tools/train.py", ["@train", MPII_CFG, "{mpii_not_list}"],
     "MPII annotation file must hold a list: {mpii_not_list}/annot/train.json"),
    ("mpii entry without joints_vis", "tools/train.py", ["@train", MPII_CFG, "{mpii_no_vis}"],
     "{mpii_no_vis}/annot/train.json: entry 1 has no 'joints_vis' field"),
    ("speed half a pose", "tools/train.py", ["@train", SPEED_CFG, "{speed_half}"],
     "{speed_half}/synthetic/train.json: entry 0 ('img000001.jpg'): has half a pose"),
    ("speed filename twice", "tools/train.py", ["@train", SPEED_CFG, "{speed_twice}"],
     "{speed_twice}/synthetic/train.json: entry 2 ('img000002.jpg'): filename listed twice"),
    ("speed quaternion of 3", "tools/train.py", ["@train", SPEED_CFG, "{speed_q3}"],
     "entry 3 ('img000004.jpg'): 'q_vbs2tango_true' must be 4 finite numbers"),
    ("speed camera of width 0", "tools/train.py", ["@train", SPEED_CFG, "{speed_camera_zero}"],
     "{speed_camera_zero}/camera.json: image size must be positive, got Nu=0"),
    ("speed landmarks missing", "tools/train.py", ["@train", SPEED_CFG, "{speed_no_landmarks}"],
     "{speed_no_landmarks}/keypoints.json: landmark file not found"),
    ("speed_score row of 7 columns", "tools/speed_score.py",
     ["--gt", "{clean_labels}", "--submission", "{sub_7_columns}"], "{sub_7_columns}: line 2"),
    ("speed_score nan in a row", "tools/speed_score.py",
     ["--gt", "{clean_labels}", "--submission", "{sub_nan}"],
     "{sub_nan}: line 3: x = 'nan' is not a finite number"),
    ("speed_score repeated filename", "tools/speed_score.py",
     ["--gt", "{clean_labels}", "--submission", "{sub_repeated}"],
     "{sub_repeated}: line 5: 'img000007.jpg' already given on line 1"),
    ("speed_score unknown filename", "tools/speed_score.py",
     ["--gt", "{clean_labels}", "--submission", "{sub_unknown}"],
     "{sub_unknown}: line 5: unknown filename 'zzz.jpg'"),
    ("speed_score missing row", "tools/speed_score.py",
     ["--gt", "{clean_labels}", "--submission", "{sub_missing}"],
     "{sub_missing}: no row for 'img000010.jpg'"),
    ("speed_score zero quaternion", "tools/speed_score.py",
     ["--gt", "{clean_labels}", "--submission", "{sub_zero_q}"],
     "{sub_zero_q}: line 1: quaternion of 'img000007.jpg' has zero norm"),
    ("speed_score unknown category", "tools/speed_score.py",
     ["--gt", "{clean_labels}", "--submission", "{sub_moon}"],
     "{sub_moon}: line 1: unknown category 'moon'"),
    ("speed_score category without its labels", "tools/speed_score.py",
     ["--gt", "sunlamp={clean_labels}", "--submission", "{sub_lightbox}"],
     "{sub_lightbox}: line 1: category 'lightbox' has no --gt lightbox=LABELS.json"),
    ("speed_score unknown header column", "tools/speed_score.py",
     ["--gt", "{clean_labels}", "--submission", "{sub_bad_header}"],
     "{sub_bad_header}: line 1: header column 8 'zz' is not one of"),
    ("speed_score labels cut short", "tools/speed_score.py",
     ["--gt", "{labels_cut}", "--submission", "{submission}"],
     "labels file is not valid JSON: {labels_cut}"),
    ("infer without weights", "tools/infer.py",
     ["--cfg", CFG, "--image", "{clean_images}", "--out", "{out}/infer"],
     "no weights: give TEST.MODEL_FILE"),
    ("infer weights missing", "tools/infer.py",
     ["--cfg", CFG, "--image", "{clean_images}", "--out", "{out}/infer", "TEST.MODEL_FILE",
      "{out}/nope.pth"], "{out}/nope.pth"),
    ("speed_score labels missing", "tools/speed_score.py",
     ["--gt", "{out}/validation.json", "--submission", "{submission}"],
     "{out}/validation.json"),
    ("infer empty folder", "tools/infer.py",
     ["--cfg", CFG, "--image", "{empty_dir}", "--out", "{out}/infer"],
     "--image: no images to read in the folder {empty_dir} (no file ending in .jpg"),
    ("infer folder of non-images", "tools/infer.py",
     ["--cfg", CFG, "--image", "{text_dir}", "--out", "{out}/infer"],
     "--image: no images to read in the folder {text_dir} (no file ending in .jpg"),
    ("infer folder of unreadable images", "tools/infer.py",
     ["--cfg", CFG, "--image", "{broken_dir}", "--out", "{out}/infer"],
     "no images to read in the folder {broken_dir} (1 file(s) with an image extension, none "
     "readable)"),
    ("infer a text file", "tools/infer.py",
     ["--cfg", CFG, "--image", "{text_file}", "--out", "{out}/infer"],
     "--image: {text_file} is not an image OpenCV can read"),
    ("demo epoch factor below 1", "tools/speed_demo.py",
     ["--data", "{out}/demo_data", "--out", "{out}/demo", "--max-epoch-factor", "0.5"],
     "--max-epoch-factor 0.5: must be at least 1"),
    ("demo negative emulated rate", "tools/speed_demo.py",
     ["--data", "{out}/demo_data", "--out", "{out}/demo", "--emulate-fine-rate", "-140"],
     "--emulate-fine-rate -140: must be a rate in images a second"),
    ("demo negative image count", "tools/speed_demo.py",
     ["--data", "{out}/demo_data", "--out", "{out}/demo", "--val", "-3"],
     "the data set's options: image counts must be >= 0, got train/val/test = (4000, -3, 300)"),
    ("demo experiment file missing", "tools/speed_demo.py",
     ["--data", "{out}/demo_data", "--out", "{out}/demo", "--coarse-cfg", "{out}/nope.yaml"],
     "{out}/nope.yaml"),
    ("demo override of the wrong type", "tools/speed_demo.py",
     ["--data", "{out}/demo_data", "--out", "{out}/demo", "DATASET.PROB_STYLE", "1"],
     "config experiments/speed/hrnet/demo_coarse.yaml + command line: Type mismatch (<class "
     "'float'> vs. <class 'int'>) with values (0.0 vs. 1) for config key: DATASET.PROB_STYLE"),
    ("bench_demo override after --", "tools/bench_demo.py",
     ["--cfg", "experiments/speed/hrnet/demo_fine.yaml", "--", "TRAIN.LR"],
     "config experiments/speed/hrnet/demo_fine.yaml + command line: "),
    ("bench_demo experiment file missing", "tools/bench_demo.py",
     ["--cfg", "{out}/nope.yaml"], "{out}/nope.yaml"),
    ("infer a missing path", "tools/infer.py",
     ["--cfg", CFG, "--image", "{out}/nowhere", "--out", "{out}/infer"],
     "--image: {out}/nowhere does not exist"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("script", "arguments", "expected"),
                         [case[1:] for case in DATA_CASES], ids=[case[0] for case in DATA_CASES])
def test_bad_data_is_one_line_naming_the_file(script, arguments, expected, bad_data,
                                               run_folder, run_tool):
    names = {**{k: str(v) for k, v in bad_data.items()}, "out": str(run_folder)}
    filled = [a.format(**names) for a in arguments]
    if filled[0] == "@train":
        filled = _train_args(filled[1], filled[2], run_folder, *filled[3:])
    before = _digests(run_folder)
    done = run_tool(script, *filled, check=False, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert lines and "error: " in lines[-1] and expected.format(**names) in lines[-1], lines[-3:]
    assert sum("error:" in line for line in lines) == 1
    after = _digests(run_folder)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [k for k in after if k not in before and k.endswith(".pth")]
    assert not (run_folder / "infer").exists()  # infer.py stops before making its folder
