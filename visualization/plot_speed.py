"""Draw the true (green) and the predicted (red) spacecraft pose over images, errors in a corner.

    python visualization/plot_speed.py --submission submission.csv \
        --labels data/speed_synthetic/synthetic/validation.json \
        --camera data/speed_synthetic/camera.json --keypoints data/speed_synthetic/keypoints.json \
        --images data/speed_synthetic/synthetic/images --save-path visualization/speed/

One PNG per submission row: the model's wireframe (lib.spacecraft.drawing.SPACECRAFT_WIREFRAME) at
both poses, the prediction drawn thinner on top, so a perfect pose shows red lines edged in
green; the top-left box gives the rotation error, the translation error and the ESA score.
"""

import argparse
import sys
from pathlib import Path

import _init_paths  # noqa: F401  (puts the repository root on sys.path)
import cv2
import numpy as np
from report import report

from lib.spacecraft.drawing import SPACECRAFT_WIREFRAME, draw_projected_wireframe
from lib.spacecraft.files import read_camera, read_labels, read_landmarks, read_submission
from lib.spacecraft.scores import esa_score, pose_errors
from lib.utils.drawing import (
    PREDICTION_COLOR,
    TRUTH_COLOR,
    draw_text_box,
    save_image,
    to_bgr,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submission", required=True, help="CSV filename,q0,q1,q2,q3,x,y,z")
    parser.add_argument("--labels", required=True, help="labels json with the true poses")
    parser.add_argument("--camera", required=True, help="camera.json (SPEED+ layout)")
    parser.add_argument("--keypoints", required=True, help="the model's 11 landmarks (N x 3 m)")
    parser.add_argument("--images", required=True, help="folder of the images")
    parser.add_argument("--save-path", default="visualization/speed/",
                        help="folder for the PNGs (created if absent)")
    return parser.parse_args(argv)


def true_poses(labels_file: str, filenames: list[str], submission: str
               ) -> tuple[np.ndarray, np.ndarray]:
    """The labelled (q, r) of every submitted file, N x 4 and N x 3."""
    labels = {label.filename: label for label in read_labels(labels_file)}
    q, r = [], []
    for name in filenames:
        label = labels.get(name)
        if label is None or not label.has_pose:
            what = "is not in" if label is None else "has no pose in"
            raise KeyError(f"{name} (from {submission}) {what} the labels file {labels_file}")
        q.append(label.q)
        r.append(label.r)
    return np.asarray(q).reshape(-1, 4), np.asarray(r).reshape(-1, 3)


def error_lines(rot_rad: float, trans_m: float, trans_rel: float) -> list[str]:
    """The corner text of one image (the two legend lines, then the errors)."""
    return [
        "truth",
        "prediction",
        f"rot err {np.degrees(rot_rad):.2f} deg",
        f"trans err {trans_m:.3f} m ({100.0 * trans_rel:.2f} %)",
        f"score {float(esa_score(rot_rad, trans_rel)):.4f}",
    ]


def load_inputs(args: argparse.Namespace) -> dict:
    """Everything the pictures need, read and checked; bad input raises naming the file."""
    submission = read_submission(args.submission)
    if not submission.filenames:
        raise ValueError(f"{args.submission}: no rows to draw")
    q_gt, r_gt = true_poses(args.labels, submission.filenames, args.submission)
    landmarks = read_landmarks(args.keypoints)
    if len(landmarks) != SPACECRAFT_WIREFRAME.num_landmarks:
        raise ValueError(f"{args.keypoints}: holds {len(landmarks)} landmarks but the spacecraft "
                         f"wireframe joins {SPACECRAFT_WIREFRAME.num_landmarks}")
    return {"filenames": submission.filenames, "q_est": submission.q, "r_est": submission.r,
            "q_gt": q_gt, "r_gt": r_gt, "camera": read_camera(args.camera),
            "landmarks": landmarks}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        inputs = load_inputs(args)
    except (FileNotFoundError, KeyError, ValueError) as error:
        print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    camera, landmarks = inputs["camera"], inputs["landmarks"]
    q_gt, r_gt, q_est, r_est = (inputs[key] for key in ("q_gt", "r_gt", "q_est", "r_est"))
    errors = pose_errors(q_gt, r_gt, q_est, r_est)
    text_colors = [TRUTH_COLOR, PREDICTION_COLOR] + [(255, 255, 255)] * 3

    written, skipped = 0, []
    for k, name in enumerate(inputs["filenames"]):
        image_file = Path(args.images) / name
        image = cv2.imread(str(image_file), cv2.IMREAD_UNCHANGED)
        if image is None:
            skipped.append(str(image_file))
            continue
        image = to_bgr(image)
        thin = max(1, round(min(image.shape[:2]) / 400))
        for q, r, color, width in ((q_gt[k], r_gt[k], TRUTH_COLOR, 2 * thin + 1),
                                   (q_est[k], r_est[k], PREDICTION_COLOR, thin)):
            draw_projected_wireframe(image, SPACECRAFT_WIREFRAME, landmarks, q, r, camera.matrix,
                                     camera.dist_coeffs, color, width)
        lines = error_lines(errors.rot_rad[k], errors.trans_m[k], errors.trans_rel[k])
        draw_text_box(image, lines, text_colors)
        save_image(Path(args.save_path) / f"{Path(name).stem}.png", image)
        written += 1
    return report(written, skipped, args.save_path)


if __name__ == "__main__":
    sys.exit(main())
