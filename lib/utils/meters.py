"""Running averages for the training log."""

from __future__ import annotations


class AverageMeter:
    """The latest value and the count-weighted mean of everything seen so far."""

    def __init__(self) -> None:
        self.val = 0.0
        self.sum = 0.0
        self.count = 0
        self.avg = 0.0

    def update(self, val: float, n: int = 1) -> None:
        self.val = float(val)
        self.sum += float(val) * n
        self.count += n
        self.avg = self.sum / self.count if self.count else 0.0
