"""A user's mistakes through the command line end with one line `error: ...`, exit status 2,
no traceback, and no file of the run folder changed; Ctrl-C says what was saved (exit 130);
a full disk names the folder and its free space; --debug / HRNET_DEBUG=1 shows the traceback.

The subprocess cases are marked slow (a fresh interpreter imports torch); run_cli itself is
tested in-process too.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from datagen import make_coco_fixture

from lib.models import build_model
from lib.utils.checkpoint import KILL_IN_SAVE_VARIABLE, load_checkpoint_file

REPO = Path(__file__).resolve().parents[1]
CFG = "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml"
RUN = Path("coco", "pose_hrnet", "w32_256x192_adam_lr1e-3")

TINY_HRNET = [
    "MODEL.INIT_WEIGHTS", "False", "MODEL.PRETRAINED", "''",
    "MODEL.IMAGE_SIZE", "[64, 96]", "MODEL.HEATMAP_SIZE", "[16, 24]",
    "MODEL.EXTRA.STAGE2.NUM_CHANNELS", "[4, 8]", "MODEL.EXTRA.STAGE2.NUM_BLOCKS", "[1, 1]",
    "MODEL.EXTRA.STAGE3.NUM_MODULES", "1", "MODEL.EXTRA.STAGE3.NUM_CHANNELS", "[4, 8, 16]",
    "MODEL.EXTRA.STAGE3.NUM_BLOCKS", "[1, 1, 1]",
    "MODEL.EXTRA.STAGE4.NUM_MODULES", "1", "MODEL.EXTRA.STAGE4.NUM_CHANNELS",
    "[4, 8, 16, 32]", "MODEL.EXTRA.STAGE4.NUM_BLOCKS", "[1, 1, 1, 1]",
]


def _cli_module():
    """tools/cli.py as a module (the tools import it as a sibling script)."""
    sys.path.insert(0, str(REPO / "tools"))
    spec = importlib.util.spec_from_file_location("hrnet_cli", REPO / "tools" / "cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


# ------------------------------------------------------------------ the tools, as a user runs them

@pytest.fixture(scope="module")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    make_coco_fixture(root, "train2017", num_images=4, seed=1)
    make_coco_fixture(root, "val2017", num_images=2, seed=2)
    return root


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
