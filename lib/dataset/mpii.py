"""MPII human pose: the original's annotation json, crop adjustments and PCKh evaluation.

Layout: ``root/annot/{train,valid,test}.json`` (entries: image, center, scale, joints 1-based,
joints_vis), ``root/annot/gt_valid.mat`` (the labels PCKh is computed against) and
``root/images/`` (``images.zip@`` for the zip format).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any

import numpy as np
from scipy.io import loadmat, savemat

from lib.dataset.JointsDataset import DatasetFormatError, JointsDataset, drop_unusable_joints
from lib.utils.io import atomic_write, read_json

logger = logging.getLogger(__name__)

PCKH_NAMES = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "Mean@0.1")
GT_MAT_FIELDS = ("dataset_joints", "jnt_missing", "pos_gt_src", "headboxes_src")
HEAD_SIZE_FACTOR = 0.6  # PCKh's head size: 0.6 x the diagonal of the annotated head box
EXCLUDED_FROM_MEAN = (6, 7)  # pelvis and thorax are not scored in MPII's means


def _joint_names(dataset_joints: np.ndarray) -> list[str]:
    """Names from the .mat 'dataset_joints' cell array (1 x 16 cells of one string each)."""
    return [str(np.asarray(cell).reshape(-1)[0]) for cell in np.asarray(dataset_joints).ravel()]


def compute_pckh(pos_pred_src: np.ndarray, gt: dict[str, np.ndarray], gt_file: str = "gt"
                 ) -> OrderedDict:
    """MPII's PCKh table for predictions 16 x 2 x N (1-based pixels), as the original computes
    it: per part the percentage of visible joints within 0.5 head size, left and right parts
    averaged, 'Mean' weighting joints by their visible counts without pelvis and thorax.

    'Mean@0.1' keeps the published convention: it reads row 11 of the threshold sweep
    0, 0.01, ..., 0.5, i.e. the PCKh at 0.11 rather than 0.1. Reported numbers (e.g. in the
    HRNet paper) are computed this way, so we keep it for comparability.
    """
    for field in GT_MAT_FIELDS:
        if field not in gt:
            raise DatasetFormatError(f"{gt_file}: no '{field}' variable (needs {GT_MAT_FIELDS})")
    names = _joint_names(gt["dataset_joints"])
    jnt_missing = np.asarray(gt["jnt_missing"])
    pos_gt_src = np.asarray(gt["pos_gt_src"], dtype=np.float64)
    headboxes_src = np.asarray(gt["headboxes_src"], dtype=np.float64)
    if pos_pred_src.shape != pos_gt_src.shape:
        raise ValueError(
            f"{gt_file}: predictions have shape {pos_pred_src.shape} (joints x 2 x samples) but "
            f"the labels have {pos_gt_src.shape}: {pos_pred_src.shape[-1]} predictions for "
            f"{pos_gt_src.shape[-1]} labelled samples"
        )

    def part(name: str) -> int:
        if name not in names:
            raise DatasetFormatError(f"{gt_file}: joint '{name}' not in dataset_joints {names}")
        return names.index(name)

    jnt_visible = 1 - jnt_missing
    uv_err = np.linalg.norm(pos_pred_src - pos_gt_src, axis=1)
    headsizes = np.linalg.norm(headboxes_src[1, :, :] - headboxes_src[0, :, :], axis=0)
    headsizes *= HEAD_SIZE_FACTOR
    scale = np.multiply(headsizes, np.ones((len(uv_err), 1)))
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled_uv_err = np.multiply(np.divide(uv_err, scale), jnt_visible)
        jnt_count = np.sum(jnt_visible, axis=1)

        def pck(threshold: float) -> np.ndarray:
            within = np.multiply(scaled_uv_err <= threshold, jnt_visible)
            return np.divide(100.0 * np.sum(within, axis=1), jnt_count)

        pckh = pck(0.5)
        sweep = np.arange(0, 0.5 + 0.01, 0.01)
        pck_at_011 = pck(sweep[11])

    # The original's masked arrays: masked entries count as 0 in the weighted sums.
    scored = np.ones(len(pckh), dtype=bool)
    scored[list(EXCLUDED_FROM_MEAN)] = False
    jnt_ratio = np.where(scored, jnt_count / np.sum(jnt_count[scored]).astype(np.float64), 0.0)

    def both(left: str, right: str) -> float:
        return 0.5 * (pckh[part(left)] + pckh[part(right)])

    return OrderedDict([
        ("Head", pckh[part("head")]),
        ("Shoulder", both("lsho", "rsho")),
        ("Elbow", both("lelb", "relb")),
        ("Wrist", both("lwri", "rwri")),
        ("Hip", both("lhip", "rhip")),
        ("Knee", both("lkne", "rkne")),
        ("Ankle", both("lank", "rank")),
        ("Mean", np.sum(np.where(scored, pckh, 0.0) * jnt_ratio)),
        ("Mean@0.1", np.sum(np.where(scored, pck_at_011, 0.0) * jnt_ratio)),
    ])


class MPIIDataset(JointsDataset):
    """MPII: 16 joints (0 r-ankle ... 5 l-ankle, 6 pelvis, 7 thorax, 8 neck, 9 head top,
    10 r-wrist ... 15 l-wrist)."""

    num_joints = 16
    flip_pairs = [[0, 5], [1, 4], [2, 3], [10, 15], [11, 14], [12, 13]]
    parent_ids = [1, 2, 6, 6, 3, 4, 6, 6, 7, 8, 11, 12, 7, 7, 13, 14]
    upper_body_ids = (7, 8, 9, 10, 11, 12, 13, 14, 15)
    lower_body_ids = (0, 1, 2, 3, 4, 5, 6)

    def __init__(self, cfg: Any, root: str, image_set: str, is_train: bool,
                 transform: Any = None) -> None:
        super().__init__(cfg, root, image_set, is_train, transform)
        self.ann_file = os.path.join(self.root, "annot", f"{self.image_set}.json")
        self.db = self._finish_db(self._get_db(), self.ann_file)
        if not is_train and "test" not in self.image_set:
            # Scoring reads it after the epoch: a missing file must stop the run before.
            gt_file = self.gt_file()
            if not os.path.isfile(gt_file):
                raise FileNotFoundError(
                    f"MPII ground-truth file not found: {gt_file} (PCKh of '{self.image_set}' "
                    f"is computed against it)")

    def gt_file(self) -> str:
        """``root/annot/gt_{set}.mat``: the labels PCKh is computed against."""
        return os.path.join(self.root, "annot", f"gt_{self.image_set}.mat")

    def _get_db(self) -> list[dict[str, Any]]:
        anno = read_json(self.ann_file, "MPII annotation file", DatasetFormatError)
        if not isinstance(anno, list):
            raise DatasetFormatError(f"MPII annotation file must hold a list: {self.ann_file}")
        labelled = self.image_set != "test"
        required = ("image", "center", "scale") + (("joints", "joints_vis") if labelled else ())
        image_dir = "images.zip@" if self.data_format == "zip" else "images"

        db = []
        for n_entry, a in enumerate(anno):
            for key in required:
                if not isinstance(a, dict) or key not in a:
                    raise DatasetFormatError(
                        f"{self.ann_file}: entry {n_entry} has no '{key}' field")
            c = np.array(a["center"], dtype=np.float64)
            s = np.array([a["scale"], a["scale"]], dtype=np.float64)
            # Move the center down and enlarge the box so that the limbs are not cropped.
            if c[0] != -1:
                c[1] = c[1] + 15 * s[1]
                s = s * self.bbox_padding
            c = c - 1  # MATLAB's 1-based pixels to 0-based

            if labelled:
                joints = np.asarray(a["joints"], dtype=np.float64)
                joints_3d, joints_3d_vis = self._joints_arrays(
                    joints - 1, a["joints_vis"], self.ann_file,
                    f"{n_entry} ({a['image']})")
            else:
                joints_3d = np.zeros((self.num_joints, 3), dtype=np.float64)
                joints_3d_vis = np.zeros((self.num_joints, 3), dtype=np.float64)
            db.append({
                "image": os.path.join(self.root, image_dir, a["image"]),
                "center": c,
                "scale": s,
                "joints_3d": joints_3d,
                "joints_3d_vis": joints_3d_vis,
                "filename": "",
                "imgnum": 0,
            })
        if labelled:
            drop_unusable_joints(db, self.ann_file,
                                 lambda n: f"entry {n} ({anno[n]['image']})")
        return db

    def evaluate(self, cfg: Any, preds: np.ndarray, output_dir: str, *args: Any,
                 **kwargs: Any) -> tuple[OrderedDict, float]:
        """PCKh@0.5 of ``preds`` (N x 16 x 2+, 0-based image pixels, the whole set in order)
        against ``root/annot/gt_{set}.mat``; ``output_dir/pred.mat`` gets the 1-based preds.
        Returns (the PCKh table by name, 'Mean'); zeros for the unlabelled test split."""
        preds = np.asarray(preds)
        if preds.ndim != 3 or preds.shape[1] != self.num_joints or preds.shape[2] < 2:
            raise ValueError(f"preds must be N x {self.num_joints} x 2+, got {preds.shape}")
        preds = preds[:, :, 0:2] + 1.0
        if output_dir:
            atomic_write(os.path.join(output_dir, "pred.mat"),
                         lambda handle: savemat(handle, {"preds": preds}))

        if "test" in self.image_set:
            logger.info("=> %s has no labels: only pred.mat written, scores set to 0",
                        self.image_set)
            return OrderedDict((name, 0.0) for name in PCKH_NAMES), 0.0

        gt_file = self.gt_file()
        if not os.path.isfile(gt_file):
            raise FileNotFoundError(f"MPII ground-truth file not found: {gt_file}")
        name_value = compute_pckh(np.transpose(preds, [1, 2, 0]), loadmat(gt_file), gt_file)
        return name_value, name_value["Mean"]
