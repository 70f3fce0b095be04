"""Reading images: files or ``archive.zip@member``, OpenCV's decoding, an in-memory cache.

Ground floor of ``lib`` (OpenCV and numpy only): the data sets, the predictor and the tools
read pixels through here, so a missing or broken image gives the same message everywhere.
"""

from __future__ import annotations

import logging
import math
import os
import zipfile
from collections.abc import Callable

import cv2
import numpy as np

__all__ = ["IMREAD_FLAGS", "ImageCache", "configure_opencv_for_workers", "jpeg_is_truncated",
           "read_image"]

logger = logging.getLogger(__name__)

IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
_ZIP_READERS: dict[tuple[int, str], zipfile.ZipFile] = {}  # (pid, archive) -> open archive
_JPEG_CHECKED: dict[str, bool] = {}  # path -> truncated?, so each file is checked (and named) once
_JPEG_SOI = b"\xff\xd8"  # a JPEG stream starts with these bytes...
_JPEG_EOI = b"\xff\xd9"  # ...and ends with these (some writers pad the file with zeros after)
_JPEG_TAIL_BYTES = 4096  # the end is read in blocks of this size, back to the last non-zero byte


def jpeg_is_truncated(head: bytes, tail: bytes) -> bool:
    """True for a JPEG (``head`` starts with the start marker) whose ``tail`` (its last bytes)
    lacks the end marker once trailing zero padding is stripped: a file cut short, which libjpeg
    decodes with grey rows and only an anonymous "Premature end of JPEG file" on stderr."""
    return head.startswith(_JPEG_SOI) and not tail.rstrip(b"\x00").endswith(_JPEG_EOI)


def _warn_if_truncated(path: str, head: bytes, tail: bytes) -> None:
    """Warn once per path (the verdict is cached) when the JPEG at ``path`` is cut short."""
    if path in _JPEG_CHECKED:
        return
    truncated = _JPEG_CHECKED[path] = jpeg_is_truncated(head, tail)
    if truncated:
        logger.warning("=> truncated JPEG (no end marker FF D9): %s decodes with its missing "
                       "rows grey; re-copy or re-download it", path)


def _check_jpeg_file(path: str) -> None:
    """The end-marker check of a JPEG file on disk: its first 2 and last 4096 bytes (more only
    over zero padding), read once per path."""
    if path in _JPEG_CHECKED:
        return
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
            end = handle.seek(0, os.SEEK_END)
            tail = b""
            while end > 0 and not tail.rstrip(b"\x00"):  # step back over any zero padding
                start = max(end - _JPEG_TAIL_BYTES, 0)
                handle.seek(start)
                tail = handle.read(end - start) + tail
                end = start
    except OSError:
        return  # the decoder's own error (missing, unreadable) names the file
    _warn_if_truncated(path, head, tail)


def _zip_reader(archive: str) -> zipfile.ZipFile:
    """One open ZipFile per process: a handle inherited through fork shares its file offset."""
    key = (os.getpid(), archive)
    reader = _ZIP_READERS.get(key)
    if reader is None:
        if not os.path.isfile(archive):
            raise FileNotFoundError(f"zip archive of images not found: {archive}")
        reader = _ZIP_READERS[key] = zipfile.ZipFile(archive, "r")
    return reader


def _read_zip_member(path: str) -> bytes:
    """Bytes of ``archive.zip@member`` (the original also writes ``archive.zip@/member``)."""
    archive, _, member = path.partition("@")
    member = member.lstrip("/")
    reader = _zip_reader(archive)
    try:
        return reader.read(member)
    except KeyError:
        # Official archives (e.g. COCO's val2017.zip) keep their files in a folder of that name.
        folder = os.path.splitext(os.path.basename(archive))[0]
        try:
            return reader.read(f"{folder}/{member}")
        except KeyError:
            raise FileNotFoundError(
                f"image listed in the data set but missing: {member} is not in {archive}"
            ) from None


def read_image(path: str, flags: int = IMREAD_FLAGS, data_format: str = "jpg") -> np.ndarray:
    """Decode an image as OpenCV does (BGR uint8 by default); a missing or broken file is an error
    naming it, a JPEG cut short a warning naming it (once per file: it still decodes, with grey
    rows, so a long run goes on). ``data_format`` 'zip' reads ``archive.zip@member``."""
    if data_format == "zip":
        # No end-marker check here: OpenCV refuses a JPEG buffer cut short (an error below).
        image = cv2.imdecode(np.frombuffer(_read_zip_member(path), np.uint8), flags)
    else:
        image = cv2.imread(path, flags)
        if image is None and not os.path.isfile(path):
            raise FileNotFoundError(f"image listed in the data set but missing: {path}")
        if image is not None:
            _check_jpeg_file(path)
    if image is None:
        raise ValueError(f"cannot decode image (corrupt or not an image): {path}")
    return image


class ImageCache:
    """Decoded images kept in memory up to a byte budget, so that epochs after the first skip
    the decoding (0.66 ms per 640x400 JPEG here: 7-14% of a `make demo` training step).

    Filled on first read and never evicted (a shuffled epoch would thrash any eviction order);
    past the budget images are decoded every time. Cached arrays are read-only: the pipeline
    writes only to new arrays (flip, warp), and anything that did not would fail loudly rather
    than corrupt the next epoch.
    """

    def __init__(self, budget_bytes: float = math.inf) -> None:
        self.budget_bytes = max(budget_bytes, 0)
        self.used_bytes = 0
        self._images: dict[tuple[str, int], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._images)

    def get(self, path: str, flags: int, read: Callable[[], np.ndarray]) -> np.ndarray:
        """The image of (path, flags): from memory, else from ``read()`` (kept if it fits)."""
        key = (path, flags)
        image = self._images.get(key)
        if image is None:
            image = read()
            if self.used_bytes + image.nbytes <= self.budget_bytes:
                image.flags.writeable = False
                self._images[key] = image
                self.used_bytes += image.nbytes
        return image


def configure_opencv_for_workers(num_workers: int) -> None:
    """Call in the main process before creating DataLoaders with ``num_workers`` processes.

    With workers, each worker process is one unit of the parallelism, so OpenCV's own thread
    pool is switched off here, before the fork: the workers inherit that setting. (Changing
    it inside a forked worker instead can deadlock in OpenCV when the parent's pool was running.)
    """
    if num_workers > 0:
        cv2.setNumThreads(0)
