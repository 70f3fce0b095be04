"""`make demo`: the spacecraft pipeline end to end on the embedded data set, on the CPU.

    python tools/speed_demo.py [--data data/speed_synthetic] [--out output/speed_demo]

1. render the embedded SPEED+-layout data set into --data (skipped when it is already there);
2. train the coarse model (whole downscaled image) and the fine model (crop around the
   spacecraft), experiments/speed/hrnet/demo_{coarse,fine}.yaml;
3. two-stage inference on the validation split (tools/test.py's path, TEST.SPEED_BBOX 'model'):
   coarse landmarks -> crops -> fine landmarks -> PnP -> pose, scored; beside it the same fine
   model on oracle (true) boxes;
4. the unlabelled test split the same way -> submission CSV -> tools/speed_score.py against the
   withheld labels;
5. overlay pictures (true and predicted wireframes) and the training curves; where all is.
"""

import _init_paths  # noqa: F401, I001  (puts the repository root on sys.path)

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from lib.config import default_config
from lib.config import update_config
from lib.core.engine import run_test, run_training
from lib.core.speed_two_stage import box_file_path
from lib.dataset.speed import submission_path
from lib.spacecraft.files import read_submission, write_submission
from lib.spacecraft.renderer import write_speed_synthetic
from lib.utils.runtime import processor_summary, resolve_amp, select_device

ROOT = Path(__file__).resolve().parents[1]
SCORE_FIELDS = ("esa_score", "esa_score_spec2021", "rot_err_deg_mean", "rot_err_deg_median",
                "trans_err_m_mean", "trans_err_rel_mean", "n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/speed_synthetic", help="embedded data set folder")
    parser.add_argument("--out", default="output/speed_demo", help="runs, results, pictures")
    parser.add_argument("--log", default="log/speed_demo", help="tensorboard logs")
    parser.add_argument("--coarse-cfg", default="experiments/speed/hrnet/demo_coarse.yaml")
    parser.add_argument("--fine-cfg", default="experiments/speed/hrnet/demo_fine.yaml")
    parser.add_argument("--train", type=int, default=4000, help="training images to render")
    parser.add_argument("--val", type=int, default=100, help="validation images to render")
    parser.add_argument("--test", type=int, default=100, help="test images to render")
    parser.add_argument("--width", type=int, default=640, help="rendered image width")
    parser.add_argument("--height", type=int, default=400, help="rendered image height")
    parser.add_argument("--seed", type=int, default=2019, help="data set seed")
    parser.add_argument("--overlays", type=int, default=6, help="validation images to draw")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="KEY VALUE overrides for both configs, e.g. TRAIN.END_EPOCH 2")
    return parser.parse_args(argv)


def ensure_data(args: argparse.Namespace) -> str:
    """Render the data set unless a complete one is in place."""
    root = Path(args.data)
    needed = [root / "camera.json", root / "keypoints.json", root / "synthetic" / "train.json",
              root / "synthetic" / "validation.json", root / "test" / "test.json",
              root / "test" / "labels.json"]
    if all(path.is_file() for path in needed):
        print(f"== data set: {root} (already there)")
        return "present"
    print(f"== rendering the embedded data set into {root}: {args.train} train, {args.val} "
          f"validation, {args.test} test images of {args.width}x{args.height}")
    write_speed_synthetic(root, args.train, args.val, args.test, args.seed, width=args.width,
                          height=args.height, show_progress=True)
    return "rendered"


def load_config(cfg_file: str, opts: list[str]):
    """The experiment file over a copy of the defaults (the shared defaults stay untouched)."""
    config = default_config()
    update_config(config, argparse.Namespace(cfg=cfg_file, opts=opts))
    return config


def score(labels: Path, submission: str) -> dict:
    """tools/speed_score.py on a submission, in a subprocess, as a user would run it."""
    command = [sys.executable, str(ROOT / "tools" / "speed_score.py"), "--gt", str(labels),
               "--submission", submission]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"speed_score.py failed on {submission}: {done.stderr.strip()}")
    print(f"$ tools/speed_score.py --gt {labels} --submission {submission}\n"
          f"{done.stdout.strip()}")
    return json.loads(done.stdout)


