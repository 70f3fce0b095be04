"""Two-stage spacecraft crops: a coarse HRNet on the whole downscaled image finds the landmarks
roughly, the box around them is the crop of the fine model (TEST.SPEED_BBOX 'model'); with
TEST.SPEED_CROP_REFINE the fine model then re-frames that crop on its own landmarks, and with
TEST.SPEED_CROP_CANDIDATES it tries looser boxes too and keeps the crop whose landmarks agree
best with their PnP pose.

The boxes are written in the box-file format of lib.dataset.speed (the 'file' source), so a
two-stage run leaves a file that can be inspected, reused and compared with any detector.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from yacs.config import CfgNode

import lib.models
from lib.config import default_config, merge_from_file
from lib.core.inference import get_final_preds
from lib.dataset.speed import SpeedDataset
from lib.spacecraft.files import write_box_file
from lib.spacecraft.geometry import project_points
from lib.spacecraft.pose_solver import PoseBatch, pnp_options, solve_poses
from lib.utils.checkpoint import load_weights_file
from lib.utils.runtime import autocast, select_device
from lib.utils.transforms import input_transform

logger = logging.getLogger(__name__)

MIN_BOX_LANDMARKS = 2  # fewer confident coarse landmarks span no box: use the whole image



def coarse_config(cfg: CfgNode) -> CfgNode:
    """TEST.SPEED_COARSE_CFG read over the defaults, looking at the fine run's data
    (DATASET.ROOT, KEYPOINTS_FILE, DATA_FORMAT) with whole-image crops; frozen."""
    path = cfg.TEST.SPEED_COARSE_CFG
    if not path:
        raise ValueError("TEST.SPEED_BBOX 'model' needs TEST.SPEED_COARSE_CFG (the coarse "
                         "model's config file)")
    coarse = default_config()
    coarse.defrost()
    merge_from_file(coarse, path)
    coarse.DATASET.ROOT = cfg.DATASET.ROOT
    coarse.DATASET.KEYPOINTS_FILE = cfg.DATASET.KEYPOINTS_FILE
    coarse.DATASET.DATA_FORMAT = cfg.DATASET.DATA_FORMAT
    coarse.DATASET.SPEED_FULL_IMAGE = True
    coarse.freeze()
    return coarse


def load_coarse_model(coarse_cfg: CfgNode, model_file: str, device: torch.device
                      ) -> torch.nn.Module:
    """The coarse network with the weights of ``model_file`` (checkpoint or state_dict)."""
    if not model_file:
        raise ValueError("TEST.SPEED_BBOX 'model' needs TEST.SPEED_COARSE_MODEL_FILE (the "
                         "coarse model's weights)")
    return load_eval_model(coarse_cfg, model_file, device)


def load_eval_model(cfg: CfgNode, model_file: str, device: torch.device) -> torch.nn.Module:
    """cfg's network with the weights of ``model_file``, on ``device``, in eval mode."""
    model = lib.models.build_model(cfg, is_train=False)
    load_weights_file(model, model_file)
    model = model.to(device).eval()
    if cfg.MODEL.CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last)
    return model


def predict_landmarks(coarse_cfg: CfgNode, model: torch.nn.Module, dataset: SpeedDataset,
                      device: torch.device) -> np.ndarray:
    """Landmarks N x J x 3 (x, y full-image pixels, confidence) in data-set order."""
    loader = DataLoader(dataset, batch_size=coarse_cfg.TEST.BATCH_SIZE_PER_GPU, shuffle=False,
                        num_workers=coarse_cfg.WORKERS,
                        pin_memory=coarse_cfg.PIN_MEMORY and device.type == "cuda")
    out = np.zeros((len(dataset), dataset.num_joints, 3))
    start = 0
    with torch.inference_mode():
        for inputs, _, _, meta in loader:
            inputs = inputs.to(device)
            if coarse_cfg.MODEL.CHANNELS_LAST:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with autocast(device, coarse_cfg.TEST.AMP):
                heatmaps = model(inputs)
            if isinstance(heatmaps, (list, tuple)):
                heatmaps = heatmaps[-1]
            coords, maxvals = get_final_preds(coarse_cfg, heatmaps.float(),
                                              meta["center"].numpy(), meta["scale"].numpy())
            stop = start + len(inputs)
            out[start:stop, :, :2] = coords
            out[start:stop, :, 2:] = maxvals
            start = stop
    return out


