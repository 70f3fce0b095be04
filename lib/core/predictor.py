"""Keypoints for new images: boxes in, image-pixel keypoints out, as tools/test.py computes them."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from lib.core.function import predict_heatmaps
from lib.core.inference import get_final_preds
from lib.dataset import register
from lib.dataset.image_boxes import ImageBoxesDataset
from lib.dataset.JointsDataset import configure_opencv_for_workers
from lib.utils.transforms import input_transform


class DetectionFileError(ValueError):
    """A detection file that is not a list of COCO-style detections."""


def load_detections(path: str, category_id: int | None = 1
                    ) -> dict[str, list[tuple[list[float], float]]]:
    """COCO-style detections [{image_id | file_name, bbox: [x, y, w, h], score, category_id}]
    grouped by image key: the file name when given, else the 12-digit COCO name of image_id.
    Only `category_id` (person) is kept when the field is present."""
    try:
        with open(path) as f:
            entries = json.load(f)
    except FileNotFoundError:
        raise
    except (OSError, json.JSONDecodeError) as error:
        raise DetectionFileError(f"{path}: not a readable JSON file ({error})") from error
    if not isinstance(entries, list):
        raise DetectionFileError(f"{path}: expected a list of detections, got "
                                 f"{type(entries).__name__}")
    grouped: dict[str, list[tuple[list[float], float]]] = {}
    for i, det in enumerate(entries):
        if not isinstance(det, dict) or "bbox" not in det or "score" not in det:
            raise DetectionFileError(f"{path}: detection {i} lacks 'bbox' or 'score'")
        if category_id is not None and det.get("category_id", category_id) != category_id:
            continue
        if "file_name" in det:
            key = os.path.basename(str(det["file_name"]))
        elif "image_id" in det:
            key = f"{int(det['image_id']):012d}.jpg"
        else:
            raise DetectionFileError(f"{path}: detection {i} names no 'file_name' or 'image_id'")
        box = [float(v) for v in det["bbox"]]
        if len(box) != 4:
            raise DetectionFileError(f"{path}: detection {i} 'bbox' must be [x, y, w, h]")
        grouped.setdefault(key, []).append((box, float(det["score"])))
    return grouped


def predict_keypoints(cfg, model: nn.Module, items: Sequence[tuple[str, Sequence[float], float]],
                      read_grayscale: bool = False, whole_image: bool = False) -> np.ndarray:
    """Keypoints N x J x 3 (x, y, score) in image pixels for (image, box, score) items.

    The crops go through the data set's own pipeline (ImageBoxesDataset), the heatmaps
    through the validation forward (flip test, AMP) and decoding.
    """
    flip_pairs = getattr(register.get(cfg.DATASET.DATASET), "flip_pairs", None)
    dataset = ImageBoxesDataset(cfg, items, flip_pairs, input_transform(),
                                read_grayscale=read_grayscale, whole_image=whole_image)
    configure_opencv_for_workers(cfg.WORKERS)
    loader = DataLoader(dataset, batch_size=cfg.TEST.BATCH_SIZE_PER_GPU, shuffle=False,
                        num_workers=cfg.WORKERS)
    device = next(model.parameters()).device
    model.eval()
    results = []
    with torch.inference_mode():
        for input, _, _, meta in loader:
            input = input.to(device)
            if cfg.MODEL.CHANNELS_LAST:
                input = input.contiguous(memory_format=torch.channels_last)
            output = predict_heatmaps(cfg, model, input, flip_pairs)
            preds, maxvals = get_final_preds(cfg, output, meta["center"].numpy(),
                                             meta["scale"].numpy())
            results.append(np.concatenate([preds, maxvals], axis=2))
    num_joints = cfg.MODEL.NUM_JOINTS
    return np.concatenate(results) if results else np.zeros((0, num_joints, 3))


def keypoint_records(items: Sequence[tuple[str, Sequence[float], float]],
                     keypoints: np.ndarray) -> list[dict[str, Any]]:
    """JSON-ready predictions: one record per item."""
    return [{"image": path, "bbox": [round(float(v), 2) for v in box], "score": float(score),
             "keypoints": np.round(kpts, 3).tolist()}
            for (path, box, score), kpts in zip(items, keypoints, strict=True)]


def predict_spacecraft_poses(cfg, model: nn.Module, images: Sequence[tuple[str, int, int]]
                             ) -> list[dict[str, Any]]:
    """Two-stage spacecraft pose for (image path, width, height) items: the coarse model
    (TEST.SPEED_COARSE_CFG / _MODEL_FILE) on the whole image gives the box, `model` the
    landmarks in it, PnP with the data set's camera and landmark file the pose."""
    from lib.core.speed_two_stage import coarse_config, load_coarse_model, search_crops
    from lib.spacecraft.files import load_camera, read_landmarks
    from lib.spacecraft.pose_solver import pnp_options, solve_poses

    camera = load_camera(cfg.DATASET.ROOT)
    landmarks_3d = read_landmarks(os.path.join(cfg.DATASET.ROOT, cfg.DATASET.KEYPOINTS_FILE),
                                  cfg.MODEL.NUM_JOINTS)
    coarse_cfg = coarse_config(cfg)
    device = next(model.parameters()).device
    coarse_model = load_coarse_model(coarse_cfg, cfg.TEST.SPEED_COARSE_MODEL_FILE, device)

    paths = [path for path, _, _ in images]
    width = np.array([w for _, w, _ in images], dtype=np.float64)
    height = np.array([h for _, _, h in images], dtype=np.float64)
    whole = [(path, [0.0, 0.0, float(w), float(h)], 1.0) for path, w, h in images]
    coarse = predict_keypoints(coarse_cfg, coarse_model, whole, read_grayscale=True,
                               whole_image=True)

    def locate(boxes: np.ndarray) -> np.ndarray:
        return predict_keypoints(cfg, model, [(path, box.tolist(), 1.0)
                                              for path, box in zip(paths, boxes, strict=True)],
                                 read_grayscale=True)

    boxes, scores = search_crops(cfg, coarse, locate, width, height, landmarks_3d,
                                 camera.matrix, camera.dist_coeffs)
    fine = locate(boxes)
    poses = solve_poses(fine[:, :, :2], fine[:, :, 2], landmarks_3d, camera.matrix,
                        camera.dist_coeffs, **pnp_options(cfg))
    return [{"image": path, "bbox": boxes[k].tolist(), "score": float(scores[k]),
             "keypoints": np.round(fine[k], 3).tolist(), "success": bool(poses.success[k]),
             "reason": poses.reasons[k], "q": poses.q[k].tolist(), "r": poses.r[k].tolist()}
            for k, path in enumerate(paths)]
