"""Two-stage spacecraft crops, in memory: a coarse HRNet on the whole downscaled image finds the
landmarks roughly, the box around them is the crop of the fine model (TEST.SPEED_BBOX 'model');
with TEST.SPEED_CROP_REFINE the fine model then re-frames that crop on its own landmarks, and
with TEST.SPEED_CROP_CANDIDATES it tries looser boxes too and keeps the crop whose landmarks
agree best with their PnP pose; with TEST.SPEED_GAMMA_CANDIDATES tone curves compete the same
way on the chosen crops.

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
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy.spatial import ConvexHull, QhullError
from yacs.config import CfgNode

from lib.config import default_config, merge_from_file
from lib.core.adaptation import adapt_on_loader, adapted_weights_path
from lib.core.predictor import Item, Predictor, load_network
from lib.dataset.speed import resolve_image_set
from lib.spacecraft.files import (
    Camera,
    Crop,
    load_camera,
    read_labels,
    read_landmarks,
    write_box_file,
)
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


def min_box_side(landmarks_3d: np.ndarray, camera_matrix: np.ndarray, max_distance: float,
                 directions: int = 2048) -> float:
    """The fewest pixels either side of the landmarks' box can span while the spacecraft is
    no farther than ``max_distance`` metres (TEST.SPEED_MAX_DISTANCE; 0: no limit, 0 px).

    A box side is the landmarks' width along an image axis, never less than their smallest
    width: found over the normals of their convex hull's faces (where a box-like body's lies)
    and ``directions`` more spread over the sphere, seen at the far limit plus the landmarks'
    reach from the body origin. Flat landmarks (no hull) have no floor. A model that bunches
    its landmarks on one spot gives a box smaller than this, a crop in which the spacecraft
    cannot be found again.
    """
    if max_distance <= 0:
        return 0.0
    points = np.asarray(landmarks_3d, dtype=np.float64)
    try:
        normals = ConvexHull(points).equations[:, :3]
    except QhullError:
        return 0.0
    k = np.arange(directions) + 0.5
    polar = np.arccos(1.0 - 2.0 * k / directions)
    azimuth = np.pi * (1.0 + 5.0 ** 0.5) * k
    sphere = np.stack([np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth),
                       np.cos(polar)], axis=1)
    widths = np.ptp(points @ np.concatenate([normals, sphere]).T, axis=0)
    reach = np.linalg.norm(points, axis=1).max()
    focal = min(float(camera_matrix[0, 0]), float(camera_matrix[1, 1]))
    return focal * float(widths.min()) / (max_distance + reach)


def boxes_from_landmarks(landmarks: np.ndarray, conf_threshold: float, enlarge: float,
                         width: float | np.ndarray, height: float | np.ndarray,
                         min_side: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Boxes N x 4 (x, y, w, h) around the confident landmarks, each side first widened to
    ``min_side`` (min_box_side), enlarged about their centre by ``enlarge`` and clipped to the
    image (``width``/``height``: one size or one per image); scores N = mean confidence of the
    landmarks used.

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
    half = 0.5 * enlarge * np.maximum(high - low, min_side)
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
                   height: float | np.ndarray, min_side: float = 0.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The crop refinement's next boxes N x 4 and scores N: the box of all the fine landmarks
    (unenlarged: the crop adds DATASET.BBOX_PADDING as in training; sides at least
    ``min_side``); an image whose landmarks span no box (score 0) keeps its ``previous`` box."""
    boxes, scores = boxes_from_landmarks(landmarks, 0.0, 1.0, width, height, min_side)
    lost = scores <= 0
    boxes[lost] = np.asarray(previous, dtype=np.float64).reshape(-1, 4)[lost]
    return boxes, scores


class CropSearch(NamedTuple):
    """What the two-stage path found for N images."""

    boxes: np.ndarray  # N x 4 x, y, w, h: the fine model's crops
    scores: np.ndarray  # N: mean confidence of the landmarks that framed each crop
    gammas: np.ndarray  # N: the tone curve each crop is seen through (1: none)
    coarse_landmarks: np.ndarray  # N x J x 3: the coarse model's, a fallback for failed PnP


