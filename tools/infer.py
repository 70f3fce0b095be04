"""Keypoints (and, for the spacecraft, its pose) on new images, with overlay pictures.

  python tools/infer.py --cfg FILE --image PATH_OR_DIR [--bbox-file DETS.json] [--out DIR] \
      TEST.MODEL_FILE model.pth [KEY VALUE ...]

People: one prediction per box of a COCO-style detection file (the whole image without one).
Spacecraft (DATASET.DATASET speed): boxes from the coarse model (TEST.SPEED_COARSE_CFG /
TEST.SPEED_COARSE_MODEL_FILE), landmarks from the fine model, pose from PnP (where it fails,
the guess of lib.spacecraft.fallback, named in "pose_source"). Writes DIR/predictions.json and
one overlay PNG per image; unreadable images are named and skipped.
"""

import argparse
import os
import sys

import _init_paths  # noqa: F401
import cv2
import numpy as np
from cli import load_config, run_cli
from tqdm import tqdm

from lib.config import cfg
from lib.core.predictor import Predictor, keypoint_records
from lib.core.speed_two_stage import coarse_predictor, two_stage_crops
from lib.dataset.detections import group_by_image
from lib.spacecraft.drawing import SPACECRAFT_WIREFRAME, draw_projected_wireframe
from lib.spacecraft.fallback import POSE_SOURCES, fill_failed_poses
from lib.spacecraft.files import load_camera, read_landmarks
from lib.spacecraft.pose_solver import pnp_options, solve_poses
from lib.utils.drawing import (
    COCO_SKELETON,
    MPII_SKELETON,
    PREDICTION_COLOR,
    distinct_colors,
    draw_skeleton,
    draw_text_box,
    save_image,
)
from lib.utils.io import UserFileError, write_json_atomic

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
SKELETONS = {"coco": COCO_SKELETON, "mpii": MPII_SKELETON}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--image", required=True, help="an image or a folder of images")
    parser.add_argument("--bbox-file", default="", help="COCO-style detections (people)")
    parser.add_argument("--out", default="output/infer")
    parser.add_argument("--debug", action="store_true", help="show tracebacks (developers)")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    return parser.parse_args()


