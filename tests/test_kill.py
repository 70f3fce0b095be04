"""A training SIGKILLed at named points of its saves, then resumed with AUTO_RESUME, ends with
checkpoint.pth, model_best.pth and final_state.pth byte for byte as an uninterrupted run.

The kill comes from the HRNET_KILL_IN_SAVE hook of lib.utils.checkpoint.save_atomic
('<file>:<stage>[:<n>]': the n-th save of that file SIGKILLs the process at 'begin' (nothing
written yet), 'written' (the temporary file is full, not yet renamed) or 'renamed' (the file is
in place)), so no test depends on timing. Each save of a 2-epoch run: model_best.pth after
epoch 0 (the first epoch is always the best so far), checkpoint.pth after epochs 0 and 1,
final_state.pth at the end.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from conftest import TINY_HRNET

from lib.utils.checkpoint import KILL_IN_SAVE_VARIABLE

pytestmark = pytest.mark.slow  # two tiny trainings per case through the command line

CFG = "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml"
RUN = Path("coco", "pose_hrnet", "w32_256x192_adam_lr1e-3")
SAVED = ("checkpoint.pth", "model_best.pth", "final_state.pth")


# (kill point, whether model_best.pth is deleted after the kill as the old save order lost it)
KILLS = [
    ("model_best.pth:written:1", False),   # epoch 0: temporary model_best left behind
    ("model_best.pth:renamed:1", False),   # between the model_best and the checkpoint writes
    ("checkpoint.pth:written:1", False),
    ("checkpoint.pth:renamed:1", False),
    ("checkpoint.pth:renamed:1", True),    # model_best.pth lost: written again at resume
    ("checkpoint.pth:written:2", False),
    ("checkpoint.pth:begin:2", False),
    ("final_state.pth:written:1", False),
    ("final_state.pth:renamed:1", False),  # everything written: the resume changes nothing
]


def _options(data_root: Path, out: Path) -> list[str]:
    return [
        "--cfg", CFG, *TINY_HRNET,
        "DATASET.ROOT", str(data_root), "OUTPUT_DIR", str(out / "output"),
        "LOG_DIR", str(out / "log"), "WORKERS", "0", "GPUS", "(0,)", "SEED", "7",
        "PRINT_FREQ", "100", "TRAIN.BATCH_SIZE_PER_GPU", "4", "TEST.BATCH_SIZE_PER_GPU", "4",
        "TRAIN.END_EPOCH", "2", "TRAIN.LR", "0.002", "DATASET.PROB_HALF_BODY", "0.0",
        "AUTO_RESUME", "True", "DEBUG.DEBUG", "False", "TEST.FLIP_TEST", "False",
    ]


@pytest.fixture(scope="module")
def straight(coco_root: Path, tmp_path_factory: pytest.TempPathFactory, run_tool
             ) -> dict[str, bytes]:
    """The three files of an uninterrupted run, as bytes."""
    out = tmp_path_factory.mktemp("straight")
    run_tool("tools/train.py", *_options(coco_root, out))
    return {name: (out / "output" / RUN / name).read_bytes() for name in SAVED}


@pytest.mark.parametrize(("point", "lose_best"), KILLS,
                         ids=[p + (" + model_best lost" if lost else "") for p, lost in KILLS])
def test_killed_save_resumes_to_the_same_files(point, lose_best, coco_root, straight, tmp_path,
                                               run_tool):
    run_dir = tmp_path / "output" / RUN
    killed = run_tool("tools/train.py", *_options(coco_root, tmp_path), check=False,
                      env={KILL_IN_SAVE_VARIABLE: point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    name, stage, _ = point.split(":")
    temporaries = sorted(p.name for p in run_dir.glob(".*.tmp"))
    if stage == "written":
        assert len(temporaries) == 1 and temporaries[0].startswith(f".{name}.")
    else:
        assert temporaries == []
    if lose_best:
        (run_dir / "model_best.pth").unlink()
    # the first checkpoint.pth is in place from its 'renamed' point of the first epoch on
    has_checkpoint = (run_dir / "checkpoint.pth").exists()
    assert has_checkpoint == (name == "final_state.pth" or point.endswith(":2")
                              or point == "checkpoint.pth:renamed:1")

    resumed = run_tool("tools/train.py", *_options(coco_root, tmp_path))
    assert ("resumed from" in resumed.stderr) == has_checkpoint
    assert ("left by an interrupted save" in resumed.stderr) == (stage == "written")
    if lose_best:
        assert "model_best.pth is missing or stale: written again" in resumed.stderr
    assert sorted(p.name for p in run_dir.glob(".*.tmp")) == []
    for file_name in SAVED:
        assert (run_dir / file_name).read_bytes() == straight[file_name], file_name
