"""Pseudo-label self-training on unlabelled SPEED+ test domains (SPEC2021's placed teams).

A round: the model predicts each set of DATASET.TEST_SET ('lightbox/test', or several joined
by '+': 'lightbox/test+sunlamp/test') exactly as tools/test.py does (two-stage crops included)
-> PnP pose per image -> the images whose landmarks agree with their own pose
(lib.spacecraft.pose_solver.consistent_poses) are written, labelled with that pose, as the
image set '<domain>/pseudo' beside the domain's own files (SPEED+ layout) -> one model is
fine-tuned on all of them by the ordinary training run (MODEL.PRETRAINED = the round's weights,
SELF_TRAINING.EPOCHS at SELF_TRAINING.LR), with SELF_TRAINING.SOURCE_SHARE of each epoch
drawn from the labelled training set so that it does not forget it. The pose, not the raw
landmarks, is the label: its reprojection is a set of landmarks consistent with the
spacecraft's shape, which is what the model learns from. Rounds pay more than longer rounds:
each round's model finds a pose its landmarks agree with on more images than the last did.
The coarse model (crops only) is not retrained.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from yacs.config import CfgNode

from lib.config import ConfigValueError
from lib.core.engine import run_training, test_split
from lib.core.predictor import Predictor
from lib.spacecraft.files import PoseLabel, write_labels
from lib.spacecraft.pose_solver import consistent_poses, pnp_options, solve_poses
from lib.utils.io import image_set_tag, split_image_sets

logger = logging.getLogger(__name__)

PSEUDO_SET = "pseudo"


def pseudo_image_set(image_set: str) -> str:
    """'lightbox/test' -> 'lightbox/pseudo': the pseudo-labelled set of a SPEED+ domain."""
    parts = image_set.strip("/").split("/")
    if len(parts) < 2:
        raise ConfigValueError(f"DATASET.TEST_SET: self-training needs a SPEED+ image set "
                               f"'<domain>/<name>' (its pseudo-labels go to "
                               f"'<domain>/{PSEUDO_SET}.json'), got '{image_set}'")
    return "/".join(parts[:-1] + [PSEUDO_SET])


@dataclass(frozen=True)
class PseudoLabels:
    """One round's labels: the image set and its file, how many images were kept of all."""

    image_set: str
    labels_file: str
    kept: int
    total: int


def write_pseudo_labels(cfg: CfgNode, weights_file: str, output_dir: str) -> PseudoLabels:
    """Predict DATASET.TEST_SET with ``weights_file`` (two-stage crops' box file written to
    ``output_dir``), keep the images whose pose its landmarks agree with, write their poses as
    the set :func:`pseudo_image_set` (nothing is written when no image is kept)."""
    if cfg.DATASET.DATASET != "speed":
        raise ConfigValueError(f"DATASET.DATASET: self-training needs spacecraft poses "
                               f"('speed'), got '{cfg.DATASET.DATASET}'")
    target = pseudo_image_set(cfg.DATASET.TEST_SET)
    predictor = Predictor.from_weights(cfg, weights_file)
    dataset = test_split(cfg, output_dir, predictor.model)
    landmarks = predictor.predict(predictor.loader(dataset))
    camera = dataset.camera
    poses = solve_poses(landmarks[..., :2], landmarks[..., 2], dataset.landmarks, camera.matrix,
                        camera.dist_coeffs, **pnp_options(cfg))
    keep = consistent_poses(landmarks, poses, dataset.landmarks, camera.matrix,
                            camera.dist_coeffs, cfg.SELF_TRAINING.AGREEMENT_TOL,
                            cfg.SELF_TRAINING.MIN_AGREEING, cfg.TEST.SPEED_MAX_DISTANCE)
    labels_file = os.path.join(os.path.dirname(dataset.labels_file), f"{PSEUDO_SET}.json")
    kept = [PoseLabel(label.filename, poses.q[index], poses.r[index])
            for index, label in enumerate(dataset.labels) if keep[index]]
    if kept:
        write_labels(labels_file, kept)
    logger.info("=> pseudo-labels: %d of %d images of '%s' agree with their pose -> %s",
                len(kept), len(keep), cfg.DATASET.TEST_SET, labels_file if kept else "none")
    return PseudoLabels(target, labels_file, len(kept), len(keep))


def fine_tune_sets(cfg: CfgNode, labels: Sequence[PseudoLabels]) -> tuple[str, list[float]]:
    """(DATASET.TRAIN_SET, DATASET.TRAIN_SET_SHARES) of a round: the pseudo-labelled sets that
    kept images, in proportion to their sizes (each seen about once an epoch), and beside them
    the model's own training set(s) for SELF_TRAINING.SOURCE_SHARE of the samples (split by
    their shares, else equally)."""
    kept = [label for label in labels if label.kept > 0]
    if not kept:
        raise ValueError("self-training: no pseudo-labelled image to fine-tune on")
    total = sum(label.kept for label in kept)
    source_share = cfg.SELF_TRAINING.SOURCE_SHARE
    pseudo_shares = [(1.0 - max(source_share, 0.0)) * label.kept / total for label in kept]
    pseudo_sets = [label.image_set for label in kept]
    if source_share <= 0:
        return "+".join(pseudo_sets), pseudo_shares if len(kept) > 1 else []
    sources = split_image_sets(cfg.DATASET.TRAIN_SET)
    weights = list(cfg.DATASET.TRAIN_SET_SHARES) or [1.0] * len(sources)
    shares = pseudo_shares + [source_share * w / sum(weights) for w in weights]
    return "+".join([*pseudo_sets, *sources]), shares


