"""Two-stage spacecraft crops: a coarse HRNet on the whole downscaled image finds the landmarks
roughly, the box around them is the crop of the fine model (TEST.SPEED_BBOX 'model'); with
TEST.SPEED_CROP_REFINE the fine model then re-frames that crop on its own landmarks.

The boxes are written in the box-file format of lib.dataset.speed (the 'file' source), so a
two-stage run leaves a file that can be inspected, reused and compared with any detector.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from yacs.config import CfgNode

import lib.models
from lib.config import default_config, merge_from_file
from lib.core.inference import get_final_preds
from lib.dataset.speed import SpeedDataset, read_box_file, write_box_file
from lib.utils.checkpoint import extract_state_dict, load_checkpoint_file, load_state_dict_strict
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
    state = load_checkpoint_file(model_file)
    load_state_dict_strict(model, extract_state_dict(state), model_file)
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
                         width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes N x 4 (x, y, w, h) around the confident landmarks, enlarged about their centre by
    ``enlarge`` and clipped to the image; scores N = mean confidence of the landmarks used.

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
    limit = np.array([width - 1.0, height - 1.0])
    low = np.clip(center - half, 0.0, limit)
    high = np.clip(center + half, 0.0, limit)
    low[too_few], high[too_few] = 0.0, limit
    size = np.maximum(high - low, 1.0)
    low = np.minimum(low, limit - size)  # a degenerate box is widened inside the image
    scores = np.where(too_few, 0.0, np.sum(landmarks[..., 2] * confident, axis=1)
                      / np.maximum(confident.sum(axis=1), 1))
    return np.concatenate([low, size], axis=1), scores


def reframed_boxes(landmarks: np.ndarray, previous: np.ndarray, width: int, height: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The crop refinement's next boxes N x 4 and scores N: the box of all the fine landmarks
    (unenlarged: the crop adds DATASET.BBOX_PADDING as in training); an image whose landmarks
    span no box (score 0) keeps its ``previous`` box."""
    boxes, scores = boxes_from_landmarks(landmarks, 0.0, 1.0, width, height)
    lost = scores <= 0
    boxes[lost] = np.asarray(previous, dtype=np.float64).reshape(-1, 4)[lost]
    return boxes, scores


def build_coarse_boxes(cfg: CfgNode, image_set: str, output_dir: str,
                       fine_model: torch.nn.Module | None = None) -> str:
    """Run the coarse model on every image of ``image_set`` and write the crop boxes of the
    fine model to ``output_dir/speed_boxes_<set>.json``; returns that path.

    With TEST.SPEED_CROP_REFINE and a ``fine_model`` the fine model then re-frames each crop
    around its own landmarks (refine_boxes); the coarse boxes stay in
    ``speed_boxes_<set>_coarse.json``. Without one (validation while training) the coarse boxes
    are the crops.
    """
    coarse_cfg = coarse_config(cfg)
    device = select_device(cfg.GPUS)
    transform = input_transform()
    dataset = SpeedDataset(coarse_cfg, coarse_cfg.DATASET.ROOT, image_set, False, transform)
    model = load_coarse_model(coarse_cfg, cfg.TEST.SPEED_COARSE_MODEL_FILE, device)
    landmarks = predict_landmarks(coarse_cfg, model, dataset, device)
    boxes, scores = boxes_from_landmarks(
        landmarks, cfg.TEST.SPEED_COARSE_CONF_THRE, cfg.TEST.SPEED_COARSE_BOX_ENLARGE,
        dataset.camera.width, dataset.camera.height)
    fallback = int(np.count_nonzero(scores == 0))
    if fallback:
        logger.warning("=> coarse model: %d of %d images without %d confident landmarks get "
                       "the whole image as box", fallback, len(scores), MIN_BOX_LANDMARKS)
    tag = image_set.strip("/").replace("/", "_")
    path = os.path.join(output_dir, f"speed_boxes_{tag}.json")
    names = [rec["filename"] for rec in dataset.db]
    if cfg.TEST.SPEED_CROP_REFINE <= 0 or fine_model is None:
        write_box_file(path, names, boxes, scores)
        logger.info("=> coarse boxes of %d images of '%s' written to %s", len(boxes), image_set,
                    path)
        return path
    coarse_path = os.path.join(output_dir, f"speed_boxes_{tag}_coarse.json")
    write_box_file(coarse_path, names, boxes, scores)
    return refine_boxes(cfg, fine_model, image_set, coarse_path, path)


def refine_boxes(cfg: CfgNode, model: torch.nn.Module, image_set: str, box_file: str,
                 out_file: str) -> str:
    """TEST.SPEED_CROP_REFINE passes of the fine model over its own crops: the box of all the
    landmarks it finds in one crop is the next crop, framed as in training (BBOX_PADDING).

    A coarse box that cut the spacecraft off or framed it loosely costs the fine model its
    precision; in `make demo` one pass takes the ESA score from 0.21 / 0.22 to 0.17 / 0.17
    (validation / test), a second one gives some of it back. An image whose fine landmarks span
    no box keeps the crop it had. Writes and returns ``out_file``.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    current = box_file
    for index in range(int(cfg.TEST.SPEED_CROP_REFINE)):
        dataset = SpeedDataset(cfg, cfg.DATASET.ROOT, image_set, False, input_transform(),
                               bbox_file=current)
        landmarks = predict_landmarks(cfg, model, dataset, device)
        names = [rec["filename"] for rec in dataset.db]
        given = read_box_file(current)
        boxes, scores = reframed_boxes(landmarks, np.array([given[n][0] for n in names]),
                                       dataset.camera.width, dataset.camera.height)
        write_box_file(out_file, names, boxes, scores)
        current = out_file
        logger.info("=> crop refinement %d/%d of '%s' by the fine model: %d of %d boxes "
                    "re-framed, written to %s", index + 1, cfg.TEST.SPEED_CROP_REFINE, image_set,
                    int((scores > 0).sum()), len(boxes), out_file)
    model.train(was_training)
    return out_file


def two_stage_dataset_kwargs(cfg: Any, output_dir: str,
                             fine_model: torch.nn.Module | None = None) -> dict[str, str]:
    """Extra arguments of the speed validation set: the coarse box file when TEST.SPEED_BBOX
    is 'model' (the engine's hook), nothing otherwise."""
    if cfg.DATASET.DATASET != "speed" or cfg.TEST.SPEED_BBOX != "model":
        return {}
    return {"bbox_file": build_coarse_boxes(cfg, cfg.DATASET.TEST_SET, output_dir, fine_model)}
