"""COCO person keypoints: the original's data layout, box handling and evaluation.

Layout: ``root/annotations/person_keypoints_{set}.json`` (``image_info_{set}.json`` for test
sets, which have no labels) and ``root/images/{set}/{id:012d}.jpg`` (``images/{set}.zip@`` for
the zip format; 2014 sets prefix the file names with ``COCO_{set}_``).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from lib.dataset.detections import read_detections
from lib.dataset.JointsDataset import (
    DatasetFormatError,
    JointsDataset,
    drop_unusable_joints,
)
from lib.nms import oks_nms, soft_oks_nms
from lib.utils.io import read_json, write_json_atomic

logger = logging.getLogger(__name__)

COCO_STAT_NAMES = ("AP", "Ap .5", "AP .75", "AP (M)", "AP (L)",
                   "AR", "AR .5", "AR .75", "AR (M)", "AR (L)")
DETECTION_FIELDS = ("image_id", "category_id", "bbox", "score")


def image_id_from_path(path: str) -> int:
    """COCO image id: the last 12 characters of the file name's stem (``000000397133.jpg``)."""
    digits = os.path.splitext(os.path.basename(path))[0][-12:]
    if not digits.isdigit():
        raise ValueError(f"cannot read a COCO image id (12 digits) from the file name: {path}")
    return int(digits)


def clean_box(bbox: Any, width: int, height: int) -> list[float] | None:
    """The original's box sanitising: clip (x, y, w, h) to the image (inclusive pixel corners);
    None when nothing is left."""
    x, y, w, h = bbox
    x1 = max(0, x)
    y1 = max(0, y)
    x2 = min(width - 1, x1 + max(0, w - 1))
    y2 = min(height - 1, y1 + max(0, h - 1))
    if x2 >= x1 and y2 >= y1:
        return [x1, y1, x2 - x1, y2 - y1]
    return None