def boxes_from_landmarks(landmarks: np.ndarray, conf_threshold: float, enlarge: float,
                         width: float | np.ndarray, height: float | np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Boxes N x 4 (x, y, w, h) around the confident landmarks, enlarged about their centre by
    ``enlarge`` and clipped to the image (``width``/``height``: one size or one per image);
    scores N = mean confidence of the landmarks used.

    An image with fewer than MIN_BOX_LANDMARKS confident landmarks gets the whole image and
    score 0.
    """
    xy = landmarks[..., :2]
    confident = (landmarks[..., 2] > conf_threshold) & np.all(np.isfinite(xy), axis=-1)
    low = np.where(confident[..., None], xy, np.inf).min(axis=1)
    high = np.where(confident[..., None], xy, -np.inf).max(axis=1)
    too_few = confident.sum(axis=1) < MIN_BOX_LANDMARKS
    low[too_few], high[too_few] = 0.0, 0.0
    center = 0.5 * (low + high)
    half = 0.5 * enlarge * (high - low)
    limit = np.stack(np.broadcast_arrays(np.asarray(width, np.float64) - 1.0,
                                         np.asarray(height, np.float64) - 1.0), axis=-1)
    limit = np.broadcast_to(limit, low.shape)
    low = np.clip(center - half, 0.0, limit)
    high = np.clip(center + half, 0.0, limit)
    low[too_few], high[too_few] = 0.0, limit[too_few]
    size = np.maximum(high - low, 1.0)
    low = np.minimum(low, limit - size)  # a degenerate box is widened inside the image
    scores = np.where(too_few, 0.0, np.sum(landmarks[..., 2] * confident, axis=1)
                      / np.maximum(confident.sum(axis=1), 1))
    return np.concatenate([low, size], axis=1), scores


def reframed_boxes(landmarks: np.ndarray, previous: np.ndarray, width: float | np.ndarray,
                   height: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The crop refinement's next boxes N x 4 and scores N: the box of all the fine landmarks
    (unenlarged: the crop adds DATASET.BBOX_PADDING as in training); an image whose landmarks
    span no box (score 0) keeps its ``previous`` box."""
    boxes, scores = boxes_from_landmarks(landmarks, 0.0, 1.0, width, height)
    lost = scores <= 0
    boxes[lost] = np.asarray(previous, dtype=np.float64).reshape(-1, 4)[lost]
    return boxes, scores


def pose_agreement(landmarks: np.ndarray, poses: PoseBatch, landmarks_3d: np.ndarray,
                   camera_matrix: np.ndarray, dist_coeffs: np.ndarray | None,
                   tolerance: float) -> np.ndarray:
    """How well each image's landmarks N x J x 3 back their own PnP pose: the summed confidence
    of the landmarks that the pose reprojects within ``tolerance`` x the size (sqrt(w h)) of the
    landmarks' box; 0 where PnP failed. Size-relative, so near and far spacecraft compare."""
    agreement = np.zeros(len(landmarks))
    for index in np.flatnonzero(poses.success):
        points = landmarks[index]
        projected = project_points(landmarks_3d, poses.q[index], poses.r[index], camera_matrix,
                                   dist_coeffs)
        size = np.sqrt(np.prod(np.ptp(points[:, :2], axis=0)))
        close = np.linalg.norm(projected - points[:, :2], axis=1) <= tolerance * size
        agreement[index] = float(np.sum(points[close, 2]))
    return agreement


def search_crops(cfg: CfgNode, coarse_landmarks: np.ndarray,
                 locate: Callable[[np.ndarray], np.ndarray], width: float | np.ndarray,
                 height: float | np.ndarray, landmarks_3d: np.ndarray,
                 camera_matrix: np.ndarray, dist_coeffs: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The fine model's crops N x 4 and their scores N, from the coarse landmarks N x J x 3.

    Each enlargement of the coarse box (TEST.SPEED_COARSE_BOX_ENLARGE, then the
    TEST.SPEED_CROP_CANDIDATES) is re-framed TEST.SPEED_CROP_REFINE times on the landmarks that
    ``locate(boxes)`` (the fine model: full-image N x J x 3) finds in it. With more than one
    candidate each image keeps the crop whose landmarks agree best with their own PnP pose
    (pose_agreement, TEST.SPEED_CROP_AGREEMENT_TOL; a tie keeps the earlier candidate): a coarse
    box that cut the spacecraft off loses to a looser one that did not.
    """
    enlargements = [cfg.TEST.SPEED_COARSE_BOX_ENLARGE, *cfg.TEST.SPEED_CROP_CANDIDATES]
    if not all(isinstance(e, (int, float)) and e > 0 for e in enlargements):
        raise ValueError("TEST.SPEED_COARSE_BOX_ENLARGE and TEST.SPEED_CROP_CANDIDATES must be "
                         f"positive factors, got {enlargements}")
    if len(enlargements) > 1 and not cfg.TEST.SPEED_CROP_AGREEMENT_TOL > 0:
        raise ValueError("TEST.SPEED_CROP_AGREEMENT_TOL must be positive, got "
                         f"{cfg.TEST.SPEED_CROP_AGREEMENT_TOL}")
    best_boxes = best_scores = best_agreement = None
    for enlarge in enlargements:
        boxes, scores = boxes_from_landmarks(coarse_landmarks, cfg.TEST.SPEED_COARSE_CONF_THRE,
                                             enlarge, width, height)
        for _ in range(int(cfg.TEST.SPEED_CROP_REFINE)):
            boxes, scores = reframed_boxes(locate(boxes), boxes, width, height)
        if len(enlargements) == 1:
            return boxes, scores
        landmarks = locate(boxes)
        poses = solve_poses(landmarks[..., :2], landmarks[..., 2], landmarks_3d, camera_matrix,
                            dist_coeffs, **pnp_options(cfg))
        agreement = pose_agreement(landmarks, poses, landmarks_3d, camera_matrix, dist_coeffs,
                                   cfg.TEST.SPEED_CROP_AGREEMENT_TOL)
        if best_agreement is None:
            best_boxes, best_scores, best_agreement = boxes, scores, agreement
            continue
        better = agreement > best_agreement
        best_boxes[better], best_scores[better] = boxes[better], scores[better]
        best_agreement = np.maximum(agreement, best_agreement)
    return best_boxes, best_scores


def build_coarse_boxes(cfg: CfgNode, image_set: str, output_dir: str,
                       fine_model: torch.nn.Module | None = None) -> str:
    """Run the coarse model on every image of ``image_set`` and write the crop boxes of the
    fine model to ``output_dir/speed_boxes_<set>.json``; returns that path.

    With a ``fine_model`` and TEST.SPEED_CROP_REFINE or TEST.SPEED_CROP_CANDIDATES, the crops
    come from search_crops and the plain coarse boxes stay in ``speed_boxes_<set>_coarse.json``.
    Without one (validation while training) the coarse boxes are the crops.
    """
    coarse_cfg = coarse_config(cfg)
    device = select_device(cfg.GPUS)
    transform = input_transform()
    dataset = SpeedDataset(coarse_cfg, coarse_cfg.DATASET.ROOT, image_set, False, transform)
    model = load_coarse_model(coarse_cfg, cfg.TEST.SPEED_COARSE_MODEL_FILE, device)
    coarse_landmarks = predict_landmarks(coarse_cfg, model, dataset, device)
    width, height = dataset.camera.width, dataset.camera.height
    boxes, scores = boxes_from_landmarks(
        coarse_landmarks, cfg.TEST.SPEED_COARSE_CONF_THRE, cfg.TEST.SPEED_COARSE_BOX_ENLARGE,
        width, height)
    fallback = int(np.count_nonzero(scores == 0))
    if fallback:
        logger.warning("=> coarse model: %d of %d images without %d confident landmarks get "
                       "the whole image as box", fallback, len(scores), MIN_BOX_LANDMARKS)
    tag = image_set.strip("/").replace("/", "_")
    path = os.path.join(output_dir, f"speed_boxes_{tag}.json")
    names = [rec["filename"] for rec in dataset.db]
    searching = cfg.TEST.SPEED_CROP_REFINE > 0 or len(cfg.TEST.SPEED_CROP_CANDIDATES) > 0
    if not searching or fine_model is None:
        write_box_file(path, names, boxes, scores)
        logger.info("=> coarse boxes of %d images of '%s' written to %s", len(boxes), image_set,
                    path)
        return path
    write_box_file(os.path.join(output_dir, f"speed_boxes_{tag}_coarse.json"), names, boxes,
                   scores)
    fine_device = next(fine_model.parameters()).device
    was_training = fine_model.training
    fine_model.eval()

    def locate(crops: np.ndarray) -> np.ndarray:
        write_box_file(path, names, crops, np.ones(len(crops)))
        fine_set = SpeedDataset(cfg, cfg.DATASET.ROOT, image_set, False, transform,
                                bbox_file=path)
        return predict_landmarks(cfg, fine_model, fine_set, fine_device)

    boxes, scores = search_crops(cfg, coarse_landmarks, locate, width, height,
                                 dataset.landmarks, dataset.camera.matrix,
                                 dataset.camera.dist_coeffs)
    fine_model.train(was_training)
    write_box_file(path, names, boxes, scores)
    logger.info("=> crops of %d images of '%s' from the coarse boxes, %d re-framing pass(es) "
                "and %d candidate(s) per image, written to %s", len(boxes), image_set,
                cfg.TEST.SPEED_CROP_REFINE, 1 + len(cfg.TEST.SPEED_CROP_CANDIDATES), path)
    return path


def two_stage_dataset_kwargs(cfg: Any, output_dir: str,
                             fine_model: torch.nn.Module | None = None) -> dict[str, str]:
    """Extra arguments of the speed validation set: the coarse box file when TEST.SPEED_BBOX
    is 'model' (the engine's hook), nothing otherwise."""
    if cfg.DATASET.DATASET != "speed" or cfg.TEST.SPEED_BBOX != "model":
        return {}
    return {"bbox_file": build_coarse_boxes(cfg, cfg.DATASET.TEST_SET, output_dir, fine_model)}