def draw_overlays(data: Path, submission: str, count: int, out_dir: Path) -> Path:
    """visualization/plot_speed.py on the first ``count`` rows of a validation submission."""
    rows = read_submission(submission)
    subset = out_dir / "overlay_rows.csv"
    write_submission(subset, rows.filenames[:count], rows.q[:count], rows.r[:count])
    command = [sys.executable, str(ROOT / "visualization" / "plot_speed.py"),
               "--submission", str(subset), "--labels", str(data / "synthetic" / "validation.json"),
               "--camera", str(data / "camera.json"), "--keypoints", str(data / "keypoints.json"),
               "--images", str(data / "synthetic" / "images"), "--save-path", str(out_dir)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    print(done.stdout.strip() or done.stderr.strip())
    return out_dir


def plot_curves(tb_log_dir: str, out_file: Path) -> bool:
    """tools/plot_curves.py on a run's tensorboard folder; False (and a message) if it fails."""
    command = [sys.executable, str(ROOT / "tools" / "plot_curves.py"), "--log-dir", tb_log_dir,
               "--out", str(out_file)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    print(done.stdout.strip() or done.stderr.strip())
    return done.returncode == 0


def precision(config) -> str:
    """What TRAIN.AMP resolved to on this host (the choice lib.utils.runtime logs)."""
    device = select_device(())  # the device the runs took, without a second GPUS warning
    if not resolve_amp(device, config.TRAIN.AMP, config.CPU_BF16):
        return "fp32"
    return "fp16 autocast" if device.type == "cuda" else "bf16 autocast"


def markdown_table(rows: list[tuple[str, str, dict]]) -> str:
    header = "| split | crops | " + " | ".join(SCORE_FIELDS) + " |"
    lines = [header, "|---" * (len(SCORE_FIELDS) + 2) + "|"]
    for split, crops, result in rows:
        values = " | ".join(f"{result[k]:.4f}" if k != "n" else str(result[k])
                            for k in SCORE_FIELDS)
        lines.append(f"| {split} | {crops} | {values} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.time()
    data = Path(args.data)
    data_state = ensure_data(args)
    rendered_s = time.time() - start
    common = ["DATASET.ROOT", str(data), "OUTPUT_DIR", args.out, "LOG_DIR", args.log,
              *args.opts]

    print("== training the coarse model (whole image)")
    coarse = load_config(args.coarse_cfg, common)
    coarse_run = run_training(coarse, args.coarse_cfg)
    coarse_weights = str(Path(coarse_run["output_dir"]) / "model_best.pth")
    coarse_s = time.time() - start - rendered_s

    print("== training the fine model (crop around the spacecraft)")
    fine_opts = common + ["TEST.SPEED_COARSE_CFG", args.coarse_cfg,
                          "TEST.SPEED_COARSE_MODEL_FILE", coarse_weights]
    fine = load_config(args.fine_cfg, fine_opts)
    fine_run = run_training(fine, args.fine_cfg)
    fine_dir = fine_run["output_dir"]
    fine_opts += ["TEST.MODEL_FILE", str(Path(fine_dir) / "model_best.pth")]
    fine = load_config(args.fine_cfg, fine_opts)
    fine_s = time.time() - start - rendered_s - coarse_s

    print("== validation split, crops from the coarse model (two-stage)")
    run_test(load_config(args.fine_cfg, fine_opts + ["TEST.SPEED_BBOX", "model"]),
             args.fine_cfg)
    print("== validation split, ORACLE crops (true boxes), for comparison only")
    run_test(load_config(args.fine_cfg, fine_opts + ["TEST.SPEED_BBOX", "gt"]), args.fine_cfg)
    print("== test split (unlabelled), crops from the coarse model")
    run_test(load_config(args.fine_cfg, fine_opts + ["DATASET.TEST_SET", "test/test",
                                                     "TEST.SPEED_BBOX", "model"]),
             args.fine_cfg)
    val_boxes = box_file_path(fine_dir, fine.DATASET.TEST_SET)
    test_boxes = box_file_path(fine_dir, "test/test")
    evaluate_s = time.time() - start - rendered_s - coarse_s - fine_s

    print("== scores (tools/speed_score.py)")
    val_labels = data / "synthetic" / "validation.json"
    val_csv = submission_path(fine_dir, fine.DATASET.TEST_SET)
    oracle_csv = submission_path(fine_dir, fine.DATASET.TEST_SET, oracle=True)
    test_csv = submission_path(fine_dir, "test/test")
    rows = [("validation", "coarse model (two-stage)", score(val_labels, val_csv)),
            ("validation", "ORACLE true boxes", score(val_labels, oracle_csv)),
            ("test", "coarse model (two-stage)", score(data / "test" / "labels.json", test_csv))]

    pictures = Path(args.out) / "pictures"
    draw_overlays(data, val_csv, args.overlays, pictures / "overlays")
    curves = [(name, run, pictures / f"curves_{name}.png")
              for name, run in (("coarse", coarse_run), ("fine", fine_run))]
    curves = [(name, out) for name, run, out in curves if plot_curves(run["tb_log_dir"], out)]
    total_s = time.time() - start

    print("\n== spacecraft demo: ESA score (lower is better; oracle boxes for comparison only)")
    print(markdown_table(rows))
    print(f"\ntime: {total_s / 60:.1f} min in all (data {data_state} {rendered_s:.0f} s, coarse "
          f"training {coarse_s:.0f} s, fine training {fine_s:.0f} s, inference + PnP "
          f"{evaluate_s:.0f} s) on {processor_summary()}, training in {precision(fine)}")
    print("where everything is:")
    print(f"  data set               {data}")
    print(f"  coarse model           {coarse_weights}")
    print(f"  fine model             {fine.TEST.MODEL_FILE}")
    print(f"  crop boxes             {val_boxes}, {test_boxes}")
    print(f"  submissions            {val_csv}, {test_csv} (oracle: {oracle_csv})")
    print(f"  overlays               {pictures / 'overlays'}")
    for name, out in curves:
        print(f"  training curves ({name}) {out}")
    print(f"  logs                   {coarse_run['output_dir']}, {fine_dir}, {args.log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
