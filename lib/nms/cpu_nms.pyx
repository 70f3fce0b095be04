# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Greedy box NMS in C, the fast path behind ``lib.nms.nms`` for numpy input.

Arithmetic mirrors the numpy fallback in ``box_nms.py`` operation for operation (float64,
+1 pixel areas, suppression only when IoU > thresh) so both paths return the same indices.
"""

import numpy as np


def cpu_nms(const double[:, ::1] dets, double thresh):
    """Keep-list of rows of ``dets`` (N x 5: x1 y1 x2 y2 score), best score first."""
    cdef Py_ssize_t n = dets.shape[0]
    if n == 0:
        return []

    # Same tie order as the numpy fallback: numpy's default argsort, reversed.
    cdef Py_ssize_t[::1] order = np.ascontiguousarray(
        np.argsort(np.asarray(dets[:, 4]))[::-1], dtype=np.intp
    )
    cdef double[::1] areas = np.empty(n, dtype=np.float64)
    cdef unsigned char[::1] suppressed = np.zeros(n, dtype=np.uint8)

    cdef Py_ssize_t row, pos, other_pos, i, j
    cdef double ix1, iy1, ix2, iy2, iarea, w, h, inter, ovr
    for row in range(n):
        areas[row] = (dets[row, 2] - dets[row, 0] + 1) * (dets[row, 3] - dets[row, 1] + 1)

    keep = []
    for pos in range(n):
        i = order[pos]
        if suppressed[i]:
            continue
        keep.append(i)
        ix1 = dets[i, 0]
        iy1 = dets[i, 1]
        ix2 = dets[i, 2]
        iy2 = dets[i, 3]
        iarea = areas[i]
        for other_pos in range(pos + 1, n):
            j = order[other_pos]
            if suppressed[j]:
                continue
            w = min(ix2, dets[j, 2]) - max(ix1, dets[j, 0]) + 1
            h = min(iy2, dets[j, 3]) - max(iy1, dets[j, 1]) + 1
            w = max(0.0, w)
            h = max(0.0, h)
            inter = w * h
            ovr = inter / (iarea + areas[j] - inter)
            # ``not (ovr <= thresh)`` rather than ``ovr > thresh``: a NaN overlap suppresses,
            # exactly as the numpy path (which keeps only ovr <= thresh) does.
            if not (ovr <= thresh):
                suppressed[j] = 1
    return keep
