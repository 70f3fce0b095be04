"""tools/train.py and tools/test.py end to end on generated COCO fixtures, on the CPU.

One module-scoped fixture trains a tiny HRNet for 2 epochs; the tests then inspect its
outputs, evaluate it with tools/test.py, resume an interrupted run, train with torchrun and
check the NaN guard.
"""

import glob
import json
import logging
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from datagen import make_coco_fixture

from lib.utils.checkpoint import load_checkpoint_file

pytestmark = pytest.mark.slow  # whole training / testing runs through the command line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml"
RUN = os.path.join("coco", "pose_hrnet", "w32_256x192_adam_lr1e-3")

# A tiny HRNet (4 branches of 8..64 channels, one module per stage) at 96 x 64 input.
TINY_HRNET = [
    "MODEL.INIT_WEIGHTS", "False", "MODEL.PRETRAINED", "''",
    "MODEL.IMAGE_SIZE", "[64, 96]", "MODEL.HEATMAP_SIZE", "[16, 24]",
    "MODEL.EXTRA.STAGE2.NUM_CHANNELS", "[8, 16]", "MODEL.EXTRA.STAGE2.NUM_BLOCKS", "[1, 1]",
    "MODEL.EXTRA.STAGE3.NUM_MODULES", "1", "MODEL.EXTRA.STAGE3.NUM_CHANNELS", "[8, 16, 32]",
    "MODEL.EXTRA.STAGE3.NUM_BLOCKS", "[1, 1, 1]",
    "MODEL.EXTRA.STAGE4.NUM_MODULES", "1", "MODEL.EXTRA.STAGE4.NUM_CHANNELS",
    "[8, 16, 32, 64]", "MODEL.EXTRA.STAGE4.NUM_BLOCKS", "[1, 1, 1, 1]",
]


def _opts(data_root, out, extra=None):
    opts = TINY_HRNET + [
        "DATASET.ROOT", str(data_root), "OUTPUT_DIR", str(out / "output"),
        "LOG_DIR", str(out / "log"), "WORKERS", "0", "GPUS", "(0,)", "SEED", "7",
        "PRINT_FREQ", "1", "TRAIN.BATCH_SIZE_PER_GPU", "4", "TEST.BATCH_SIZE_PER_GPU", "4",
        "TRAIN.END_EPOCH", "2", "TRAIN.LR", "0.002", "DATASET.PROB_HALF_BODY", "0.0",
    ]
    for key, value in (extra or {}).items():
        opts += [key, str(value)]
    return opts


