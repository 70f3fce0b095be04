"""Heatmap regression losses.

Both losses equal the original's per-joint formulation (0.5 * MSE of each joint's heatmap,
weighted by its target weight), computed for all joints at once.
"""

from __future__ import annotations

import torch
from torch import nn


def _per_joint_mse(output: torch.Tensor, target: torch.Tensor,
                   target_weight: torch.Tensor | None) -> torch.Tensor:
    """0.5 * squared error averaged over pixels: N x J."""
    if output.shape != target.shape:
        raise ValueError(f"heatmap shapes differ: output {tuple(output.shape)}, "
                         f"target {tuple(target.shape)}")
    n, j = output.shape[:2]
    diff = output.reshape(n, j, -1) - target.reshape(n, j, -1)
    if target_weight is not None:
        diff = diff * target_weight.reshape(n, j, 1)
    return 0.5 * diff.pow(2).mean(dim=2)


class JointsMSELoss(nn.Module):
    """Mean over joints of 0.5 * MSE(pred_j * w_j, gt_j * w_j)."""

    def __init__(self, use_target_weight: bool):
        super().__init__()
        self.use_target_weight = use_target_weight

    def forward(self, output: torch.Tensor, target: torch.Tensor,
                target_weight: torch.Tensor) -> torch.Tensor:
        weight = target_weight if self.use_target_weight else None
        return _per_joint_mse(output, target, weight).mean()


class JointsOHKMMSELoss(nn.Module):
    """Online hard keypoint mining: per sample, the mean of the `topk` largest joint losses."""

    def __init__(self, use_target_weight: bool, topk: int = 8):
        super().__init__()
        self.use_target_weight = use_target_weight
        self.topk = topk

    def forward(self, output: torch.Tensor, target: torch.Tensor,
                target_weight: torch.Tensor) -> torch.Tensor:
        weight = target_weight if self.use_target_weight else None
        per_joint = _per_joint_mse(output, target, weight)
        if self.topk > per_joint.shape[1]:
            raise ValueError(f"LOSS.TOPK = {self.topk} exceeds the number of joints "
                             f"{per_joint.shape[1]}")
        hardest, _ = per_joint.topk(self.topk, dim=1, sorted=False)
        return (hardest.sum(dim=1) / self.topk).mean()


def build_criterion(cfg) -> nn.Module:
    """The loss the config asks for (LOSS.USE_OHKM, LOSS.TOPK, LOSS.USE_TARGET_WEIGHT)."""
    if cfg.LOSS.USE_OHKM:
        return JointsOHKMMSELoss(cfg.LOSS.USE_TARGET_WEIGHT, cfg.LOSS.TOPK)
    return JointsMSELoss(cfg.LOSS.USE_TARGET_WEIGHT)
