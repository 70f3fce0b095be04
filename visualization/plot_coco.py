"""Draw COCO keypoint results over their images: one PNG per image, one colour per limb.

    python visualization/plot_coco.py \
        --prediction output/.../results/keypoints_val2017_results_0.json \
        --save-path visualization/coco/ [--annotations ANN.json] [--images DIR] \
        [--score-thre 0.3] [--joint-thre 0.2]

Every prediction of the results file whose score reaches --score-thre is drawn (limbs from the
annotation file's person skeleton, joints whose score reaches --joint-thre); images come from
the annotation file's file names. The original's --gt-anno and --image-path still work.
"""

import argparse
import sys
from pathlib import Path

import _init_paths  # noqa: F401  (puts the repository root on sys.path)
import cv2
import numpy as np
from report import report

from lib.utils.drawing import distinct_colors, draw_skeleton, save_image
from lib.utils.io import read_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prediction", required=True, help="COCO keypoint results json")
    parser.add_argument("--save-path", default="visualization/coco/",
                        help="folder for the PNGs (created if absent)")
    parser.add_argument("--annotations", "--gt-anno", dest="annotations",
                        default="data/coco/annotations/person_keypoints_val2017.json",
                        help="COCO keypoint annotation json (image file names, skeleton)")
    parser.add_argument("--images", "--image-path", dest="images",
                        default="data/coco/images/val2017", help="folder of the images")
    parser.add_argument("--score-thre", type=float, default=0.3,
                        help="draw the predictions whose score reaches this")
    parser.add_argument("--joint-thre", type=float, default=0.2,
                        help="draw the joints whose score reaches this")
    return parser.parse_args(argv)


def person_skeleton(annotations: dict, path: str, category_id: int) -> tuple[int, np.ndarray]:
    """(number of keypoints, limbs L x 2 0-based) of the category the results are about."""
    for category in annotations.get("categories", []):
        if category.get("id") == category_id:
            if "skeleton" not in category or "keypoints" not in category:
                raise KeyError(f"{path}: category {category_id} has no 'skeleton' / 'keypoints'")
            return len(category["keypoints"]), np.asarray(category["skeleton"]).reshape(-1, 2) - 1
    raise KeyError(f"{path}: no category with id {category_id} (the results' category_id)")


def group_predictions(results: list, path: str, num_joints: int,
                      score_thre: float) -> dict[int, list[np.ndarray]]:
    """image id -> the K x 3 keypoints (x, y, score) of its predictions above the threshold.

    Every image id of the results file gets an entry, so images without a confident
    prediction are still written (showing that nothing passed)."""
    grouped: dict[int, list[np.ndarray]] = {}
    for index, result in enumerate(results):
        try:
            image_id, score = int(result["image_id"]), float(result["score"])
            keypoints = np.asarray(result["keypoints"], dtype=np.float64).reshape(num_joints, 3)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{path}: result {index} needs image_id, score and {3 * num_joints} keypoint "
                f"values ({error})") from error
        grouped.setdefault(image_id, [])
        if score >= score_thre:
            grouped[image_id].append(keypoints)
    return grouped


def load_inputs(args: argparse.Namespace) -> tuple[dict, dict, np.ndarray]:
    """(image id -> confident keypoints, image id -> file name, skeleton), checked."""
    results = read_json(args.prediction, "results file")
    if not isinstance(results, list) or not results or not isinstance(results[0], dict):
        raise ValueError(f"{args.prediction}: expected a non-empty JSON list of results")
    annotations = read_json(args.annotations, "annotation file")
    num_joints, skeleton = person_skeleton(annotations, args.annotations,
                                           int(results[0].get("category_id", 1)))
    file_names = {int(image["id"]): image["file_name"] for image in annotations.get("images", [])}
    grouped = group_predictions(results, args.prediction, num_joints, args.score_thre)
    unknown = sorted(set(grouped) - set(file_names))
    if unknown:
        raise KeyError(f"{args.annotations}: no image with id {unknown[0]} "
                       f"({len(unknown)} unknown ids in {args.prediction})")
    return grouped, file_names, skeleton


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        grouped, file_names, skeleton = load_inputs(args)
    except (FileNotFoundError, KeyError, ValueError) as error:
        print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    colors = distinct_colors(len(skeleton))
    written, skipped = 0, []
    for image_id in sorted(grouped):
        image_file = Path(args.images) / file_names[image_id]
        image = cv2.imread(str(image_file), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if image is None:
            skipped.append(str(image_file))
            continue
        for keypoints in grouped[image_id]:
            draw_skeleton(image, keypoints[:, :2], skeleton, colors, scores=keypoints[:, 2],
                          threshold=args.joint_thre)
        save_image(Path(args.save_path) / f"{Path(file_names[image_id]).stem}.png", image)
        written += 1
    return report(written, skipped, args.save_path)


if __name__ == "__main__":
    sys.exit(main())
