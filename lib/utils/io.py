"""Files in and out: the one atomic writer, the one JSON reader, the error for a user's bad file.

Every file the framework writes (JSON, CSV, checkpoints, .mat, pictures) goes through
:func:`atomic_write`: the bytes land in a temporary file beside the target, are flushed to
disk, then renamed over it, so a reader (or a run killed at any instant) never sees half a
file and never loses the previous version. Temporary names start with ``.<name>.`` and end
with ``.tmp``, so a leftover from a kill is easy to recognise.

This module imports only the standard library: the ground floor of ``lib`` (the torch-free
``lib.spacecraft`` uses it too).
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "UserFileError",
    "atomic_write",
    "write_bytes_atomic",
    "write_text_atomic",
    "write_json_atomic",
    "read_json",
    "disk_full_error",
    "image_set_tag",
]


class UserFileError(ValueError):
    """A file given by the user exists but its content is wrong; the message names the file
    (and the entry or row) and what is wrong. Command-line tools turn it into one line."""


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], object],
                 binary: bool = True) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, fsync, rename it over ``path``.

    Text mode writes UTF-8 with newlines untranslated. On any exception (KeyboardInterrupt
    included) the temporary file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                             dir=path.parent)
    try:
        mode = "wb" if binary else "w"
        text_options = {} if binary else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(descriptor, mode, **text_options) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text), binary=False)


def write_json_atomic(path: str | os.PathLike, obj: Any, **dump_kwargs: Any) -> Path:
    """``json.dump(obj, **dump_kwargs)`` through :func:`atomic_write`."""
    return atomic_write(path, lambda handle: json.dump(obj, handle, **dump_kwargs), binary=False)


def read_json(path: str | os.PathLike, what: str = "JSON file",
              error: type[UserFileError] = UserFileError) -> Any:
    """Parsed JSON of ``path``. A missing file is a FileNotFoundError and broken JSON an
    ``error`` (a :class:`UserFileError` subclass of the caller's choice), both naming ``what``
    and the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(f"{what} is not valid JSON: {path}: {err}") from None


def disk_full_error(error: BaseException) -> OSError | None:
    """The ENOSPC OSError anywhere in the cause / context chain of ``error`` (torch.save buries
    it under a RuntimeError), or None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return current
        current = current.__cause__ or current.__context__
    return None


def split_image_sets(image_set: str) -> list[str]:
    """The image sets of a '+'-joined DATASET.TRAIN_SET ('lightbox/pseudo+train' ->
    ['lightbox/pseudo', 'train']): several sets trained on at once (lib.dataset.mixing)."""
    return [part.strip() for part in image_set.split("+")]


def image_set_tag(image_set: str) -> str:
    """An image set's name as one file-name part ('lightbox/test' -> 'lightbox_test'), for the
    files a run writes per set (submissions, crop boxes, adapted weights)."""
    return image_set.strip("/").replace("/", "_").replace(os.sep, "_")
