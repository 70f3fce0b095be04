"""Inference-time folding of BatchNorm into the convolution that feeds it.

In eval mode a BatchNorm is a per-channel affine map, so it can be merged into the weights
and bias of the preceding (transposed) convolution: one pass over each feature map less, and
the same heatmaps up to float rounding. Both models name such pairs `convK` / `bnK` inside a
block, or put them next to each other in an nn.Sequential; those two patterns are folded.
"""

from __future__ import annotations

import copy
import re

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def _fused(conv: nn.Module, bn: nn.BatchNorm2d) -> nn.Module:
    return fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))


def _fold_in_place(module: nn.Module) -> int:
    folded = 0
    if isinstance(module, nn.Sequential):
        for i in range(len(module) - 1):
            if isinstance(module[i], _CONVS) and isinstance(module[i + 1], nn.BatchNorm2d):
                module[i] = _fused(module[i], module[i + 1])
                module[i + 1] = nn.Identity()
                folded += 1
    for name, child in list(module.named_children()):
        match = re.fullmatch(r"bn(\d*)", name)
        conv = getattr(module, f"conv{match.group(1)}", None) if match else None
        if isinstance(child, nn.BatchNorm2d) and isinstance(conv, _CONVS):
            setattr(module, f"conv{match.group(1)}", _fused(conv, child))
            setattr(module, name, nn.Identity())
            folded += 1
    for child in module.children():
        folded += _fold_in_place(child)
    return folded


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` with its BatchNorms folded into their convolutions.

    The copy is for inference only: its state_dict no longer matches the checkpoint schema.
    """
    fused = copy.deepcopy(model).eval()
    _fold_in_place(fused)
    return fused