def search_crops(cfg: CfgNode, coarse_landmarks: np.ndarray,
                 locate: Callable[[np.ndarray, float], np.ndarray], width: float | np.ndarray,
                 height: float | np.ndarray, landmarks_3d: np.ndarray,
                 camera_matrix: np.ndarray, dist_coeffs: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fine model's crops N x 4, their scores N and gammas N, from the coarse landmarks
    N x J x 3.

    Each enlargement of the coarse box (TEST.SPEED_COARSE_BOX_ENLARGE, then the
    TEST.SPEED_CROP_CANDIDATES) is re-framed TEST.SPEED_CROP_REFINE times on the landmarks that
    ``locate(boxes, gamma)`` (the fine model on those crops seen through that tone curve:
    full-image N x J x 3) finds in it. With more than one candidate each image keeps the crop
    whose landmarks agree best with their own PnP pose (pose_agreement,
    TEST.SPEED_CROP_AGREEMENT_TOL; a tie keeps the earlier candidate): a coarse box that cut
    the spacecraft off loses to a looser one that did not. The TEST.SPEED_GAMMA_CANDIDATES then
    compete the same way on the chosen crops, against no curve (gamma 1), which a tie keeps.
    """
    def agreement(landmarks: np.ndarray) -> np.ndarray:
        poses = solve_poses(landmarks[..., :2], landmarks[..., 2], landmarks_3d, camera_matrix,
                            dist_coeffs, **pnp_options(cfg))
        return pose_agreement(landmarks, poses, landmarks_3d, camera_matrix, dist_coeffs,
                              cfg.TEST.SPEED_CROP_AGREEMENT_TOL)

    enlargements = [cfg.TEST.SPEED_COARSE_BOX_ENLARGE, *cfg.TEST.SPEED_CROP_CANDIDATES]
    tones = [float(gamma) for gamma in cfg.TEST.SPEED_GAMMA_CANDIDATES]
    smallest = min_box_side(landmarks_3d, camera_matrix, cfg.TEST.SPEED_MAX_DISTANCE)
    best_boxes = best_scores = best_agreement = None
    for enlarge in enlargements:
        boxes, scores = boxes_from_landmarks(coarse_landmarks, cfg.TEST.SPEED_COARSE_CONF_THRE,
                                             enlarge, width, height, smallest)
        for _ in range(int(cfg.TEST.SPEED_CROP_REFINE)):
            boxes, scores = reframed_boxes(locate(boxes, 1.0), boxes, width, height, smallest)
        if len(enlargements) == 1 and not tones:
            return boxes, scores, np.ones(len(boxes))
        this = agreement(locate(boxes, 1.0))
        if best_agreement is None:
            best_boxes, best_scores, best_agreement = boxes, scores, this
            continue
        better = this > best_agreement
        best_boxes[better], best_scores[better] = boxes[better], scores[better]
        best_agreement = np.maximum(this, best_agreement)
    gammas = np.ones(len(best_boxes))
    for gamma in tones:
        this = agreement(locate(best_boxes, gamma))
        gammas[this > best_agreement] = gamma
        best_agreement = np.maximum(this, best_agreement)
    return best_boxes, best_scores, gammas


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


def searches_crops(cfg: CfgNode) -> bool:
    """Whether the fine model searches its crops (and tones) beyond the coarse box."""
    return (cfg.TEST.SPEED_CROP_REFINE > 0 or len(cfg.TEST.SPEED_CROP_CANDIDATES) > 0
            or len(cfg.TEST.SPEED_GAMMA_CANDIDATES) > 0)


def two_stage_crops(cfg: CfgNode, paths: Sequence[str], camera: Camera,
                    landmarks_3d: np.ndarray, coarse: Predictor, fine: Predictor | None = None
                    ) -> CropSearch:
    """The fine model's crops for the images at ``paths`` (all of ``camera``'s size): the
    coarse model's landmarks on the whole image, then, with a ``fine`` predictor and
    TEST.SPEED_CROP_REFINE / _CROP_CANDIDATES / _GAMMA_CANDIDATES, search_crops. Without one
    (validation while training) the coarse boxes are the crops."""
    width, height = camera.width, camera.height
    if fine is None or not searches_crops(cfg):
        coarse_landmarks = coarse.predict_items(whole_image_items(paths, camera),
                                                whole_image=True)
        boxes, scores = boxes_from_landmarks(
            coarse_landmarks, cfg.TEST.SPEED_COARSE_CONF_THRE,
            cfg.TEST.SPEED_COARSE_BOX_ENLARGE, width, height,
            min_box_side(landmarks_3d, camera.matrix, cfg.TEST.SPEED_MAX_DISTANCE))
        fallback = int(np.count_nonzero(scores == 0))
        if fallback:
            logger.warning("=> coarse model: %d of %d images without %d confident landmarks get "
                           "the whole image as box", fallback, len(scores), MIN_BOX_LANDMARKS)
        return CropSearch(boxes, scores, np.ones(len(boxes)), coarse_landmarks)

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
        return CropSearch(np.zeros((0, 4)), np.zeros(0), np.zeros(0),
                          np.zeros((0, cfg.MODEL.NUM_JOINTS, 3)))
    return CropSearch(*(np.concatenate(column) for column in zip(*parts, strict=True)))


def _search_chunk(cfg: CfgNode, paths: Sequence[str], camera: Camera, landmarks_3d: np.ndarray,
                  coarse: Predictor, fine: Predictor) -> CropSearch:
    """two_stage_crops' search for a few images, each decoded once for all its passes."""
    images = ImageCache()
    coarse_landmarks = coarse.predict_items(whole_image_items(paths, camera), whole_image=True,
                                            image_cache=images)

    def locate(crops: np.ndarray, gamma: float) -> np.ndarray:
        return fine.predict_items([(path, box.tolist(), 1.0)
                                   for path, box in zip(paths, crops, strict=True)],
                                  image_cache=images,
                                  gammas=None if gamma == 1.0 else [gamma] * len(paths))

    boxes, scores, gammas = search_crops(cfg, coarse_landmarks, locate, camera.width,
                                         camera.height, landmarks_3d, camera.matrix,
                                         camera.dist_coeffs)
    return CropSearch(boxes, scores, gammas, coarse_landmarks)


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


