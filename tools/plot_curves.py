"""Plot a run's training curves (loss, accuracy, validation metrics, learning rate) into one image.

    python tools/plot_curves.py --out curves.png \
        --log-dir log/coco/pose_hrnet/w32_256x192_adam_lr1e-3_2024-01-01-12-00

--log-dir may also be a folder above several runs (e.g. log/): the newest run below it is used.
"""

import argparse
import sys

import _init_paths  # noqa: F401  (puts the repository root on sys.path)

from lib.utils.curves import find_run_dir, plot_curves, read_scalars


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-dir", required=True,
                        help="tensorboard folder of one run, or a folder above runs")
    parser.add_argument("--out", default="curves.png", help="image to write (.png, .pdf, .svg)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run_dir = find_run_dir(args.log_dir)
        scalars = read_scalars(run_dir)
        out = plot_curves(scalars, args.out, title=run_dir.name)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out} from {run_dir} ({', '.join(sorted(scalars))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