def fine_tune_config(cfg: CfgNode, labels: Sequence[PseudoLabels], weights_file: str,
                     output_dir: str) -> CfgNode:
    """The training run of a round: from ``weights_file``, on the pseudo-labelled sets and
    the source share (:func:`fine_tune_sets`), validated on the first pseudo-labelled set with
    its own boxes (how well the model fits the labels), for SELF_TRAINING.EPOCHS at
    SELF_TRAINING.LR, into ``output_dir``."""
    config = cfg.clone()
    config.defrost()
    config.OUTPUT_DIR = output_dir
    config.DATASET.TRAIN_SET, config.DATASET.TRAIN_SET_SHARES = fine_tune_sets(cfg, labels)
    config.DATASET.TEST_SET = next(label.image_set for label in labels if label.kept > 0)
    config.TEST.SPEED_BBOX = "gt"
    config.TEST.ADAPT_STEPS = 0
    config.MODEL.INIT_WEIGHTS = True
    config.MODEL.PRETRAINED = weights_file
    config.TRAIN.BEGIN_EPOCH = 0
    config.TRAIN.END_EPOCH = cfg.SELF_TRAINING.EPOCHS
    config.TRAIN.LR = cfg.SELF_TRAINING.LR
    config.TRAIN.RESUME = False
    config.AUTO_RESUME = False
    config.freeze()
    return config


def target_configs(cfg: CfgNode) -> list[CfgNode]:
    """One config per set of a '+'-joined DATASET.TEST_SET, each predicting that set alone.
    One box file (TEST.SPEED_BBOX 'file') cannot hold the crops of several domains, whose
    file names repeat in SPEED+."""
    sets = split_image_sets(cfg.DATASET.TEST_SET)
    if len(sets) > 1 and cfg.TEST.SPEED_BBOX == "file":
        raise ConfigValueError(f"TEST.SPEED_BBOX: 'file' holds the crops of one image set, but "
                               f"DATASET.TEST_SET joins {len(sets)} ('{cfg.DATASET.TEST_SET}'): "
                               f"use 'model' (the crop search) for several")
    configs = []
    for image_set in sets:
        pseudo_image_set(image_set)  # a set outside a SPEED+ domain ends here, in one line
        config = cfg.clone()
        config.defrost()
        config.DATASET.TEST_SET = image_set
        config.freeze()
        configs.append(config)
    return configs


def self_train(cfg: CfgNode, cfg_file: str,
               first_round_boxes: Sequence[str] = ()) -> dict[str, Any]:
    """SELF_TRAINING.ROUNDS rounds from TEST.MODEL_FILE on every set of DATASET.TEST_SET; returns
    the final weights ('model_file': the input's where no image was ever kept), each round's
    labels ('rounds': one list per round, a PseudoLabels per set) and the images kept in each
    round ('kept', summed over the sets). ``first_round_boxes``: one box file per set, the
    crops TEST.MODEL_FILE found there already (a test run's), which the first round then reads
    instead of searching them again; later rounds' models search their own. Round k lives in
    OUTPUT_DIR/self_training/<domains>/round<k>."""
    weights = cfg.TEST.MODEL_FILE
    if not weights:
        raise ConfigValueError("TEST.MODEL_FILE: self-training starts from the trained model's "
                               "weights, none given")
    targets = target_configs(cfg)
    if first_round_boxes and len(first_round_boxes) != len(targets):
        raise ValueError(f"{len(first_round_boxes)} box files for the {len(targets)} image sets "
                         f"of '{cfg.DATASET.TEST_SET}'")
    first_targets = [_with_box_file(target, box_file)
                     for target, box_file in zip(targets, first_round_boxes, strict=False)]
    domains = "+".join(image_set_tag(pseudo_image_set(target.DATASET.TEST_SET).rsplit("/", 1)[0])
                       for target in targets)
    rounds = []
    for round_index in range(1, cfg.SELF_TRAINING.ROUNDS + 1):
        round_dir = os.path.join(cfg.OUTPUT_DIR, "self_training", domains, f"round{round_index}")
        os.makedirs(round_dir, exist_ok=True)
        labels = [write_pseudo_labels(target, weights, round_dir)
                  for target in (first_targets if round_index == 1 and first_targets
                                 else targets)]
        rounds.append(labels)
        if not any(label.kept for label in labels):
            logger.warning("=> self-training round %d: no image of '%s' agrees with its pose; "
                           "keeping %s", round_index, cfg.DATASET.TEST_SET, weights)
            break
        run = run_training(fine_tune_config(cfg, labels, weights, round_dir), cfg_file)
        weights = run["final_state"]
    return {"model_file": weights, "rounds": rounds,
            "kept": [sum(label.kept for label in labels) for labels in rounds]}


def _with_box_file(cfg: CfgNode, box_file: str) -> CfgNode:
    config = cfg.clone()
    config.defrost()
    config.TEST.SPEED_BBOX = "file"
    config.TEST.SPEED_BBOX_FILE = box_file
    config.freeze()
    return config
