"""The learning rate over a training run (TRAIN.LR_SCHEDULER, TRAIN.WARMUP_EPOCHS).

'multistep' without warm-up is the original's MultiStepLR, stepped once per epoch, so the
original's experiment files train with bit-identical learning rates and their checkpoints
resume unchanged. A warm-up or the cosine schedule needs a finer step: those are one LambdaLR
stepped after every optimizer step, which is what lets a short CPU schedule (the demo's)
start at a high rate without diverging and still end annealed.
"""

from __future__ import annotations

import bisect
import math

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, MultiStepLR


def lr_factor(iteration: int, iters_per_epoch: int, end_epoch: int, schedule: str,
              warmup_epochs: float, lr_step: list[int], step_factor: float) -> float:
    """The multiplier of TRAIN.LR for the optimizer step ``iteration`` (from 0)."""
    warmup = round(warmup_epochs * iters_per_epoch)
    if iteration < warmup:
        return (iteration + 1) / warmup
    if schedule == "cosine":
        span = max(1, end_epoch * iters_per_epoch - warmup)
        progress = min(1.0, (iteration - warmup) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return step_factor ** bisect.bisect_right(lr_step, iteration // iters_per_epoch)


def build_scheduler(cfg, optimizer: torch.optim.Optimizer, iters_per_epoch: int
                    ) -> tuple[LRScheduler, bool]:
    """The run's scheduler and whether it steps per iteration (else per epoch)."""
    train = cfg.TRAIN
    if train.LR_SCHEDULER == "multistep" and train.WARMUP_EPOCHS == 0:
        return MultiStepLR(optimizer, train.LR_STEP, train.LR_FACTOR), False
    iters = max(1, iters_per_epoch)
    steps, factor = list(train.LR_STEP), train.LR_FACTOR
    return LambdaLR(optimizer, lambda it: lr_factor(
        it, iters, train.END_EPOCH, train.LR_SCHEDULER, train.WARMUP_EPOCHS, steps,
        factor)), True
