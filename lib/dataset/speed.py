"""SPEED / SPEED+ spacecraft images as a keypoint data set: 2D joints = projected 3D landmarks.

Layouts (docs/spacecraft.md): an image set 'DOMAIN/NAME' reads ``ROOT/DOMAIN/NAME.json``
with images in ``ROOT/DOMAIN/images/`` (SPEED+ 'lightbox/test', the embedded 'test/test');
a plain NAME reads ``ROOT/synthetic/NAME.json`` + ``ROOT/synthetic/images/`` when that exists
(SPEED+), else ``ROOT/NAME.json`` + ``ROOT/images/NAME/`` (SPEED). The camera is
``ROOT/camera.json`` (the SPEED camera when absent), the landmarks DATASET.KEYPOINTS_FILE.

Crops: training and TEST.SPEED_BBOX 'gt' (an oracle, flagged in the printed scores) use the box
of the projected landmarks; 'file' and 'model' use a box file (format below); with
DATASET.SPEED_FULL_IMAGE the crop is the whole image (the coarse model of the two-stage path).
The box file's format is that of ``lib.spacecraft.files.read_box_file``.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from lib.dataset.JointsDataset import DatasetFormatError, JointsDataset
from lib.spacecraft.fallback import fill_failed_poses, mean_pose
from lib.spacecraft.files import (
    SUBMISSION_CATEGORIES,
    Camera,
    Crop,
    PoseLabel,
    load_camera,
    merge_spec2021_submission,
    read_box_file,
    read_labels,
    read_landmarks,
    write_submission,
)
from lib.spacecraft.geometry import project_points
from lib.spacecraft.pose_solver import pnp_options, solve_poses
from lib.spacecraft.scores import landmark_pixel_error, pose_score_summary
from lib.utils.image_io import read_image
from lib.utils.io import UserFileError, image_set_tag, split_image_sets

logger = logging.getLogger(__name__)

ORACLE_SUFFIX = " [oracle boxes]"  # appended to every score name when the crops came from GT


def submission_path(output_dir: str, image_set: str, oracle: bool = False) -> str:
    """Where ``evaluate`` writes the submission CSV of ``image_set`` ('test/test' -> test_test);
    crops from ground-truth boxes give ``..._oracle.csv``, never to be taken for a real run."""
    return os.path.join(output_dir, "results",
                        f"submission_{image_set_tag(image_set)}{'_oracle' if oracle else ''}.csv")


def spec2021_path(output_dir: str) -> str:
    """The one SPEC2021 submission of a run, which both test domains write their rows into."""
    return os.path.join(output_dir, "results", "submission_spec2021.csv")


def spec2021_category(image_set: str) -> str | None:
    """'lightbox' / 'sunlamp' for an image set of those SPEED+ test domains ('lightbox/test'),
    else None: their submissions carry the category column of SPEC2021."""
    domain = image_set.strip("/").split("/")[0]
    return domain if "/" in image_set.strip("/") and domain in SUBMISSION_CATEGORIES else None


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------
def resolve_image_set(root: str, image_set: str) -> tuple[str, str]:
    """(labels json, image folder) of an image set in the SPEED or SPEED+ layout."""
    if "/" in image_set.strip("/"):
        domain, name = image_set.strip("/").rsplit("/", 1)
        candidates = [(os.path.join(root, domain, f"{name}.json"),
                       os.path.join(root, domain, "images"))]
    else:
        candidates = [(os.path.join(root, "synthetic", f"{image_set}.json"),
                       os.path.join(root, "synthetic", "images")),
                      (os.path.join(root, f"{image_set}.json"),
                       os.path.join(root, "images", image_set))]
    for labels_file, image_dir in candidates:
        if os.path.isfile(labels_file):
            return labels_file, image_dir
    tried = " or ".join(c[0] for c in candidates)
    raise FileNotFoundError(f"speed image set '{image_set}': labels json not found ({tried})")


# --------------------------------------------------------------------------------------------
# The data set
# --------------------------------------------------------------------------------------------
class SpeedDataset(JointsDataset):
    """Spacecraft landmarks (DATASET.DATASET 'speed').

    ``boxes`` (filename -> Crop(box x, y, w, h, score, gamma), or (box, score)) handed over
    here are the crops ('model' when TEST.SPEED_BBOX says so, else 'file') whatever
    TEST.SPEED_BBOX_FILE holds (the gamma becomes the record's tone curve): the
    two-stage path (lib.core.speed_two_stage) gives the coarse model's crops this way, in
    memory, with the coarse landmarks (filename -> J x 3) as a fallback for failed PnP."""

    flip_pairs = None  # no left/right symmetry: no flip augmentation, no flip test
    read_grayscale = True
    perf_higher_is_better = False  # the ESA score is an error

    def __init__(self, cfg: Any, root: str, image_set: str, is_train: bool,
                 transform: Any = None,
                 boxes: Mapping[str, Crop | tuple[np.ndarray, float]] | None = None,
                 coarse_landmarks: Mapping[str, np.ndarray] | None = None) -> None:
        keypoints = cfg.DATASET.KEYPOINTS_FILE
        if not keypoints:
            raise ValueError("DATASET.KEYPOINTS_FILE is empty: the speed data set needs the 3D "
                             "landmark file (.json / .npy / .mat, relative to DATASET.ROOT)")
        self.landmarks = read_landmarks(os.path.join(root, keypoints), cfg.MODEL.NUM_JOINTS)
        self.num_joints = len(self.landmarks)
        super().__init__(cfg, root, image_set, is_train, transform)
        if self.flip or cfg.DATASET.PROB_HALF_BODY > 0:
            logger.info("=> speed: flip and half-body augmentation are off for spacecraft")
        self.flip = False
        self.prob_half_body = 0.0
        if cfg.TEST.FLIP_TEST:
            logger.warning("=> speed: TEST.FLIP_TEST is ignored (no left/right symmetry)")

        self.full_image = bool(cfg.DATASET.SPEED_FULL_IMAGE)

        self.box_source = "full image" if self.full_image else (
            "gt" if is_train else str(cfg.TEST.SPEED_BBOX))
        if boxes is not None and self.box_source == "gt":
            self.box_source = "file"  # boxes handed over explicitly win over the oracle
        self.given_boxes = boxes
        self.coarse_landmarks = coarse_landmarks  # J x 3 per filename: a fallback for PnP
        self.bbox_file = cfg.TEST.SPEED_BBOX_FILE if self.box_source == "file" else ""
        if boxes is None and self.box_source in ("file", "model") and not self.bbox_file:
            need = ("TEST.SPEED_BBOX_FILE" if self.box_source == "file" else
                    "the coarse model's crops (lib.core.speed_two_stage.two_stage_boxes)")
            raise ValueError(f"TEST.SPEED_BBOX '{self.box_source}' needs {need}; none given for "
                             f"image set '{image_set}'")

        self.camera: Camera = load_camera(root)
        self.labels_file, self.image_dir = resolve_image_set(root, image_set)
        self.labels: list[PoseLabel] = read_labels(self.labels_file)
        self.labelled = self._check_labelled()
        self.db = self._finish_db(self._get_db(), self.labels_file)
        self._check_image_size(root)
        logger.info("=> speed '%s': %d images, %s, crops from %s", image_set, len(self.db),
                    "labelled" if self.labelled else "unlabelled", self.box_source)

    def _check_image_size(self, root: str) -> None:
        """The first image must have the camera's Nu x Nv pixels: a camera.json of another
        resolution would put every projected landmark, box and PnP pose off without a word."""
        first = self.db[0]["image"]
        height, width = read_image(first, cv2.IMREAD_GRAYSCALE, self.data_format).shape[:2]
        if (width, height) != (self.camera.width, self.camera.height):
            camera_file = os.path.join(root, "camera.json")
            source = camera_file if os.path.isfile(camera_file) else (
                f"the SPEED camera (no {camera_file})")
            raise DatasetFormatError(
                f"{source}: Nu x Nv = {self.camera.width} x {self.camera.height} but the image "
                f"{first} is {width} x {height}: the camera does not match the images")

    # ---- records ---------------------------------------------------------------------------
    def _check_labelled(self) -> bool:
        with_pose = [label.has_pose for label in self.labels]
        if not self.labels:
            raise DatasetFormatError(f"{self.labels_file}: lists no images")
        if any(with_pose) and not all(with_pose):
            first = self.labels[with_pose.index(False)].filename
            raise DatasetFormatError(f"{self.labels_file}: some images have poses but "
                                     f"'{first}' has none (a set is labelled or not, as a whole)")
        labelled = all(with_pose)
        if not labelled and (self.is_train or self.box_source == "gt"):
            why = "training" if self.is_train else "TEST.SPEED_BBOX 'gt' (oracle boxes)"
            raise DatasetFormatError(f"{self.labels_file}: has no poses, which {why} needs")
        return labelled

    def projected_landmarks(self) -> tuple[np.ndarray, np.ndarray]:
        """Projected landmarks N x J x 2 (NaN behind the camera) and in-image flags N x J."""
        if not self.labelled:
            raise ValueError(f"{self.labels_file}: unlabelled set has no true landmarks")
        q = np.stack([label.q for label in self.labels])
        r = np.stack([label.r for label in self.labels])
        pixels = project_points(self.landmarks, q, r, self.camera.matrix,
                                self.camera.dist_coeffs).reshape(len(q), self.num_joints, 2)
        x, y = pixels[..., 0], pixels[..., 1]
        with np.errstate(invalid="ignore"):
            inside = ((x >= 0) & (x <= self.camera.width - 1)
                      & (y >= 0) & (y <= self.camera.height - 1))
        return pixels, inside

    def _boxes(self, pixels: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Crop boxes N x 4 (x, y, w, h), scores N and gammas N for the configured source."""
        n = len(self.labels)
        if self.box_source == "file" or self.box_source == "model":
            given = self.given_boxes is not None
            detections = self.given_boxes if given else read_box_file(self.bbox_file)
            missing = [lab.filename for lab in self.labels if lab.filename not in detections]
            if missing:
                source = "the boxes handed to the data set" if given else self.bbox_file
                raise DatasetFormatError(
                    f"{source}: no box for '{missing[0]}' ({len(missing)} of the {n} "
                    f"images of {self.labels_file} have none)")
            crops = [Crop(*detections[lab.filename]) for lab in self.labels]
            return (np.stack([crop.box for crop in crops]),
                    np.array([crop.score for crop in crops]),
                    np.array([crop.gamma for crop in crops]))
        # Box of all projected landmarks, inside the image or not (none in front of the
        # camera: the whole image).
        finite = np.all(np.isfinite(pixels), axis=2)[..., None]  # N x J x 1
        low = np.where(finite, pixels, np.inf).min(axis=1)
        high = np.where(finite, pixels, -np.inf).max(axis=1)
        whole = ~finite.any(axis=(1, 2))
        low[whole], high[whole] = 0.0, (self.camera.width, self.camera.height)
        boxes = np.concatenate([low, np.maximum(high - low, 1.0)], axis=1)
        return boxes, np.ones(n), np.ones(n)

    def _get_db(self) -> list[dict[str, Any]]:
        n, num_joints = len(self.labels), self.num_joints
        joints = np.zeros((n, num_joints, 2))
        visible = np.zeros((n, num_joints))
        pixels = None
        if self.labelled:
            pixels, inside = self.projected_landmarks()
            joints = np.where(np.isfinite(pixels), pixels, 0.0)
            visible = inside.astype(np.float64)

        if self.full_image:
            center, scale = self._image_center_scale(self.camera.width, self.camera.height)
            centers, scales = [center] * n, [scale] * n
            scores = gammas = np.ones(n)
        else:
            boxes, scores, gammas = self._boxes(pixels)
            pairs = [self._box_to_center_scale(*box) for box in boxes]
            centers, scales = [p[0] for p in pairs], [p[1] for p in pairs]

        db = []
        for index, label in enumerate(self.labels):
            image_file = os.path.join(self.image_dir, label.filename)
            if self.data_format != "zip" and not os.path.isfile(image_file):
                raise FileNotFoundError(f"image listed in {self.labels_file} but missing: "
                                        f"{image_file}")
            joints_3d, joints_3d_vis = self._joints_arrays(
                joints[index], visible[index], self.labels_file, label.filename)
            db.append({
                "image": image_file,
                "filename": label.filename,
                "imgnum": index,
                "center": centers[index],
                "scale": scales[index],
                "score": float(scores[index]),
                "gamma": float(gammas[index]),
                "joints_3d": joints_3d,
                "joints_3d_vis": joints_3d_vis,
            })
        return db

    # ---- evaluation ------------------------------------------------------------------------
    def _prior_pose(self, cfg: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """The mean pose of the training labels (DATASET.TRAIN_SET, each of its '+'-joined
        sets), the last fallback guess; None where a set is missing or none is labelled."""
        try:
            labels = [label for name in split_image_sets(cfg.DATASET.TRAIN_SET)
                      for label in read_labels(resolve_image_set(self.root, name)[0])]
        except (FileNotFoundError, UserFileError) as err:
            logger.warning("=> no training poses for the fallback prior (%s)", err)
            return None
        labelled = [label for label in labels if label.has_pose]
        if not labelled:
            return None
        return mean_pose(np.stack([lab.q for lab in labelled]),
                         np.stack([lab.r for lab in labelled]))

    def _ordered_predictions(self, preds: np.ndarray, filenames: Sequence[str] | None
                             ) -> np.ndarray:
        """Predictions in label order (by filename when the loop reported them)."""
        preds = np.asarray(preds, dtype=np.float64)
        if preds.ndim != 3 or preds.shape[1] != self.num_joints or preds.shape[2] < 3:
            raise ValueError(f"preds must be N x {self.num_joints} x 3 (x, y, confidence), "
                             f"got {preds.shape}")
        names = [lab.filename for lab in self.labels]
        if len(preds) != len(names):
            raise ValueError(f"{len(preds)} predictions for the {len(names)} images of "
                             f"{self.labels_file}")
        if filenames is not None and len(filenames) and any(filenames):
            row = {name: i for i, name in enumerate(filenames)}
            unknown = [name for name in names if name not in row]
            if unknown:
                raise ValueError(f"no prediction for '{unknown[0]}' of {self.labels_file}")
            preds = preds[[row[name] for name in names]]
        return preds

    def evaluate(self, cfg: Any, preds: np.ndarray, output_dir: str, all_boxes: Any = None,
                 img_path: Any = None, filenames: Sequence[str] | None = None,
                 imgnums: Any = None, *args: Any, **kwargs: Any
                 ) -> tuple[OrderedDict, float]:
        """Pose by PnP for every image (a fallback guess where it fails) -> submission CSV ->
        scores of exactly the poses written (labelled sets).

        The CSV is ``submission_path(output_dir, image_set)`` (``..._oracle.csv`` for GT crops);
        a SPEED+ test domain (lightbox, sunlamp) gets the SPEC2021 rows with its category.
        Returns (scores by name, the ESA score); names carry ORACLE_SUFFIX when the crops came
        from the ground truth. The table counts the PnP failures and the guess each one fell
        back to (lib.spacecraft.fallback). An unlabelled set only gets its submission: the
        table holds those counts and the perf is NaN.
        """
        preds = self._ordered_predictions(preds, filenames)
        options = pnp_options(cfg)
        poses = solve_poses(preds[:, :, :2], preds[:, :, 2], self.landmarks, self.camera.matrix,
                            self.camera.dist_coeffs, **options)
        names = [lab.filename for lab in self.labels]
        coarse = None
        if self.coarse_landmarks is not None:
            coarse = np.stack([self.coarse_landmarks[name] for name in names])
        filled = fill_failed_poses(
            poses, preds, self.landmarks, self.camera.matrix, self.camera.dist_coeffs, coarse,
            self._prior_pose(cfg) if poses.num_failed else None,
            max_distance=cfg.TEST.SPEED_MAX_DISTANCE, **options)
        csv_file = submission_path(output_dir, self.image_set, self.box_source == "gt")
        category = spec2021_category(self.image_set)
        write_submission(csv_file, names, filled.q, filled.r,
                         None if category is None else [category] * len(names))
        if category is not None and self.box_source != "gt":
            combined = spec2021_path(output_dir)
            merge_spec2021_submission(combined, category, names, filled.q, filled.r)
            logger.info("=> %s rows of the SPEC2021 submission (both domains): %s", category,
                        combined)
        table = OrderedDict([("PnP failures", float(poses.num_failed))])
        table.update((f"fallback: {source}", float(count))
                     for source, count in filled.counts().items())
        if poses.num_failed:
            first = int(np.flatnonzero(~poses.success)[0])
            logger.warning("=> PnP failed on %d of %d images (first: %s: %s); fell back to %s",
                           poses.num_failed, len(names), names[first], poses.reasons[first],
                           ", ".join(f"{name} {count}" for name, count
                                     in filled.counts().items() if count))

        if not self.labelled:
            logger.info("=> %s is unlabelled: wrote the submission %s (no scores)",
                        self.image_set, csv_file)
            return OrderedDict([("images", float(len(names))), *table.items()]), math.nan

        q_gt = np.stack([lab.q for lab in self.labels])
        r_gt = np.stack([lab.r for lab in self.labels])
        scores = pose_score_summary(q_gt, r_gt, filled.q, filled.r)  # what the file holds
        true_pixels, inside = self.projected_landmarks()
        scores["landmark err (px)"] = landmark_pixel_error(
            preds[:, :, :2], np.nan_to_num(true_pixels), inside)
        scores.update(table)
        logger.info("=> %s: submission %s", self.image_set, csv_file)
        perf = float(scores["ESA score"])
        if self.box_source == "gt":
            scores = OrderedDict((name + ORACLE_SUFFIX, value) for name, value in scores.items())
        return scores, perf