class COCODataset(JointsDataset):
    """COCO keypoints: GT boxes for training (and for testing with TEST.USE_GT_BBOX), the
    person detections of TEST.COCO_BBOX_FILE otherwise."""

    num_joints = 17
    flip_pairs = [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 16]]
    parent_ids = None
    upper_body_ids = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
    lower_body_ids = (11, 12, 13, 14, 15, 16)
    joints_weight = np.array(
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5],
        dtype=np.float32,
    ).reshape((17, 1))

    def __init__(self, cfg: Any, root: str, image_set: str, is_train: bool,
                 transform: Any = None) -> None:
        super().__init__(cfg, root, image_set, is_train, transform)
        self.nms_thre = cfg.TEST.NMS_THRE
        self.image_thre = cfg.TEST.IMAGE_THRE
        self.soft_nms = cfg.TEST.SOFT_NMS
        self.oks_thre = cfg.TEST.OKS_THRE
        self.in_vis_thre = cfg.TEST.IN_VIS_THRE
        self.bbox_file = cfg.TEST.COCO_BBOX_FILE
        self.use_gt_bbox = cfg.TEST.USE_GT_BBOX
        self.image_width = cfg.MODEL.IMAGE_SIZE[0]
        self.image_height = cfg.MODEL.IMAGE_SIZE[1]

        self.ann_file = self._get_ann_file_keypoint()
        self.coco = COCO()
        self.coco.dataset = read_json(self.ann_file, "COCO annotation file", DatasetFormatError)
        if not isinstance(self.coco.dataset, dict) or "images" not in self.coco.dataset:
            raise DatasetFormatError(f"COCO annotation file has no 'images' list: {self.ann_file}")
        self.coco.createIndex()

        cat_ids = self.coco.getCatIds()
        cats = [cat["name"] for cat in self.coco.loadCats(cat_ids)]
        self.classes = ["__background__", *cats]
        self.num_classes = len(self.classes)
        # The person category is the first one of the file, as in the original (class index 1).
        self.person_category_id = cat_ids[0] if cat_ids else 1
        self.image_set_index = self.coco.getImgIds()
        self.num_images = len(self.image_set_index)
        logger.info("=> num_images: %d", self.num_images)

        if is_train or self.use_gt_bbox:
            db, source = self._load_coco_keypoint_annotations(), self.ann_file
        else:
            db, source = self._load_coco_person_detection_results(), self.bbox_file
        self.db = self._finish_db(db, source)

    # ---- records --------------------------------------------------------------------------
    def _get_ann_file_keypoint(self) -> str:
        prefix = "person_keypoints" if "test" not in self.image_set else "image_info"
        return os.path.join(self.root, "annotations", f"{prefix}_{self.image_set}.json")

    def image_path_from_index(self, index: int) -> str:
        """``root/images/{set}/{index:012d}.jpg`` (zip: ``root/images/{set}.zip@/...``)."""
        file_name = f"{index:012d}.jpg"
        if "2014" in self.image_set:
            file_name = f"COCO_{self.image_set}_" + file_name
        prefix = "test2017" if "test" in self.image_set else self.image_set
        data_name = prefix + ".zip@" if self.data_format == "zip" else prefix
        return os.path.join(self.root, "images", data_name, file_name)

    def _load_coco_keypoint_annotations(self) -> list[dict[str, Any]]:
        db: list[dict[str, Any]] = []
        for index in self.image_set_index:
            db.extend(self._load_coco_keypoint_annotation_kernal(index))
        drop_unusable_joints(
            db, self.ann_file,
            lambda n: f"person {n} (image {image_id_from_path(db[n]['image'])})")
        return db

    def _load_coco_keypoint_annotation_kernal(self, index: int) -> list[dict[str, Any]]:
        """Records of one image: non-crowd people with at least one labelled keypoint and a box
        that survives clipping to the image."""
        im_ann = self.coco.loadImgs(index)[0]
        width, height = im_ann["width"], im_ann["height"]
        records = []
        for obj in self.coco.loadAnns(self.coco.getAnnIds(imgIds=index, iscrowd=False)):
            for key in ("bbox", "area", "category_id", "keypoints"):
                if key not in obj:
                    raise DatasetFormatError(
                        f"{self.ann_file}: annotation {obj.get('id')} (image {index}) has no "
                        f"'{key}' field"
                    )
            box = clean_box(obj["bbox"], width, height)
            if obj["area"] <= 0 or box is None:
                continue
            if obj["category_id"] != self.person_category_id:
                continue
            if max(obj["keypoints"], default=0) == 0:
                continue
            keypoints = np.asarray(obj["keypoints"], dtype=np.float64)
            if keypoints.size != 3 * self.num_joints:
                raise DatasetFormatError(
                    f"{self.ann_file}: annotation {obj.get('id')} (image {index}) has "
                    f"{keypoints.size} keypoint values ({keypoints.size / 3:g} joints), expected "
                    f"{3 * self.num_joints} ({self.num_joints} joints, MODEL.NUM_JOINTS)"
                )
            keypoints = keypoints.reshape(self.num_joints, 3)
            joints_3d, joints_3d_vis = self._joints_arrays(
                keypoints[:, :2], np.minimum(keypoints[:, 2], 1), self.ann_file,
                f"{obj.get('id')} (image {index})")
            center, scale = self._box_to_center_scale(*box)
            records.append({
                "image": self.image_path_from_index(index),
                "center": center,
                "scale": scale,
                "joints_3d": joints_3d,
                "joints_3d_vis": joints_3d_vis,
                "filename": "",
                "imgnum": 0,
            })
        return records

    def _load_coco_person_detection_results(self) -> list[dict[str, Any]]:
        """Records of the detector's person boxes scoring at least TEST.IMAGE_THRE."""
        what = "person detection file (TEST.COCO_BBOX_FILE)"
        if not self.bbox_file:
            raise FileNotFoundError(
                f"{what} is not set: set it, or TEST.USE_GT_BBOX True to test on GT boxes")
        all_boxes = read_detections(self.bbox_file, DETECTION_FIELDS, what)
        logger.info("=> Total boxes: %d", len(all_boxes))

        known_images = set(self.image_set_index)
        db = []
        for n_det, det in enumerate(all_boxes):
            if det["category_id"] != 1:
                continue
            if det["image_id"] not in known_images:
                raise DatasetFormatError(
                    f"{self.bbox_file}: detection {n_det} is for image {det['image_id']}, which "
                    f"is not in {self.ann_file}"
                )
            if det["score"] < self.image_thre:
                continue
            center, scale = self._box_to_center_scale(*det["bbox"])
            db.append({
                "image": self.image_path_from_index(det["image_id"]),
                "center": center,
                "scale": scale,
                "score": det["score"],
                "joints_3d": np.zeros((self.num_joints, 3), dtype=np.float64),
                "joints_3d_vis": np.ones((self.num_joints, 3), dtype=np.float64),
                "filename": "",
                "imgnum": 0,
            })
        logger.info("=> Total boxes after filter low score@%s: %d", self.image_thre, len(db))
        return db

    # ---- evaluation -----------------------------------------------------------------------
    def rescore_and_nms(self, preds: np.ndarray, all_boxes: np.ndarray,
                        img_path: Any) -> list[list[dict[str, Any]]]:
        """Per image (in order of first appearance): the people kept by OKS NMS (or soft OKS
        NMS) at TEST.OKS_THRE, after rescoring each person by box score x mean keypoint score
        over the keypoints scoring above TEST.IN_VIS_THRE."""
        preds = np.asarray(preds)
        all_boxes = np.asarray(all_boxes)
        if preds.ndim != 3 or preds.shape[1:] != (self.num_joints, 3):
            raise ValueError(
                f"preds must be N x {self.num_joints} x 3 (x, y, score), got {preds.shape}")
        if len(all_boxes) != len(preds) or len(img_path) != len(preds):
            raise ValueError(
                f"{len(preds)} preds, {len(all_boxes)} boxes and {len(img_path)} image paths "
                f"must match")

        # Keypoint score: the original's loop `kpt_score = 0; kpt_score += t_s` summed in
        # float64 (numpy 1 promoted int + float32 scalars to float64), left to right; cumsum
        # keeps that order. 0 when no keypoint clears the threshold.
        kpt_scores = preds[:, :, 2]
        confident = kpt_scores > self.in_vis_thre
        sums = np.cumsum(np.where(confident, kpt_scores, 0).astype(np.float64), axis=1)[:, -1]
        counts = confident.sum(axis=1)
        scores = np.where(counts > 0, sums / np.maximum(counts, 1) * all_boxes[:, 5], 0.0)

        people_per_image: dict[int, list[dict[str, Any]]] = {}
        for idx in range(len(preds)):
            people_per_image.setdefault(image_id_from_path(img_path[idx]), []).append({
                "keypoints": preds[idx],
                "center": all_boxes[idx, 0:2],
                "scale": all_boxes[idx, 2:4],
                "area": all_boxes[idx, 4],
                "score": scores[idx],
                "image": image_id_from_path(img_path[idx]),
            })
        nms = soft_oks_nms if self.soft_nms else oks_nms
        kept = []
        for people in people_per_image.values():
            keep = nms(people, self.oks_thre)
            kept.append([people[i] for i in keep] if keep else people)
        return kept

    def evaluate(self, cfg: Any, preds: np.ndarray, output_dir: str, all_boxes: np.ndarray,
                 img_path: Any, *args: Any, **kwargs: Any) -> tuple[OrderedDict, float]:
        """Write ``output_dir/results/keypoints_{set}_results_{rank}.json`` and score it with
        pycocotools ('keypoints'); returns (the ten COCO numbers by name, AP).

        ``preds`` (N x 17 x 3: x, y, score in image pixels), ``all_boxes`` (N x 6: center,
        scale, area, score) and ``img_path`` cover the whole data set (every rank merged).
        Test sets have no labels: only the file is written and the numbers are zeros.
        """
        if len(preds) == 0:
            raise ValueError("COCO evaluate: no predictions given")
        res_file = os.path.join(output_dir, "results",
                                f"keypoints_{self.image_set}_results_{cfg.RANK}.json")
        kept = self.rescore_and_nms(preds, all_boxes, img_path)
        logger.info("=> writing results json to %s", res_file)
        write_json_atomic(res_file, self._coco_keypoint_results(kept), sort_keys=True, indent=4)

        if "test" in self.image_set:
            logger.info("=> %s has no labels: results written to %s, scores set to 0",
                        self.image_set, res_file)
            name_value = OrderedDict((name, 0.0) for name in COCO_STAT_NAMES)
            return name_value, 0.0
        name_value = OrderedDict(self._do_python_keypoint_eval(res_file))
        return name_value, name_value["AP"]

    def _coco_keypoint_results(self, kept: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """COCO results format, one entry per kept person (with center and scale as extras)."""
        results = []
        for people in kept:
            for person in people:
                results.append({
                    "image_id": int(person["image"]),
                    "category_id": self.person_category_id,
                    "keypoints": np.asarray(person["keypoints"], np.float64).reshape(-1).tolist(),
                    "score": float(person["score"]),
                    "center": np.asarray(person["center"], np.float64).tolist(),
                    "scale": np.asarray(person["scale"], np.float64).tolist(),
                })
        return results

    def _do_python_keypoint_eval(self, res_file: str) -> list[tuple[str, float]]:
        coco_dt = self.coco.loadRes(res_file)
        coco_eval = COCOeval(self.coco, coco_dt, "keypoints")
        coco_eval.params.useSegm = None
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
        return [(name, float(coco_eval.stats[ind])) for ind, name in enumerate(COCO_STAT_NAMES)]