def list_images(path: str) -> list[str]:
    """The image files of ``path`` (a folder: those with an image extension and a header OpenCV
    knows, sorted; a file: itself). Nothing to read is an error naming ``path``: an empty
    result would otherwise end as a successful "0 predictions"."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"--image: {path} does not exist")
    if not os.path.isdir(path):
        if not cv2.haveImageReader(path):
            raise UserFileError(f"--image: {path} is not an image OpenCV can read")
        return [path]
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
    images = [os.path.join(path, n) for n in names]
    readable = [image for image in images if cv2.haveImageReader(image)]
    if not readable:
        found = (f"{len(images)} file(s) with an image extension, none readable" if images
                 else f"no file ending in {', '.join(IMAGE_EXTENSIONS)}")
        raise FileNotFoundError(f"--image: no images to read in the folder {path} ({found})")
    for image in sorted(set(images) - set(readable)):
        print(f"skipped {image}: not a readable image", file=sys.stderr)
    return readable


def infer_people(c, predictor: Predictor, images: list[str], bbox_file: str, out_dir: str
                 ) -> list[dict]:
    detections = group_by_image(bbox_file) if bbox_file else None
    skeleton = SKELETONS.get(c.DATASET.DATASET, ())
    colors = distinct_colors(max(1, len(skeleton)))
    records = []
    for path in tqdm(images, desc="images", disable=not sys.stderr.isatty()):
        image = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if image is None:
            print(f"skipped {path}: not a readable image", file=sys.stderr)
            continue
        height, width = image.shape[:2]
        if detections is None:
            boxes = [([0.0, 0.0, float(width), float(height)], 1.0)]
        else:
            boxes = [(b, s) for b, s in detections.get(os.path.basename(path), [])
                     if s >= c.TEST.IMAGE_THRE]
        items = [(path, box, score) for box, score in boxes]
        keypoints = predictor.predict_items(items)
        records += keypoint_records(items, keypoints)
        for person in keypoints:
            draw_skeleton(image, person[:, :2], skeleton, colors, scores=person[:, 2],
                          threshold=c.TEST.IN_VIS_THRE)
        save_image(os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + ".png"),
                   image)
    return records


def readable_images(images: list[str]) -> list[tuple[str, int, int]]:
    """(path, width, height) of the images OpenCV can read; the others are named and skipped,
    and none at all is an error naming them."""
    readable = []
    for path in images:
        image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if image is None:
            print(f"skipped {path}: not a readable image", file=sys.stderr)
            continue
        readable.append((path, image.shape[1], image.shape[0]))
    if not readable:
        named = (images[0] if len(images) == 1 else
                 f"{len(images)} files ({images[0]}, ...)" if images else "none given")
        raise UserFileError(f"--image: no readable image to infer on: {named}")
    return readable


def predict_spacecraft_poses(c, fine: Predictor, images: list[tuple[str, int, int]]
                             ) -> list[dict]:
    """Two-stage pose per (path, width, height): the coarse model's crop (re-framed and chosen
    as configured), the fine model's landmarks in it, PnP with the data set's camera and
    landmark file."""
    camera = load_camera(c.DATASET.ROOT)
    landmarks_3d = read_landmarks(os.path.join(c.DATASET.ROOT, c.DATASET.KEYPOINTS_FILE),
                                  c.MODEL.NUM_JOINTS)
    size = {(w, h) for _, w, h in images} - {(camera.width, camera.height)}
    if size:
        w, h = size.pop()
        raise ValueError(f"images of {w}x{h} but {c.DATASET.ROOT}/camera.json describes "
                         f"{camera.width}x{camera.height}")
    paths = [path for path, _, _ in images]
    boxes, scores, gammas, coarse = two_stage_crops(c, paths, camera, landmarks_3d,
                                                    coarse_predictor(c, fine.device), fine)
    fine_landmarks = fine.predict_items([(path, box.tolist(), 1.0)
                                         for path, box in zip(paths, boxes, strict=True)],
                                        gammas=gammas)
    options = pnp_options(c)
    poses = solve_poses(fine_landmarks[:, :, :2], fine_landmarks[:, :, 2], landmarks_3d,
                        camera.matrix, camera.dist_coeffs, **options)
    filled = fill_failed_poses(poses, fine_landmarks, landmarks_3d, camera.matrix,
                               camera.dist_coeffs, coarse,
                               max_distance=c.TEST.SPEED_MAX_DISTANCE, **options)
    return [{"image": path, "bbox": boxes[k].tolist(), "score": float(scores[k]),
             "gamma": float(gammas[k]),
             "keypoints": np.round(fine_landmarks[k], 3).tolist(),
             "success": bool(poses.success[k]), "reason": poses.reasons[k],
             "pose_source": POSE_SOURCES[filled.source[k]],
             "q": filled.q[k].tolist(), "r": filled.r[k].tolist()}
            for k, path in enumerate(paths)]


def infer_spacecraft(c, predictor: Predictor, images: list[str], out_dir: str) -> list[dict]:
    """Two-stage pose per image; overlay: the predicted wireframe and the landmarks."""
    records = predict_spacecraft_poses(c, predictor, readable_images(images))
    camera = load_camera(c.DATASET.ROOT)
    landmarks = read_landmarks(os.path.join(c.DATASET.ROOT, c.DATASET.KEYPOINTS_FILE))
    for record in tqdm(records, desc="overlays", disable=not sys.stderr.isatty()):
        image = cv2.imread(record["image"], cv2.IMREAD_COLOR)
        draw_projected_wireframe(image, SPACECRAFT_WIREFRAME, landmarks, np.array(record["q"]),
                                 np.array(record["r"]), camera.matrix, camera.dist_coeffs,
                                 PREDICTION_COLOR)
        for x, y, _ in record["keypoints"]:
            cv2.circle(image, (int(round(x)), int(round(y))), 3, (0, 255, 255), -1)
        lines = [f"r = {np.round(record['r'], 2).tolist()} m"]
        if not record["success"]:
            lines.append(f"PnP failed ({record['reason']}): {record['pose_source']}")
        draw_text_box(image, lines)
        name = os.path.splitext(os.path.basename(record["image"]))[0] + ".png"
        save_image(os.path.join(out_dir, name), image)
    return records


def main() -> None:
    args = parse_args()
    args.opts = [option for option in args.opts if option != "--debug"]
    c = cfg.clone()
    load_config(c, args)
    images = list_images(args.image)
    if not c.TEST.MODEL_FILE:
        raise FileNotFoundError("no weights: give TEST.MODEL_FILE path/to/model.pth")
    predictor = Predictor.from_weights(c, c.TEST.MODEL_FILE)
    os.makedirs(args.out, exist_ok=True)  # only once the inputs are known to be usable
    if c.DATASET.DATASET == "speed":
        records = infer_spacecraft(c, predictor, images, args.out)
    else:
        records = infer_people(c, predictor, images, args.bbox_file, args.out)
    out_file = os.path.join(args.out, "predictions.json")
    write_json_atomic(out_file, records)
    print(f"{len(records)} predictions for {len(images)} images -> {out_file} "
          f"(overlays in {args.out})")


if __name__ == "__main__":
    run_cli(main)
