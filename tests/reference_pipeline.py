"""The original HRNet data pipeline, step by step, kept only to prove that lib.dataset gives
the same items bit for bit (test_dataset_coco, test_dataset_mpii, test_targets).

It is written as the original was (deep copy of the record, full-image colour conversion, a
mirrored view, the transform call, per-joint loops) and draws random numbers in its order; it
knows nothing of the shared augmentation (lib.dataset.augmentation), which is off by default.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from lib.dataset.JointsDataset import JointsDataset
from lib.utils.image_io import IMREAD_FLAGS, read_image
from lib.utils.transforms import affine_transform, fliplr_joints, get_affine_transform


def gaussian_targets_loop(
    joints: np.ndarray,
    joints_vis: np.ndarray,
    image_size: Sequence[int],
    heatmap_size: Sequence[int],
    sigma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The original per-joint loop of generate_target (heatmaps J x H x W, weights J x 1)."""
    image_size = np.asarray(image_size)
    heatmap_size = np.asarray(heatmap_size)
    num_joints = len(joints)
    target_weight = np.ones((num_joints, 1), dtype=np.float32)
    target_weight[:, 0] = joints_vis[:, 0]
    target = np.zeros((num_joints, heatmap_size[1], heatmap_size[0]), dtype=np.float32)
    tmp_size = sigma * 3
    for joint_id in range(num_joints):
        feat_stride = image_size / heatmap_size
        mu_x = int(joints[joint_id][0] / feat_stride[0] + 0.5)
        mu_y = int(joints[joint_id][1] / feat_stride[1] + 0.5)
        ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
        br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
        if ul[0] >= heatmap_size[0] or ul[1] >= heatmap_size[1] or br[0] < 0 or br[1] < 0:
            target_weight[joint_id] = 0
            continue
        size = 2 * tmp_size + 1
        x = np.arange(0, size, 1, np.float32)
        y = x[:, np.newaxis]
        x0 = y0 = size // 2
        g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
        g_x = max(0, -ul[0]), min(br[0], heatmap_size[0]) - ul[0]
        g_y = max(0, -ul[1]), min(br[1], heatmap_size[1]) - ul[1]
        img_x = max(0, ul[0]), min(br[0], heatmap_size[0])
        img_y = max(0, ul[1]), min(br[1], heatmap_size[1])
        if target_weight[joint_id] > 0.5:
            target[joint_id][img_y[0] : img_y[1], img_x[0] : img_x[1]] = g[
                g_y[0] : g_y[1], g_x[0] : g_x[1]
            ]
    return target, target_weight


def reference_getitem(dataset: JointsDataset, idx: int
                      ) -> tuple[Any, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``dataset[idx]`` computed the original's way, from the same records and random state."""
    db_rec = copy.deepcopy(dataset.db[idx])
    image_file = db_rec["image"]
    filename = db_rec.get("filename", "")
    imgnum = db_rec.get("imgnum", "")
    flags = cv2.IMREAD_GRAYSCALE if dataset.read_grayscale else IMREAD_FLAGS
    data_numpy = read_image(image_file, flags | cv2.IMREAD_IGNORE_ORIENTATION,
                            dataset.data_format)
    if data_numpy.ndim == 2:
        data_numpy = cv2.cvtColor(data_numpy, cv2.COLOR_GRAY2BGR)
    if dataset.color_rgb:
        data_numpy = cv2.cvtColor(data_numpy, cv2.COLOR_BGR2RGB)

    joints = db_rec["joints_3d"]
    joints_vis = db_rec["joints_3d_vis"]
    c = db_rec["center"]
    s = db_rec["scale"]
    score = db_rec.get("score", 1)
    r = 0

    if dataset.is_train:
        if (np.sum(joints_vis[:, 0]) > dataset.num_joints_half_body
                and np.random.rand() < dataset.prob_half_body):
            c_half_body, s_half_body = dataset.half_body_transform(joints, joints_vis)
            if c_half_body is not None and s_half_body is not None:
                c, s = c_half_body, s_half_body
        sf = dataset.scale_factor
        rf = dataset.rotation_factor
        s = s * np.asarray(np.clip(np.random.randn() * sf + 1, 1 - sf, 1 + sf), dtype=s.dtype)
        r = np.clip(np.random.randn() * rf, -rf * 2, rf * 2) if random.random() <= 0.6 else 0
        if dataset.flip and random.random() <= 0.5:
            data_numpy = data_numpy[:, ::-1, :]
            joints, joints_vis = fliplr_joints(
                joints, joints_vis, data_numpy.shape[1], dataset.flip_pairs)
            c[0] = data_numpy.shape[1] - float(c[0]) - 1  # numpy 1 computed this in float64

    trans = get_affine_transform(c, s, r, dataset.image_size)
    model_input = cv2.warpAffine(
        data_numpy, trans, (int(dataset.image_size[0]), int(dataset.image_size[1])),
        flags=cv2.INTER_LINEAR)
    if dataset.transform:
        model_input = dataset.transform(model_input)
    for i in range(len(joints)):
        if joints_vis[i, 0] > 0.0:
            joints[i, 0:2] = affine_transform(joints[i, 0:2], trans)[:2]

    target, target_weight = gaussian_targets_loop(
        joints, joints_vis, dataset.image_size, dataset.heatmap_size, dataset.sigma)
    if dataset.use_different_joints_weight:
        target_weight = np.multiply(target_weight, dataset.joints_weight)
    meta = {
        "image": image_file, "filename": filename, "imgnum": imgnum, "joints": joints,
        "joints_vis": joints_vis, "center": c, "scale": s, "rotation": r, "score": score,
    }
    return model_input, torch.from_numpy(target), torch.from_numpy(target_weight), meta
