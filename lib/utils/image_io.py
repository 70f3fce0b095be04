"""Reading images: files or ``archive.zip@member``, OpenCV's decoding, an in-memory cache.

Ground floor of ``lib`` (OpenCV and numpy only): the data sets, the predictor and the tools
read pixels through here, so a missing or broken image gives the same message everywhere.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable

import cv2
import numpy as np

__all__ = ["IMREAD_FLAGS", "ImageCache", "configure_opencv_for_workers", "read_image"]

IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
_ZIP_READERS: dict[tuple[int, str], zipfile.ZipFile] = {}  # (pid, archive) -> open archive


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
    naming it. ``data_format`` 'zip' reads ``archive.zip@member``."""
    if data_format == "zip":
        buffer = np.frombuffer(_read_zip_member(path), np.uint8)
        image = cv2.imdecode(buffer, flags)
    else:
        image = cv2.imread(path, flags)
        if image is None and not os.path.isfile(path):
            raise FileNotFoundError(f"image listed in the data set but missing: {path}")
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

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = max(int(budget_bytes), 0)
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
