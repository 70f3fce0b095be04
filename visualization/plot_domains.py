"""A sheet of a rendered SPEED+-layout set's domains side by side: rows synthetic, lightbox,
sunlamp (those present), a few images each, to see what a model trained on one must face.

    python visualization/plot_domains.py --root data/speed_synthetic --count 4 \
        --out visualization/domains.png [--landmarks]

Row synthetic takes synthetic/train.json's first images, the others <domain>/labels.json's (or
test.json's when the truth is absent). --landmarks draws the true wireframe and landmarks
(lib.spacecraft.drawing) over each image, to check that labels and pictures agree.
"""

import argparse
import sys
from pathlib import Path

import _init_paths  # noqa: F401  (puts the repository root on sys.path)
import cv2

from lib.spacecraft.domains import DOMAINS
from lib.spacecraft.drawing import SPACECRAFT_WIREFRAME, domain_sheet, draw_projected_wireframe
from lib.spacecraft.files import PoseLabel, read_camera, read_labels, read_landmarks
from lib.utils.drawing import TRUTH_COLOR, save_image, to_bgr

# (row label, labels files to try in order, images folder), relative to the set's root
ROWS = [("synthetic", ["synthetic/train.json"], "synthetic/images")] + [
    (name, [f"{name}/labels.json", f"{name}/test.json"], f"{name}/images") for name in DOMAINS]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder written by make_speed_synthetic")
    parser.add_argument("--count", type=int, default=4, help="images per row")
    parser.add_argument("--out", default="visualization/domains.png", help="the sheet (PNG)")
    parser.add_argument("--cell-width", type=int, default=320,
                        help="width of each image on the sheet, pixels")
    parser.add_argument("--landmarks", action="store_true",
                        help="draw the true wireframe and landmarks over the images")
    return parser.parse_args(argv)


def row_labels(root: Path, candidates: list[str], count: int) -> list[PoseLabel] | None:
    """The first ``count`` entries of the first labels file that exists; None if none does."""
    for name in candidates:
        if (root / name).is_file():
            return read_labels(root / name)[:count]
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(args.root)
    if args.count < 1 or args.cell_width < 16:
        print("error: --count must be >= 1 and --cell-width >= 16", file=sys.stderr)
        return 2
    wireframe = None
    try:
        if args.landmarks:
            wireframe = (read_camera(root / "camera.json"), read_landmarks(root / "keypoints.json"))
        rows, skipped = [], []
        for label, candidates, folder in ROWS:
            labels = row_labels(root, candidates, args.count)
            if not labels:
                continue
            images = []
            for entry in labels:
                image = cv2.imread(str(root / folder / entry.filename), cv2.IMREAD_UNCHANGED)
                if image is None:
                    skipped.append(str(root / folder / entry.filename))
                    continue
                image = to_bgr(image)
                if wireframe is not None and entry.has_pose:
                    camera, landmarks = wireframe
                    thickness = max(1, round(min(image.shape[:2]) / 400))
                    draw_projected_wireframe(image, SPACECRAFT_WIREFRAME, landmarks, entry.q,
                                             entry.r, camera.matrix, camera.dist_coeffs,
                                             TRUTH_COLOR, thickness)
                images.append(image)
            rows.append((label, images))
        if not any(images for _, images in rows):
            raise ValueError(f"{root}: no readable images of any domain "
                             f"({', '.join(label for label, _, _ in ROWS)})")
        sheet = domain_sheet(rows, args.cell_width)
    except (FileNotFoundError, KeyError, ValueError) as error:
        print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    save_image(args.out, sheet)
    for name in skipped:
        print(f"skipped unreadable image {name}", file=sys.stderr)
    print(f"wrote a sheet of {sum(len(images) for _, images in rows)} images "
          f"({', '.join(label for label, _ in rows)}) to {args.out}")
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
