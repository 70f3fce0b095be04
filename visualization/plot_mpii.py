"""Draw MPII predictions (pred.mat) over their images: one PNG per image, one colour per limb.

    python visualization/plot_mpii.py --prediction output/mpii/.../pred.mat \
        --annotations data/mpii/annot/valid.json --images data/mpii/images --save-path DIR

pred.mat is what the MPII evaluation writes: 'preds' N x 16 x 2 in MATLAB's 1-based pixels,
one row per entry of the annotation file, in its order. All people of an image go into one PNG.
"""

import argparse
import sys
from pathlib import Path

import _init_paths  # noqa: F401  (puts the repository root on sys.path)
import cv2
import numpy as np
from report import report
from scipy.io import loadmat

from lib.utils.drawing import MPII_SKELETON, distinct_colors, draw_skeleton, save_image
from lib.utils.io import read_json

NUM_JOINTS = 16  # MPII's joint set, fixed by the format


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prediction", required=True, help="pred.mat of the MPII evaluation")
    parser.add_argument("--annotations", default="data/mpii/annot/valid.json",
                        help="the annotation json the predictions were made for")
    parser.add_argument("--images", default="data/mpii/images", help="folder of the images")
    parser.add_argument("--save-path", default="visualization/mpii/",
                        help="folder for the PNGs (created if absent)")
    return parser.parse_args(argv)


def load_predictions(path: str) -> np.ndarray:
    """N x 16 x 2 predictions in 0-based pixels."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"prediction file not found: {path}")
    try:
        content = loadmat(path)
    except (ValueError, OSError) as error:
        raise ValueError(f"{path}: cannot read as a MATLAB file ({error})") from error
    if "preds" not in content:
        raise KeyError(f"{path}: no variable 'preds' (expected N x {NUM_JOINTS} x 2)")
    preds = np.asarray(content["preds"], dtype=np.float64)
    if preds.ndim != 3 or preds.shape[1:] != (NUM_JOINTS, 2):
        raise ValueError(f"{path}: 'preds' must be N x {NUM_JOINTS} x 2, got {preds.shape}")
    return preds - 1.0  # MATLAB's 1-based pixels to 0-based


def load_image_names(path: str) -> list[str]:
    """The 'image' of every annotation entry, in file order."""
    entries = read_json(path, "annotation file")
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of annotation entries")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "image" not in entry:
            raise KeyError(f"{path}: entry {index} has no 'image' field")
    return [entry["image"] for entry in entries]


def load_inputs(args: argparse.Namespace) -> tuple[np.ndarray, dict[str, list[int]]]:
    """(predictions N x 16 x 2 0-based, image name -> its rows), checked against each other."""
    preds = load_predictions(args.prediction)
    names = load_image_names(args.annotations)
    if len(names) != len(preds):
        raise ValueError(f"{args.prediction} holds {len(preds)} predictions but "
                         f"{args.annotations} has {len(names)} entries: not the same set")
    people: dict[str, list[int]] = {}
    for row, name in enumerate(names):
        people.setdefault(name, []).append(row)
    return preds, people


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        preds, people = load_inputs(args)
    except (FileNotFoundError, KeyError, ValueError) as error:
        print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    colors = distinct_colors(len(MPII_SKELETON))
    written, skipped = 0, []
    for name, rows in people.items():
        image_file = Path(args.images) / name
        image = cv2.imread(str(image_file), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if image is None:
            skipped.append(str(image_file))
            continue
        for row in rows:
            draw_skeleton(image, preds[row], MPII_SKELETON, colors)
        save_image(Path(args.save_path) / f"{Path(name).stem}.png", image)
        written += 1
    return report(written, skipped, args.save_path)


if __name__ == "__main__":
    sys.exit(main())
