"""Two-stage spacecraft crops, in memory: a coarse HRNet on the whole downscaled image finds the
landmarks roughly, the box around them is the crop of the fine model (TEST.SPEED_BBOX 'model');
with TEST.SPEED_CROP_REFINE the fine model then re-frames that crop on its own landmarks, and
with TEST.SPEED_CROP_CANDIDATES it tries looser boxes too and keeps the crop whose landmarks
agree best with their PnP pose.

Images and boxes pass between the steps as (image path, box) items of one light data set
(lib.core.predictor.Predictor.predict_items); the only file written is the final box file
(lib.spacecraft.files format), an output to inspect, reuse or compare with any detector.
tools/test.py, tools/infer.py and make demo all come through :func:`two_stage_crops`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from yacs.config import CfgNode

from lib.config import default_config, merge_from_file
from lib.core.adaptation import adapt_on_loader, adapted_weights_path
from lib.core.predictor import Item, Predictor, load_network
from lib.dataset.speed import resolve_image_set
from lib.spacecraft.files import Camera, load_camera, read_labels, read_landmarks, write_box_file
from lib.spacecraft.pose_solver import pnp_options, pose_agreement, solve_poses
from lib.utils.checkpoint import save_atomic
from lib.utils.image_io import ImageCache
from lib.utils.io import image_set_tag
from lib.utils.runtime import select_device

logger = logging.getLogger(__name__)

MIN_BOX_LANDMARKS = 2  # fewer confident coarse landmarks span no box: use the whole image
# images the crop search holds decoded at once: 64 colour 1920 x 1200 images are 0.4 GiB
SEARCH_CHUNK_IMAGES = 64


def coarse_config(cfg: CfgNode) -> CfgNode:
    """TEST.SPEED_COARSE_CFG read over the defaults, looking at the fine run's data
    (DATASET.ROOT, KEYPOINTS_FILE, DATA_FORMAT) with whole-image crops and running as the
    fine run does (TEST.RUNTIME, CPU_BF16, TEST.ADAPT_*); frozen."""
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
    coarse.TEST.RUNTIME = cfg.TEST.RUNTIME
    coarse.CPU_BF16 = cfg.CPU_BF16
    coarse.TEST.ADAPT_STEPS = cfg.TEST.ADAPT_STEPS
    coarse.TEST.ADAPT_LR = cfg.TEST.ADAPT_LR
    coarse.TEST.ADAPT_TEMPERATURE = cfg.TEST.ADAPT_TEMPERATURE
    coarse.freeze()
    return coarse


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


def coarse_predictor(cfg: CfgNode, device: torch.device | None = None,
                     adapt_to: Sequence[Item] = (), adapted_file: str = "") -> Predictor:
    """The coarse model of TEST.SPEED_COARSE_CFG with the weights TEST.SPEED_COARSE_MODEL_FILE;
    with TEST.ADAPT_STEPS, first adapted to the whole images of the items ``adapt_to`` (and
    saved to ``adapted_file`` if one is given)."""
    weights = cfg.TEST.SPEED_COARSE_MODEL_FILE
    if not weights:
        raise ValueError("TEST.SPEED_BBOX 'model' needs TEST.SPEED_COARSE_MODEL_FILE (the "
                         "coarse model's weights)")
    config = coarse_config(cfg)
    network = load_network(config, weights)
    if config.TEST.ADAPT_STEPS > 0 and len(adapt_to):
        device = device if device is not None else select_device(config.GPUS)
        network.to(device)
        plain = Predictor(config, network)
        loader = plain.loader(plain.items_dataset(adapt_to, whole_image=True))
        adapt_on_loader(config, network, loader, device)
        if adapted_file:
            save_atomic(network.state_dict(), adapted_file)
            logger.info("=> coarse model adapted to %d images saved to %s", len(adapt_to),
                        adapted_file)
    return Predictor.from_network(config, network, device, weights)


def whole_image_items(paths: Sequence[str], camera: Camera) -> list[Item]:
    """(path, box, score) items whose box is the whole image of ``camera``'s size."""
    return [(path, [0.0, 0.0, float(camera.width), float(camera.height)], 1.0)
            for path in paths]