def single_view_config(cfg: CfgNode) -> CfgNode:
    """``cfg`` with TEST.ROTATION_VIEWS 1, for the crop search: it runs the fine model on
    every candidate crop and pass (about eight per image), so the turned views are kept for
    the final landmarks on the chosen crop, where they cost one pass."""
    if cfg.TEST.ROTATION_VIEWS == 1:
        return cfg
    single = cfg.clone()
    single.defrost()
    single.TEST.ROTATION_VIEWS = 1
    single.freeze()
    return single


def two_stage_boxes(cfg: CfgNode, image_set: str, output_dir: str,
                    fine_model: torch.nn.Module | None = None
                    ) -> tuple[dict[str, Crop], dict[str, np.ndarray]]:
    """Crops (filename -> Crop(box, score, gamma)) and coarse landmarks (filename -> J x 3) of
    every image of ``image_set`` under DATASET.ROOT; the crops are also written once to
    :func:`box_file_path` (nothing else is written; a gamma per crop with
    TEST.SPEED_GAMMA_CANDIDATES)."""
    root = cfg.DATASET.ROOT
    labels_file, image_dir = resolve_image_set(root, image_set)
    names = [label.filename for label in read_labels(labels_file)]
    camera = load_camera(root)
    landmarks_3d = read_landmarks(os.path.join(root, cfg.DATASET.KEYPOINTS_FILE),
                                  cfg.MODEL.NUM_JOINTS)
    fine = None if fine_model is None else Predictor(single_view_config(cfg), fine_model)
    device = fine.device if fine is not None else None
    paths = [os.path.join(image_dir, name) for name in names]
    coarse_model = coarse_predictor(
        cfg, device, whole_image_items(paths, camera),
        adapted_weights_path(output_dir, image_set, "coarse") if cfg.TEST.ADAPT_STEPS > 0
        else "")
    found = two_stage_crops(cfg, paths, camera, landmarks_3d, coarse_model, fine)
    tones = fine is not None and len(cfg.TEST.SPEED_GAMMA_CANDIDATES) > 0
    path = write_box_file(box_file_path(output_dir, image_set), names, found.boxes,
                          found.scores, found.gammas if tones else None)
    logger.info("=> crops of %d images of '%s' (coarse model%s) written to %s", len(names),
                image_set, "" if fine is None else
                f", {cfg.TEST.SPEED_CROP_REFINE} re-framing pass(es), "
                f"{1 + len(cfg.TEST.SPEED_CROP_CANDIDATES)} candidate(s) per image", path)
    if tones:
        chosen = {gamma: int(np.count_nonzero(found.gammas == gamma))
                  for gamma in [1.0, *cfg.TEST.SPEED_GAMMA_CANDIDATES]}
        logger.info("=> tone curves chosen: %s", ", ".join(
            f"gamma {gamma:g} {count}" for gamma, count in chosen.items()))
    crops = {name: Crop(box, float(score), float(gamma)) for name, box, score, gamma
             in zip(names, found.boxes, found.scores, found.gammas, strict=True)}
    return crops, dict(zip(names, found.coarse_landmarks, strict=True))


def two_stage_dataset_kwargs(cfg: Any, output_dir: str,
                             fine_model: torch.nn.Module | None = None) -> dict[str, Any]:
    """Extra arguments of the speed validation set: the two-stage crops and coarse landmarks
    when TEST.SPEED_BBOX is 'model' (the engine's hook), nothing otherwise."""
    if cfg.DATASET.DATASET != "speed" or cfg.TEST.SPEED_BBOX != "model":
        return {}
    boxes, coarse = two_stage_boxes(cfg, cfg.DATASET.TEST_SET, output_dir, fine_model)
    return {"boxes": boxes, "coarse_landmarks": coarse}
