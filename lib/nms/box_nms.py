"""Greedy box NMS with one contract and three engines.

Contract (the original HRNet / py-faster-rcnn one): ``dets`` is N x 5 (x1, y1, x2, y2, score)
in inclusive pixel coordinates, so a box covers ``(x2 - x1 + 1) * (y2 - y1 + 1)`` pixels; boxes
are visited by descending score and a box is dropped when its IoU with an already kept box is
greater than ``thresh`` (kept when IoU <= thresh). The result is a list of row indices, best
score first.

Engines: a torch tensor (CPU or CUDA) goes to ``torchvision.ops.nms``; a numpy array goes to the
Cython extension when it has been built (``make -C lib``), else to a vectorised numpy loop.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any

import numpy as np

try:
    from .cpu_nms import cpu_nms as _cpu_nms
except ImportError:  # extension not built: the numpy engine takes over
    _cpu_nms = None

logger = logging.getLogger(__name__)


def nms(dets: Any, thresh: float) -> list[int]:
    """Indices of the boxes that survive greedy NMS at IoU ``thresh``, best score first.

    ``dets``: N x 5 array-like or torch tensor (x1, y1, x2, y2, score). Empty input gives [].
    """
    if _is_torch_tensor(dets):
        _check_dets_shape(tuple(dets.shape))
        return _nms_torchvision(dets, thresh) if dets.shape[0] else []
    boxes = np.asarray(dets, dtype=np.float64)
    if boxes.shape[:1] == (0,):
        return []
    _check_dets_shape(boxes.shape)
    if _cpu_nms is None:
        _log_missing_extension()
        return _nms_numpy(boxes, thresh)
    return _nms_cython(boxes, thresh)


def _nms_cython(dets: np.ndarray, thresh: float) -> list[int]:
    """The compiled engine; raises if the extension was not built."""
    if _cpu_nms is None:
        raise RuntimeError(
            "lib.nms.cpu_nms is not built: run `make setup` "
            "or `make -C lib PYTHON=$PWD/.venv/bin/python`"
        )
    return _cpu_nms(np.ascontiguousarray(dets, dtype=np.float64), float(thresh))


def _nms_numpy(dets: np.ndarray, thresh: float) -> list[int]:
    """Pure numpy engine: one vectorised IoU row per kept box (memory stays O(N))."""
    dets = np.asarray(dets, dtype=np.float64)
    x1, y1, x2, y2, scores = dets.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        inter_x2, inter_x1 = np.minimum(x2[best], x2[rest]), np.maximum(x1[best], x1[rest])
        inter_y2, inter_y1 = np.minimum(y2[best], y2[rest]), np.maximum(y1[best], y1[rest])
        width = np.maximum(0.0, inter_x2 - inter_x1 + 1)
        height = np.maximum(0.0, inter_y2 - inter_y1 + 1)
        inter = width * height
        with np.errstate(divide="ignore", invalid="ignore"):  # degenerate boxes: NaN suppresses
            overlap = inter / (areas[best] + areas[rest] - inter)
        order = rest[overlap <= thresh]
    return keep


def _nms_torchvision(dets: Any, thresh: float) -> list[int]:
    """torchvision engine for tensors on any device.

    torchvision measures boxes as continuous (x2 - x1) * (y2 - y1) with no +1, so x2 and y2 are
    shifted by one pixel first: that gives exactly the inclusive-pixel widths/heights and hence
    the same IoU (up to float rounding; float32 tensors are computed in float32). Like the
    other engines it suppresses only when IoU > thresh. Ties in score may be ordered
    differently from numpy's argsort.
    """
    import torchvision  # lazy: only tensor callers pay for the import

    if not dets.is_floating_point():
        dets = dets.double()
    boxes = dets[:, :4].clone()
    boxes[:, 2:] += 1
    return torchvision.ops.nms(boxes, dets[:, 4].contiguous(), float(thresh)).tolist()


def _is_torch_tensor(obj: Any) -> bool:
    """True for torch tensors, without importing torch for numpy callers."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def _check_dets_shape(shape: tuple[int, ...]) -> None:
    if len(shape) != 2 or shape[1] != 5:
        raise ValueError(
            f"nms: dets must be N x 5 (x1, y1, x2, y2, score), got shape {tuple(shape)}"
        )


@functools.cache
def _log_missing_extension() -> None:
    """Say once per process that the slow engine is in use and how to get the fast one."""
    logger.warning(
        "lib.nms.cpu_nms extension not built, using the numpy box NMS; "
        "build it with `make setup` or `make -C lib PYTHON=$PWD/.venv/bin/python`"
    )