def two_stage_crops(cfg: CfgNode, paths: Sequence[str], camera: Camera,
                    landmarks_3d: np.ndarray, coarse: Predictor, fine: Predictor | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fine model's crops N x 4 (x, y, w, h), their scores N and the coarse landmarks
    N x J x 3 for the images at ``paths`` (all of ``camera``'s size): the coarse model's
    landmarks on the whole image, then, with a ``fine`` predictor and TEST.SPEED_CROP_REFINE /
    _CROP_CANDIDATES, search_crops. Without one (validation while training) the coarse boxes
    are the crops."""
    width, height = camera.width, camera.height
    searching = cfg.TEST.SPEED_CROP_REFINE > 0 or len(cfg.TEST.SPEED_CROP_CANDIDATES) > 0
    if fine is None or not searching:
        coarse_landmarks = coarse.predict_items(whole_image_items(paths, camera),
                                                whole_image=True)
        boxes, scores = boxes_from_landmarks(
            coarse_landmarks, cfg.TEST.SPEED_COARSE_CONF_THRE,
            cfg.TEST.SPEED_COARSE_BOX_ENLARGE, width, height)
        fallback = int(np.count_nonzero(scores == 0))
        if fallback:
            logger.warning("=> coarse model: %d of %d images without %d confident landmarks get "
                           "the whole image as box", fallback, len(scores), MIN_BOX_LANDMARKS)
        return boxes, scores, coarse_landmarks

    was_training = fine.model.training
    try:
        # the search crops each image some fifteen times: a chunk of images at a time, each
        # decoded once (bounded memory whatever the set's size), in whole batches of both
        # models, so that every batch, and every number, is the one a single chunk would give
        batches = math.lcm(coarse.cfg.TEST.BATCH_SIZE_PER_GPU, cfg.TEST.BATCH_SIZE_PER_GPU)
        chunk = -(-SEARCH_CHUNK_IMAGES // batches) * batches
        parts = [_search_chunk(cfg, paths[first:first + chunk], camera, landmarks_3d, coarse,
                               fine)
                 for first in range(0, len(paths), chunk)]
    finally:
        fine.model.train(was_training)
    if not parts:
        return np.zeros((0, 4)), np.zeros(0), np.zeros((0, cfg.MODEL.NUM_JOINTS, 3))
    boxes, scores, coarse_landmarks = (np.concatenate(column)
                                       for column in zip(*parts, strict=True))
    return boxes, scores, coarse_landmarks


def _search_chunk(cfg: CfgNode, paths: Sequence[str], camera: Camera, landmarks_3d: np.ndarray,
                  coarse: Predictor, fine: Predictor
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """two_stage_crops' search for a few images, each decoded once for all its passes."""
    images = ImageCache()
    coarse_landmarks = coarse.predict_items(whole_image_items(paths, camera), whole_image=True,
                                            image_cache=images)

    def locate(crops: np.ndarray) -> np.ndarray:
        return fine.predict_items([(path, box.tolist(), 1.0)
                                   for path, box in zip(paths, crops, strict=True)],
                                  image_cache=images)

    boxes, scores = search_crops(cfg, coarse_landmarks, locate, camera.width, camera.height,
                                 landmarks_3d, camera.matrix, camera.dist_coeffs)
    return boxes, scores, coarse_landmarks


def box_file_path(output_dir: str, image_set: str) -> str:
    """Where a run writes the crops of ``image_set``: ``output_dir/speed_boxes_<set>.json``."""
    return os.path.join(output_dir, f"speed_boxes_{image_set_tag(image_set)}.json")


def config_after_adaptation(cfg: CfgNode, output_dir: str) -> CfgNode:
    """The test's config once TEST.ADAPT_STEPS have adapted its models: adaptation off, and
    for two-stage crops the coarse weights adapted to the test set (adapted once, not again)."""
    config = cfg.clone()
    config.defrost()
    config.TEST.ADAPT_STEPS = 0
    if cfg.DATASET.DATASET == "speed" and cfg.TEST.SPEED_BBOX == "model":
        config.TEST.SPEED_COARSE_MODEL_FILE = adapted_weights_path(
            output_dir, cfg.DATASET.TEST_SET, "coarse")
    config.freeze()
    return config


def two_stage_boxes(cfg: CfgNode, image_set: str, output_dir: str,
                    fine_model: torch.nn.Module | None = None
                    ) -> tuple[dict[str, tuple[np.ndarray, float]], dict[str, np.ndarray]]:
    """Crops (filename -> (box, score)) and coarse landmarks (filename -> J x 3) of every image
    of ``image_set`` under DATASET.ROOT; the crops are also written once to
    :func:`box_file_path` (nothing else is written)."""
    root = cfg.DATASET.ROOT
    labels_file, image_dir = resolve_image_set(root, image_set)
    names = [label.filename for label in read_labels(labels_file)]
    camera = load_camera(root)
    landmarks_3d = read_landmarks(os.path.join(root, cfg.DATASET.KEYPOINTS_FILE),
                                  cfg.MODEL.NUM_JOINTS)
    fine = None if fine_model is None else Predictor(cfg, fine_model)
    device = fine.device if fine is not None else None
    paths = [os.path.join(image_dir, name) for name in names]
    coarse_model = coarse_predictor(
        cfg, device, whole_image_items(paths, camera),
        adapted_weights_path(output_dir, image_set, "coarse") if cfg.TEST.ADAPT_STEPS > 0
        else "")
    boxes, scores, coarse = two_stage_crops(cfg, paths, camera, landmarks_3d, coarse_model,
                                            fine)
    path = write_box_file(box_file_path(output_dir, image_set), names, boxes, scores)
    logger.info("=> crops of %d images of '%s' (coarse model%s) written to %s", len(names),
                image_set, "" if fine is None else
                f", {cfg.TEST.SPEED_CROP_REFINE} re-framing pass(es), "
                f"{1 + len(cfg.TEST.SPEED_CROP_CANDIDATES)} candidate(s) per image", path)
    crops = {name: (box, float(score))
             for name, box, score in zip(names, boxes, scores, strict=True)}
    return crops, dict(zip(names, coarse, strict=True))


def two_stage_dataset_kwargs(cfg: Any, output_dir: str,
                             fine_model: torch.nn.Module | None = None) -> dict[str, Any]:
    """Extra arguments of the speed validation set: the two-stage crops and coarse landmarks
    when TEST.SPEED_BBOX is 'model' (the engine's hook), nothing otherwise."""
    if cfg.DATASET.DATASET != "speed" or cfg.TEST.SPEED_BBOX != "model":
        return {}
    boxes, coarse = two_stage_boxes(cfg, cfg.DATASET.TEST_SET, output_dir, fine_model)
    return {"boxes": boxes, "coarse_landmarks": coarse}
