"""Small synthetic data sets in the real COCO and MPII formats: for tests, for benchmarks
(``tools/bench_data.py`` without ``--data``) and for engine runs without the real data.

People are drawn as a coloured blob per joint (one colour per joint type) joined by grey limbs
on a smooth, lightly textured background, so a model can learn them. Everything is seeded:
the same arguments give the same files (bytes included).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from scipy.io import savemat

from lib.utils.drawing import COCO_SKELETON
from lib.utils.io import atomic_write, write_bytes_atomic, write_json_atomic

COCO_KEYPOINT_NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
]
# Joint positions of a standing person facing the camera, as fractions of its box (x, y).
COCO_TEMPLATE = np.array([
    [0.50, 0.10], [0.55, 0.07], [0.45, 0.07], [0.60, 0.09], [0.40, 0.09], [0.70, 0.25],
    [0.30, 0.25], [0.80, 0.42], [0.20, 0.42], [0.85, 0.58], [0.15, 0.58], [0.62, 0.58],
    [0.38, 0.58], [0.63, 0.78], [0.37, 0.78], [0.64, 0.97], [0.36, 0.97],
])

MPII_JOINT_NAMES = ["rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor", "neck",
                    "head", "rwri", "relb", "rsho", "lsho", "lelb", "lwri"]
MPII_TEMPLATE = np.array([
    [0.36, 0.97], [0.37, 0.78], [0.38, 0.58], [0.62, 0.58], [0.63, 0.78], [0.64, 0.97],
    [0.50, 0.58], [0.50, 0.25], [0.50, 0.18], [0.50, 0.02], [0.15, 0.58], [0.20, 0.42],
    [0.30, 0.25], [0.70, 0.25], [0.80, 0.42], [0.85, 0.58],
])
# Drawn in this order (the fixtures' pixels depend on it, so it is not MPII_SKELETON's).
MPII_LIMBS = [[0, 1], [1, 2], [2, 6], [3, 6], [3, 4], [4, 5], [6, 7], [7, 8], [8, 9],
              [7, 12], [12, 11], [11, 10], [7, 13], [13, 14], [14, 15]]


def _palette(num_joints: int) -> list[tuple[int, int, int]]:
    hues = np.linspace(0, 179, num_joints, endpoint=False).astype(np.uint8)
    hsv = np.stack([hues, np.full_like(hues, 255), np.full_like(hues, 255)], axis=1)
    bgr = cv2.cvtColor(hsv[None], cv2.COLOR_HSV2BGR)[0]
    return [tuple(int(v) for v in color) for color in bgr]


def _background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth colour regions plus fine grain, roughly the JPEG size of a photograph."""
    coarse = rng.integers(40, 215, size=(6, 8, 3)).astype(np.uint8)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    image += rng.normal(0, 6, size=image.shape).astype(np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def _draw_person(image: np.ndarray, joints: np.ndarray, visible: np.ndarray,
                 limbs: Sequence[Sequence[int]], radius: int) -> None:
    palette = _palette(len(joints))
    for a, b in limbs:
        if visible[a] and visible[b]:
            pa = tuple(int(round(v)) for v in joints[a])
            pb = tuple(int(round(v)) for v in joints[b])
            cv2.line(image, pa, pb, (128, 128, 128), max(1, radius // 2), cv2.LINE_AA)
    for j, (x, y) in enumerate(joints):
        if visible[j]:
            cv2.circle(image, (int(round(x)), int(round(y))), radius, palette[j], -1, cv2.LINE_AA)


def _place_people(num_people: int, width: int, height: int, template: np.ndarray,
                  rng: np.random.Generator) -> list[tuple[list[float], np.ndarray]]:
    """One box (x, y, w, h) and template joints per person, side by side, never overlapping."""
    slot = width / num_people
    people = []
    for p in range(num_people):
        w = 0.7 * slot * rng.uniform(0.85, 1.0)
        h = 0.8 * height * rng.uniform(0.85, 1.0)
        x = p * slot + (slot - w) * rng.uniform(0.2, 0.8)
        y = (height - h) * rng.uniform(0.2, 0.8)
        jitter = rng.normal(0, 0.02, size=template.shape)
        joints = np.array([x, y]) + (template + jitter).clip(0, 1) * np.array([w, h])
        people.append(([float(x), float(y), float(w), float(h)], joints))
    return people


def _write_jpeg(path: str, image: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise OSError(f"could not encode {path}")
    write_bytes_atomic(path, encoded.tobytes())


def make_coco_fixture(root: str | os.PathLike, image_set: str = "val2017", num_images: int = 4,
                      people_per_image: int = 2, width: int = 160, height: int = 120,
                      seed: int = 0, with_ignored: bool = True) -> dict[str, Any]:
    """A COCO keypoints data set under ``root``: annotations json, JPEGs, a detection file.

    Every person gets a box of medium COCO area (32^2..96^2 for the default size). Joints are
    mostly visible (v=2), some occluded (v=1) and some unlabelled (v=0, x=y=0). With
    ``with_ignored`` the first image also holds a crowd annotation and a person without
    keypoints, which training must skip. Test sets ('test' in the name) get
    ``image_info_{set}.json`` without annotations and images under ``images/test2017``.

    Returns: root, image_set, ann_file, image_dir, det_file, image_ids, image_paths,
    annotations (the person annotations written, without the ignored ones), detections.
    """
    root = os.fspath(root)
    rng = np.random.default_rng(seed)
    is_test = "test" in image_set
    image_dir = os.path.join(root, "images", "test2017" if is_test else image_set)
    images, annotations, detections, image_paths = [], [], [], []
    ann_id = 1
    for n in range(num_images):
        image_id = 1000 + 7 * n
        file_name = f"{image_id:012d}.jpg"
        image = _background(width, height, rng)
        for bbox, joints in _place_people(people_per_image, width, height, COCO_TEMPLATE, rng):
            v = np.full(len(joints), 2)
            v[rng.random(len(joints)) < 0.1] = 1
            v[rng.random(len(joints)) < 0.05] = 0
            v[0] = 2  # at least one labelled joint
            xy = np.where(v[:, None] > 0, joints, 0.0)
            _draw_person(image, joints, v == 2, COCO_SKELETON, max(2, int(bbox[3] / 25)))
            annotations.append({
                "id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                "bbox": bbox, "area": 0.6 * bbox[2] * bbox[3],
                "num_keypoints": int((v > 0).sum()),
                "keypoints": np.column_stack([xy, v]).reshape(-1).tolist(),
            })
            ann_id += 1
            box = (np.array(bbox) + rng.normal(0, 1.0, 4)).tolist()
            detections.append({"image_id": image_id, "category_id": 1, "bbox": box,
                               "score": float(rng.uniform(0.5, 1.0))})
        path = os.path.join(image_dir, file_name)
        _write_jpeg(path, image)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        image_paths.append(path)

    person_annotations = list(annotations)
    if with_ignored and num_images:
        first = images[0]["id"]
        zero = [0.0] * (3 * len(COCO_KEYPOINT_NAMES))
        annotations.append({"id": ann_id, "image_id": first, "category_id": 1, "iscrowd": 1,
                            "bbox": [0, 0, width / 2, height / 2], "area": width * height / 8,
                            "num_keypoints": 0, "keypoints": zero})
        annotations.append({"id": ann_id + 1, "image_id": first, "category_id": 1, "iscrowd": 0,
                            "bbox": [1, 1, 30, 40], "area": 600.0, "num_keypoints": 0,
                            "keypoints": zero})
        detections.append({"image_id": first, "category_id": 1, "bbox": [5, 5, 20, 20],
                           "score": 0.05})
        detections.append({"image_id": first, "category_id": 2, "bbox": [5, 5, 20, 20],
                           "score": 0.99})

    categories = [{"id": 1, "name": "person", "supercategory": "person",
                   "keypoints": COCO_KEYPOINT_NAMES,
                   "skeleton": [[a + 1, b + 1] for a, b in COCO_SKELETON]}]  # 1-based
    if is_test:
        ann_file = os.path.join(root, "annotations", f"image_info_{image_set}.json")
        write_json_atomic(ann_file, {"images": images, "categories": categories})
    else:
        ann_file = os.path.join(root, "annotations", f"person_keypoints_{image_set}.json")
        write_json_atomic(ann_file, {"images": images, "annotations": annotations,
                               "categories": categories})
    det_file = os.path.join(root, "person_detection_results", f"COCO_{image_set}_detections.json")
    write_json_atomic(det_file, detections)
    return {
        "root": root, "image_set": image_set, "ann_file": ann_file, "image_dir": image_dir,
        "det_file": det_file, "image_ids": [im["id"] for im in images],
        "image_paths": image_paths, "annotations": person_annotations,
        "detections": detections,
    }


def _mpii_split(root: str, image_set: str, num: int, width: int, height: int,
                rng: np.random.Generator, first_index: int) -> tuple[list[dict], np.ndarray,
                                                                      np.ndarray, np.ndarray]:
    """Entries of one split (1-based pixels) plus joints (N x 16 x 2, 1-based), visibility and
    head boxes (N x 2 x 2: top-left, bottom-right)."""
    entries, all_joints, all_vis, head_boxes = [], [], [], []
    for n in range(num):
        name = f"{first_index + n:09d}.jpg"
        image = _background(width, height, rng)
        (bbox, joints), = _place_people(1, width, height, MPII_TEMPLATE, rng)
        vis = (rng.random(len(joints)) >= 0.1).astype(int)
        vis[[8, 9]] = 1  # the head is always labelled: it defines PCKh's unit
        _draw_person(image, joints, vis == 1, MPII_LIMBS, max(2, int(bbox[3] / 25)))
        _write_jpeg(os.path.join(root, "images", name), image)

        joints_1 = joints + 1
        head_center = (joints_1[8] + joints_1[9]) / 2
        side = abs(joints_1[8, 1] - joints_1[9, 1])
        head_boxes.append([head_center - side / 2, head_center + side / 2])
        all_joints.append(joints_1)
        all_vis.append(vis)
        entries.append({
            "image": name,
            "center": (np.array(bbox[:2]) + np.array(bbox[2:]) / 2 + 1).tolist(),
            "scale": bbox[3] / 200,
            "joints": np.where(vis[:, None] > 0, joints_1, -1.0).tolist(),
            "joints_vis": vis.tolist(),
        })
    write_json_atomic(os.path.join(root, "annot", f"{image_set}.json"), entries)
    return entries, np.array(all_joints), np.array(all_vis), np.array(head_boxes)


def make_mpii_fixture(root: str | os.PathLike, num_train: int = 4, num_valid: int = 4,
                      width: int = 160, height: int = 120, seed: int = 0,
                      num_test: int = 0) -> dict[str, Any]:
    """An MPII data set under ``root``: annot/{train,valid}.json, annot/gt_valid.mat (the
    real layout: dataset_joints 1 x 16 cells, jnt_missing 16 x N, pos_gt_src 16 x 2 x N,
    headboxes_src 2 x 2 x N, all 1-based), images/*.jpg; ``num_test`` > 0 adds annot/test.json
    without labels.

    Returns: root, train, valid, test (the json entries), gt_file, valid_joints (N x 16 x 2,
    1-based), valid_vis (N x 16), head_sizes (N: 0.6 x head box diagonal, PCKh's unit).
    """
    root = os.fspath(root)
    rng = np.random.default_rng(seed)
    train, _, _, _ = _mpii_split(root, "train", num_train, width, height, rng, 1)
    valid, joints, vis, head_boxes = _mpii_split(root, "valid", num_valid, width, height, rng,
                                                 10001)
    test = []
    if num_test:
        test, _, _, _ = _mpii_split(root, "test", num_test, width, height, rng, 20001)
        for entry in test:
            del entry["joints"], entry["joints_vis"]
        write_json_atomic(os.path.join(root, "annot", "test.json"), test)

    dataset_joints = np.empty((1, len(MPII_JOINT_NAMES)), dtype=object)
    for j, name in enumerate(MPII_JOINT_NAMES):
        dataset_joints[0, j] = np.array([name])
    gt_file = os.path.join(root, "annot", "gt_valid.mat")
    atomic_write(gt_file, lambda handle: savemat(handle, {
        "dataset_joints": dataset_joints,
        "jnt_missing": (1 - vis).T.astype(np.float64),
        "pos_gt_src": np.transpose(joints, [1, 2, 0]),
        "headboxes_src": np.transpose(head_boxes, [1, 2, 0]),
    }))
    head_sizes = 0.6 * np.linalg.norm(head_boxes[:, 1] - head_boxes[:, 0], axis=1)
    return {"root": root, "train": train, "valid": valid, "test": test, "gt_file": gt_file,
            "valid_joints": joints, "valid_vis": vis, "head_sizes": head_sizes}