def _run(script, opts, nproc=0, check=True, cpu=False):
    env = dict(os.environ, OMP_NUM_THREADS="1", CI="1")
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", "29531", script]
    else:
        cmd = [sys.executable, script]
    proc = subprocess.run(cmd + ["--cfg", CFG] + opts, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    make_coco_fixture(root, "train2017", num_images=8, seed=1)
    make_coco_fixture(root, "val2017", num_images=4, seed=2)
    return root


@pytest.fixture(scope="module")
def trained(coco_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    proc = _run("tools/train.py", _opts(coco_root, out))
    return out, proc


def _scalars(log_root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = glob.glob(os.path.join(str(log_root), RUN + "_*"))
    assert len(runs) == 1, runs
    acc = EventAccumulator(runs[0])
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_training_writes_every_output(trained):
    out, proc = trained
    run_dir = out / "output" / RUN
    for name in ("checkpoint.pth", "model_best.pth", "final_state.pth",
                 "w32_256x192_adam_lr1e-3.yaml", "pose_hrnet.py",
                 "results/keypoints_val2017_results_0.json"):
        assert (run_dir / name).is_file(), name
    assert glob.glob(str(run_dir / "*_train.log"))
    assert glob.glob(str(run_dir / "val" / "val_0_pred.jpg"))  # DEBUG savers of the config
    state = load_checkpoint_file(run_dir / "checkpoint.pth")
    assert state["epoch"] == 2 and state["model"] == "pose_hrnet"
    assert {"state_dict", "best_state_dict", "perf", "optimizer", "scheduler", "scaler",
            "rng"} <= set(state)
    assert "| Arch | AP | Ap .5 | AP .75 | AP (M) | AP (L) | AR | AR .5 | AR .75 | AR (M) | " \
           "AR (L) |" in proc.stderr


def test_tensorboard_scalars_and_decreasing_loss(trained):
    out, _ = trained
    scalars = _scalars(out / "log")
    for tag in ("train_loss", "train_acc", "valid_loss", "valid_acc", "learning_rate",
                "valid/AP"):
        assert tag in scalars, (tag, sorted(scalars))
    losses = scalars["train_loss"]
    per_epoch = len(losses) // 2
    assert sum(losses[per_epoch:]) / per_epoch < sum(losses[:per_epoch]) / per_epoch
    assert len(scalars["valid_loss"]) == 2


def test_test_py_prints_the_table_and_writes_results(trained, coco_root):
    out, _ = trained
    final = out / "output" / RUN / "final_state.pth"
    test_out = out / "test"
    proc = _run("tools/test.py", _opts(coco_root, test_out) + ["TEST.MODEL_FILE", str(final)])
    assert "| Arch | AP | Ap .5 |" in proc.stderr
    assert "| pose_hrnet | " in proc.stderr
    assert (test_out / "output" / RUN / "results" / "keypoints_val2017_results_0.json").is_file()


def _perf(proc) -> float:
    line = [ln for ln in proc.stdout.splitlines() if "perf indicator" in ln][0]
    return float(line.rsplit(" ", 1)[1].rstrip(")"))


def test_bf16_channels_last_testing_keeps_the_fixture_ap(trained, coco_root):
    out, _ = trained
    final = str(out / "output" / RUN / "final_state.pth")
    results = "output/" + RUN + "/results/keypoints_val2017_results_0.json"
    runs = {}
    for name, extra in (("plain", []), ("fast", ["TEST.AMP", "True", "MODEL.CHANNELS_LAST",
                                                 "True", "TEST.FUSE_CONV_BN", "True"])):
        proc = _run("tools/test.py", _opts(coco_root, out / name)
                    + ["TEST.MODEL_FILE", final, *extra])
        with open(out / name / results) as f:
            runs[name] = (_perf(proc), sorted(json.load(f), key=lambda r: r["image_id"]))
    (plain_ap, plain), (fast_ap, fast) = runs["plain"], runs["fast"]
    assert abs(fast_ap - plain_ap) <= 0.1
    assert len(plain) == len(fast) > 0
    moved = [abs(a - b) for p, f in zip(plain, fast, strict=True)
             for a, b in zip(p["keypoints"], f["keypoints"], strict=True)]
    assert np.median(moved) < 0.5  # pixels: the same argmax almost everywhere


def test_auto_resume_is_bit_exact(trained, coco_root, tmp_path):
    out, _ = trained
    _run("tools/train.py", _opts(coco_root, tmp_path, {"TRAIN.END_EPOCH": 1}))
    proc = _run("tools/train.py", _opts(coco_root, tmp_path, {"AUTO_RESUME": True}))
    assert "resumed from" in proc.stderr
    resumed = torch.load(tmp_path / "output" / RUN / "final_state.pth", weights_only=True)
    straight = torch.load(out / "output" / RUN / "final_state.pth", weights_only=True)
    assert resumed.keys() == straight.keys()
    for key in straight:
        assert torch.equal(resumed[key], straight[key]), key


def test_weight_average_is_what_gets_saved_and_resumes_bit_exactly(coco_root, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    log = _run("tools/train.py", _opts(coco_root, straight, {"TRAIN.EMA_DECAY": 0.9})).stderr
    steps_per_epoch = int(re.search(r"Epoch: \[0\]\[0/(\d+)\]", log).group(1))
    _run("tools/train.py", _opts(coco_root, split, {"TRAIN.EMA_DECAY": 0.9, "TRAIN.END_EPOCH": 1}))
    proc = _run("tools/train.py", _opts(coco_root, split, {"TRAIN.EMA_DECAY": 0.9,
                                                           "AUTO_RESUME": True}))
    assert "resumed from" in proc.stderr
    final = torch.load(straight / "output" / RUN / "final_state.pth", weights_only=True)
    checkpoint = load_checkpoint_file(str(straight / "output" / RUN / "checkpoint.pth"))
    average = checkpoint["ema_state_dict"]
    assert int(average["n_averaged"]) == 2 * steps_per_epoch  # one update per step
    # final_state (and model_best) hold the average, in the model's own key schema ...
    assert final.keys() == checkpoint["state_dict"].keys()
    for key in final:
        assert torch.equal(final[key], average["module." + key]), key
    # ... which is not the last step's weights
    weight = next(k for k in final if k.endswith("conv1.weight"))
    assert not torch.equal(final[weight], checkpoint["state_dict"][weight])
    resumed = torch.load(split / "output" / RUN / "final_state.pth", weights_only=True)
    for key in final:
        assert torch.equal(resumed[key], final[key]), key


def test_validating_every_second_epoch_validates_after_epochs_2_and_3_only(coco_root, tmp_path):
    log = _run("tools/train.py", _opts(coco_root, tmp_path, {"TRAIN.END_EPOCH": 3,
                                                             "TRAIN.VALIDATE_EVERY": 2})).stderr
    assert log.count("| Arch |") == 2  # one AP table per validation
    assert log.count("=> saving checkpoint") == 3  # checkpoint.pth after every epoch
    first_validation = log.index("Test: [0/")  # after epoch index 1, not after 0
    assert log.index("Epoch: [1][0/") < first_validation < log.index("Epoch: [2][0/")
    checkpoint = load_checkpoint_file(str(tmp_path / "output" / RUN / "checkpoint.pth"))
    assert checkpoint["epoch"] == 3 and math.isfinite(checkpoint["best_perf"])


def test_weight_average_decay_must_lie_between_0_and_1(coco_root, tmp_path):
    proc = _run("tools/train.py", _opts(coco_root, tmp_path, {"TRAIN.EMA_DECAY": 1.5}), check=False)
    assert proc.returncode != 0 and "TRAIN.EMA_DECAY must lie between 0 and 1" in proc.stderr


def test_torchrun_two_processes_match_single_process_validation(coco_root, tmp_path):
    # gloo on the CPU unless there is a GPU for each process (then NCCL)
    cpu = torch.cuda.device_count() < 2
    proc = _run("tools/train.py", _opts(coco_root, tmp_path, {"TRAIN.END_EPOCH": 1}), nproc=2,
                cpu=cpu)
    assert "identical on all 2 ranks" in proc.stderr
    run_dir = tmp_path / "output" / RUN
    ddp_perf = load_checkpoint_file(run_dir / "checkpoint.pth")["perf"]
    single = _run("tools/test.py", _opts(coco_root, tmp_path / "single")
                  + ["TEST.MODEL_FILE", str(run_dir / "final_state.pth")], cpu=cpu)
    assert _perf(single) == pytest.approx(ddp_perf, abs=1e-4)
    # the gathered predictions equal the single-process ones, person by person
    results = "results/keypoints_val2017_results_0.json"
    with open(run_dir / results) as f:
        ddp = json.load(f)
    with open(tmp_path / "single" / "output" / RUN / results) as f:
        one = json.load(f)
    key = lambda r: (r["image_id"], round(r["score"], 4))  # noqa: E731
    ddp, one = sorted(ddp, key=key), sorted(one, key=key)
    assert len(ddp) == len(one) > 0
    for a, b in zip(ddp, one, strict=True):
        assert a["image_id"] == b["image_id"]
        assert a["keypoints"] == pytest.approx(b["keypoints"], abs=1e-3)


def test_nan_guard_stops_with_a_clear_message(coco_root, tmp_path):
    proc = _run("tools/train.py", _opts(coco_root, tmp_path, {"TRAIN.OPTIMIZER": "sgd",
                                                              "TRAIN.LR": 1e12}), check=False)
    assert proc.returncode == 1
    assert "training loss is" in proc.stderr and "epoch 0, iteration" in proc.stderr
    assert "Last good checkpoint: none written yet" in proc.stderr
    assert not (tmp_path / "output" / RUN / "checkpoint.pth").exists()


def test_test_py_on_mpii_prints_the_part_table(tmp_path):
    from datagen import make_mpii_fixture

    from lib.config import cfg, merge_from_file, merge_from_list
    from lib.models import build_model

    make_mpii_fixture(tmp_path / "mpii", num_train=2, num_valid=3, seed=3)
    mpii_cfg = "experiments/mpii/hrnet/w32_256x256_adam_lr1e-3.yaml"
    tiny = TINY_HRNET[4:] + ["MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE", "[16, 16]"]
    c = cfg.clone()
    merge_from_file(c, mpii_cfg)
    merge_from_list(c, tiny)
    weights = tmp_path / "random.pth"
    torch.save(build_model(c, is_train=False).state_dict(), weights)
    env = dict(os.environ, OMP_NUM_THREADS="1", CI="1")
    proc = subprocess.run(
        [sys.executable, "tools/test.py", "--cfg", mpii_cfg, *tiny,
         "DATASET.ROOT", str(tmp_path / "mpii"), "OUTPUT_DIR", str(tmp_path / "out"),
         "LOG_DIR", str(tmp_path / "log"), "WORKERS", "0", "TEST.MODEL_FILE", str(weights)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("| Arch | Head | Shoulder | Elbow | Wrist | Hip | Knee | Ankle | Mean | Mean@0.1 |"
            in proc.stderr)
    assert (tmp_path / "out" / "mpii" / "pose_hrnet" / "w32_256x256_adam_lr1e-3"
            / "pred.mat").is_file()


def test_is_better_never_picks_a_diverged_epoch():
    from lib.core.engine import _is_better

    assert _is_better(0.1, None, True) and _is_better(0.6, 0.5, True)
    assert not _is_better(0.5, 0.5, True) and not _is_better(0.4, 0.5, True)
    assert _is_better(2.0, 3.0, False) and not _is_better(3.5, 3.0, False)
    # an unlabelled validation split (perf NaN): the latest epoch is model_best
    assert _is_better(float("nan"), None, True) and _is_better(float("nan"), float("nan"), False)
    assert _is_better(0.2, float("nan"), True)
    # non-finite predictions (validate's worst value): never best, not even the first epoch
    assert not _is_better(-math.inf, None, True) and not _is_better(math.inf, None, False)
    assert not _is_better(-math.inf, 0.0, True) and not _is_better(math.inf, 9.0, False)


def test_nan_predictions_score_worst_and_write_plain_numbers(coco_root, tmp_path, make_cfg,
                                                             caplog):
    from torch.utils.data import DataLoader

    from lib.core.function import validate
    from lib.core.loss import build_criterion
    from lib.dataset import build_dataset
    from lib.models import build_model
    from lib.utils.transforms import input_transform

    cfg = make_cfg(CFG, TINY_HRNET + ["DATASET.ROOT", str(coco_root), "WORKERS", "0",
                                      "DEBUG.DEBUG", "False", "TEST.BATCH_SIZE_PER_GPU", "4"])
    dataset = build_dataset(cfg, cfg.DATASET.TEST_SET, False, input_transform())
    torch.manual_seed(0)
    model = build_model(cfg, is_train=False).eval()
    criterion = build_criterion(cfg)
    results = tmp_path / "results" / "keypoints_val2017_results_0.json"

    clean = validate(cfg, DataLoader(dataset, batch_size=4), dataset, model, criterion,
                     str(tmp_path), str(tmp_path))
    assert math.isfinite(clean) and 0.0 <= clean <= 1.0

    with torch.no_grad():
        model.final_layer.weight[0] = float("nan")  # joint 0's heatmap is NaN everywhere
    with caplog.at_level(logging.WARNING):
        perf = validate(cfg, DataLoader(dataset, batch_size=4), dataset, model, criterion,
                        str(tmp_path), str(tmp_path))
    assert perf == -math.inf  # AP: higher is better, so the worst value is -inf
    warned = [r.getMessage() for r in caplog.records
              if "non-finite predictions" in r.getMessage()]
    assert warned and f"{len(dataset)} of {len(dataset)} samples" in warned[0]

    def refuse(constant):
        raise AssertionError(f"{constant} literal in {results}")

    people = json.loads(results.read_text(), parse_constant=refuse)
    assert people
    for person in people:
        x, y, confidence = person["keypoints"][:3]  # joint 0: blanked to (0, 0), confidence 0
        assert (x, y, confidence) == (0, 0, 0)
        assert all(math.isfinite(v) for v in person["keypoints"]) and math.isfinite(
            person["score"])


def test_a_replanned_run_trains_to_its_new_end_on_a_schedule_that_follows(coco_root, tmp_path):
    """run_training's ``replan`` lengthens a 2-epoch cosine run to 3 after its first epoch: three
    epochs are trained, replan is not asked after the last, and the learning rate follows the
    cosine of a 3-epoch schedule from the step after the replan on."""
    from lib.config import default_config, merge_from_file
    from lib.core.engine import run_training

    cfg = default_config()
    merge_from_file(cfg, os.path.join(ROOT, CFG))
    cfg.merge_from_list(_opts(coco_root, tmp_path, {
        "TRAIN.LR_SCHEDULER": "cosine", "TRAIN.WARMUP_EPOCHS": 0.0, "TRAIN.END_EPOCH": 2}))
    cfg.freeze()
    asked = []

    def replan(done, epoch_seconds):
        asked.append((done, len(epoch_seconds)))
        return 3

    run = run_training(cfg, os.path.join(ROOT, CFG), replan=replan)
    assert asked == [(1, 1), (2, 2)]
    assert len(run["epoch_seconds"]) == 3 and cfg.TRAIN.END_EPOCH == 3 and cfg.is_frozen()
    checkpoint = load_checkpoint_file(str(tmp_path / "output" / RUN / "checkpoint.pth"))
    assert checkpoint["epoch"] == 3
    # each epoch's first LR, as logged: the cosine of 3 epochs from the second epoch on (of 2
    # epochs: 0.002 x [1, 0.5, 0]; the second would be 0.001 had the step after the replan kept
    # the LR set for the old end)
    assert _scalars(tmp_path / "log")["learning_rate"] == pytest.approx([0.002, 0.0015, 0.0005])
