"""Readers and writers for the SPEED / SPEED+ files: camera, landmarks, labels, submission CSV,
box files.

One module knows the on-disk formats so that the data set, the generator and the scoring tool
agree. Every reader validates what it returns and names the file (and row / entry) at fault.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from lib.utils.io import UserFileError, read_json, write_json_atomic, write_text_atomic

__all__ = [
    "SpeedFileError",
    "Camera",
    "PoseLabel",
    "Submission",
    "speed_camera",
    "read_camera",
    "load_camera",
    "write_camera",
    "read_landmarks",
    "write_landmarks",
    "read_labels",
    "write_labels",
    "write_submission",
    "read_submission",
    "match_submission",
    "read_box_file",
    "write_box_file",
]

SUBMISSION_HEADER = ("filename", "q0", "q1", "q2", "q3", "x", "y", "z")


class SpeedFileError(UserFileError):
    """A SPEED / SPEED+ file exists but its content is wrong (message names file and place)."""


@dataclass(frozen=True)
class Camera:
    """Pinhole camera in OpenCV conventions; ``dist_coeffs`` is all zeros for SPEED."""

    width: int
    height: int
    matrix: np.ndarray
    dist_coeffs: np.ndarray

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.dist_coeffs != 0))


@dataclass(frozen=True)
class PoseLabel:
    """One labels-json entry; ``q`` (unit, scalar-first) and ``r`` (metres), None if unlabelled."""

    filename: str
    q: np.ndarray | None = None
    r: np.ndarray | None = None

    @property
    def has_pose(self) -> bool:
        return self.q is not None


class Submission(NamedTuple):
    """A read submission: filenames, q N x 4, r N x 3 and each entry's 1-based CSV row number."""

    filenames: list[str]
    q: np.ndarray
    r: np.ndarray
    rows: list[int]


# ----------------------------------------------------------------------------------------- camera
def speed_camera(width: int = 1920, height: int = 1200) -> Camera:
    """The SPEED camera (17.6 mm lens, 5.86 um pixels, 1920 x 1200, no distortion).

    For another image size the focal length in pixels scales with ``width / 1920`` so the
    horizontal field of view stays the same; the principal point is the image centre
    (``width / 2``, ``height / 2``, which is (960, 600) at full size as SPEED states).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"camera size must be positive, got {width} x {height}")
    focal_px = 0.0176 / 5.86e-6 * width / 1920.0
    matrix = np.array(
        [[focal_px, 0.0, width / 2.0], [0.0, focal_px, height / 2.0], [0.0, 0.0, 1.0]]
    )
    return Camera(int(width), int(height), matrix, np.zeros(5))


def read_camera(path: str | os.PathLike) -> Camera:
    """A SPEED+ camera.json: Nu, Nv, cameraMatrix required; distCoeffs optional (zeros)."""
    path = Path(path)
    data = read_json(path, "camera file", SpeedFileError)
    if not isinstance(data, dict):
        raise SpeedFileError(f"{path}: expected a JSON object with Nu, Nv, cameraMatrix")
    for field in ("Nu", "Nv", "cameraMatrix"):
        if field not in data:
            raise SpeedFileError(f"{path}: missing required field '{field}'")
    try:
        width, height = int(data["Nu"]), int(data["Nv"])
    except (TypeError, ValueError) as err:
        raise SpeedFileError(f"{path}: 'Nu' and 'Nv' must be integers") from err
    if width <= 0 or height <= 0:
        raise SpeedFileError(f"{path}: image size must be positive, got Nu={width} Nv={height}")
    try:
        matrix = np.asarray(data["cameraMatrix"], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise SpeedFileError(f"{path}: 'cameraMatrix' must be a 3 x 3 array of numbers") from err
    if matrix.shape != (3, 3) or not np.all(np.isfinite(matrix)):
        raise SpeedFileError(f"{path}: 'cameraMatrix' must be a finite 3 x 3 array")
    if matrix[0, 0] <= 0 or matrix[1, 1] <= 0:
        raise SpeedFileError(f"{path}: 'cameraMatrix' focal lengths must be positive")
    try:
        dist = np.asarray(data.get("distCoeffs", np.zeros(5)), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise SpeedFileError(f"{path}: 'distCoeffs' must be a list of numbers") from err
    if dist.size not in (4, 5, 8, 12) or not np.all(np.isfinite(dist)):
        raise SpeedFileError(
            f"{path}: 'distCoeffs' must hold 4, 5, 8 or 12 finite numbers, got {dist.size}"
        )
    return Camera(width, height, matrix, dist)


def load_camera(root: str | os.PathLike) -> Camera:
    """``root/camera.json`` when present (SPEED+), otherwise the SPEED camera."""
    path = Path(root) / "camera.json"
    return read_camera(path) if path.is_file() else speed_camera()


def write_camera(path: str | os.PathLike, camera: Camera) -> None:
    """camera.json in the SPEED+ layout (plus focal length / pixel pitch in metres, informative)."""
    pixel_pitch = 5.86e-6 * 1920.0 / camera.width
    data = {
        "Nu": camera.width,
        "Nv": camera.height,
        "ppx": pixel_pitch,
        "ppy": pixel_pitch,
        "fx": float(camera.matrix[0, 0]) * pixel_pitch,
        "fy": float(camera.matrix[1, 1]) * pixel_pitch,
        "cameraMatrix": np.asarray(camera.matrix, dtype=np.float64).tolist(),
        "distCoeffs": np.asarray(camera.dist_coeffs, dtype=np.float64).tolist(),
    }
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


# -------------------------------------------------------------------------------------- landmarks
def _landmarks_from_mat(path: Path) -> np.ndarray:
    import scipy.io

    try:
        content = scipy.io.loadmat(str(path))
    except (ValueError, OSError) as err:
        raise SpeedFileError(f"{path}: cannot read as a MATLAB file ({err})") from err
    # The refined model is the better one where a file carries both.
    for name in ("tango3Dpoints_refined", "tango3Dpoints"):
        if name in content:
            points = np.asarray(content[name], dtype=np.float64)
            if points.ndim != 2 or points.shape[0] != 3:
                raise SpeedFileError(f"{path}: '{name}' must be 3 x N, got {points.shape}")
            return points.T
    raise SpeedFileError(f"{path}: no variable 'tango3Dpoints' or 'tango3Dpoints_refined'")


def read_landmarks(path: str | os.PathLike, num_joints: int | None = None) -> np.ndarray:
    """N x 3 body-frame landmarks in metres from .json / .npy (N x 3) or .mat (3 x N).

    A .json may be the bare N x 3 list or an object with a ``landmarks`` list. When
    ``num_joints`` is given (MODEL.NUM_JOINTS) a different N is an error naming both numbers.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".npy", ".mat"):
        raise SpeedFileError(f"{path}: landmark file must be .json, .npy or .mat")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: landmark file not found")
    if suffix == ".mat":
        points = _landmarks_from_mat(path)
    elif suffix == ".npy":
        points = np.load(path, allow_pickle=False)
    else:
        data = read_json(path, "landmark file", SpeedFileError)
        if isinstance(data, dict):
            if "landmarks" not in data:
                raise SpeedFileError(f"{path}: JSON object without a 'landmarks' list")
            data = data["landmarks"]
        try:
            points = np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise SpeedFileError(f"{path}: landmarks must be an N x 3 list of numbers") from err
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] == 0:
        raise SpeedFileError(f"{path}: landmarks must have shape N x 3, got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise SpeedFileError(f"{path}: landmarks contain non-finite values")
    if num_joints is not None and points.shape[0] != num_joints:
        raise SpeedFileError(
            f"{path}: holds {points.shape[0]} landmarks but MODEL.NUM_JOINTS is {num_joints}"
        )
    return points


def write_landmarks(path: str | os.PathLike, landmarks: np.ndarray) -> None:
    """keypoints.json: the bare N x 3 list of body-frame landmarks in metres."""
    points = np.asarray(landmarks, dtype=np.float64)
    rows = ",\n".join("  " + json.dumps([float(v) for v in row]) for row in points)
    write_text_atomic(path, "[\n" + rows + "\n]\n")


# ----------------------------------------------------------------------------------------- labels
def _vector(entry: dict, key: str, size: int, where: str) -> np.ndarray:
    try:
        values = np.asarray(entry[key], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise SpeedFileError(f"{where}: '{key}' must be a list of {size} numbers") from err
    if values.size != size or not np.all(np.isfinite(values)):
        raise SpeedFileError(f"{where}: '{key}' must be {size} finite numbers, got {entry[key]}")
    return values


def read_labels(path: str | os.PathLike) -> list[PoseLabel]:
    """Entries of a SPEED / SPEED+ labels json, in file order.

    The quaternion key may be ``q_vbs2tango_true`` (SPEED+) or ``q_vbs2tango`` (SPEED); the
    position is ``r_Vo2To_vbs_true``. An entry with only ``filename`` is unlabelled (test sets).
    Quaternions are normalised; a zero norm, half a pose or a repeated filename is an error.
    """
    path = Path(path)
    data = read_json(path, "labels file", SpeedFileError)
    if not isinstance(data, list):
        raise SpeedFileError(f"{path}: expected a JSON list of entries with 'filename'")
    labels: list[PoseLabel] = []
    seen: set[str] = set()
    for index, entry in enumerate(data):
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
            raise SpeedFileError(f"{path}: entry {index} has no 'filename' string")
        filename = entry["filename"]
        where = f"{path}: entry {index} ('{filename}')"
        if filename in seen:
            raise SpeedFileError(f"{where}: filename listed twice")
        seen.add(filename)
        q_key = next((k for k in ("q_vbs2tango_true", "q_vbs2tango") if k in entry), None)
        has_r = "r_Vo2To_vbs_true" in entry
        if q_key is None and not has_r:
            labels.append(PoseLabel(filename))
            continue
        if q_key is None or not has_r:
            missing = "r_Vo2To_vbs_true" if q_key is not None else "q_vbs2tango(_true)"
            raise SpeedFileError(f"{where}: has half a pose, '{missing}' is missing")
        q = _vector(entry, q_key, 4, where)
        norm = float(np.linalg.norm(q))
        if norm < 1e-12:
            raise SpeedFileError(f"{where}: '{q_key}' has zero norm")
        r = _vector(entry, "r_Vo2To_vbs_true", 3, where)
        labels.append(PoseLabel(filename, q / norm, r))
    return labels


def write_labels(path: str | os.PathLike, labels: Sequence[PoseLabel]) -> None:
    """A SPEED+ labels json (q_vbs2tango_true, r_Vo2To_vbs_true); unlabelled: filename only."""
    entries = []
    for label in labels:
        entry: dict[str, object] = {"filename": label.filename}
        if label.has_pose:
            entry["q_vbs2tango_true"] = [float(v) for v in label.q]
            entry["r_Vo2To_vbs_true"] = [float(v) for v in label.r]
        entries.append(entry)
    write_text_atomic(path, json.dumps(entries, indent=1) + "\n")


# ------------------------------------------------------------------------------------- submission
def write_submission(
    path: str | os.PathLike,
    filenames: Sequence[str],
    q: np.ndarray,
    r: np.ndarray,
    success: np.ndarray | None = None,
) -> None:
    """Submission CSV ``filename,q0,q1,q2,q3,x,y,z`` (header row, scalar-first q, metres).

    Rows whose pose failed (``success`` False, or non-finite values) are written as the
    documented worst-case guess q = [1, 0, 0, 0], r = [0, 0, 0], which the score counts as a
    relative translation error of exactly 1.
    """
    q = np.asarray(q, dtype=np.float64).reshape(-1, 4)
    r = np.asarray(r, dtype=np.float64).reshape(-1, 3)
    if not len(filenames) == len(q) == len(r):
        raise ValueError(
            f"submission needs one pose per filename: {len(filenames)} names, "
            f"{len(q)} quaternions, {len(r)} positions"
        )
    ok = np.ones(len(q), dtype=bool) if success is None else np.asarray(success, dtype=bool)
    ok = ok & np.all(np.isfinite(q), axis=1) & np.all(np.isfinite(r), axis=1)
    ok &= np.linalg.norm(np.nan_to_num(q), axis=1) > 1e-12
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUBMISSION_HEADER)
    for name, q_row, r_row, good in zip(filenames, q, r, ok, strict=True):
        if not good:
            q_row, r_row = np.array([1.0, 0.0, 0.0, 0.0]), np.zeros(3)
        writer.writerow([name, *(repr(float(v)) for v in (*q_row, *r_row))])
    write_text_atomic(path, buffer.getvalue())


def read_submission(path: str | os.PathLike) -> Submission:
    """Filenames, q N x 4, r N x 3 and row numbers of a submission CSV (header row optional).

    Errors name the file, the 1-based row number and what is wrong (column count, a value
    that is not a finite number, a zero quaternion, a repeated filename).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: submission file not found")
    filenames: list[str] = []
    poses: list[list[float]] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        for row_number, row in enumerate(csv.reader(handle), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            if row_number == 1 and row[0].strip().lower() == "filename":
                continue
            where = f"{path}: row {row_number}"
            if len(row) != 8:
                raise SpeedFileError(
                    f"{where}: expected 8 columns filename,q0,q1,q2,q3,x,y,z, got {len(row)}"
                )
            name = row[0].strip()
            if not name:
                raise SpeedFileError(f"{where}: empty filename")
            if name in seen:
                raise SpeedFileError(f"{where}: '{name}' already given in row {seen[name]}")
            values = []
            for column, cell in zip(SUBMISSION_HEADER[1:], row[1:], strict=True):
                try:
                    value = float(cell)
                except ValueError:
                    value = math.nan
                if not math.isfinite(value):
                    raise SpeedFileError(
                        f"{where}: {column} = '{cell.strip()}' is not a finite number"
                    )
                values.append(value)
            if math.hypot(*values[:4]) < 1e-12:
                raise SpeedFileError(f"{where}: quaternion of '{name}' has zero norm")
            seen[name] = row_number
            filenames.append(name)
            poses.append(values)
    table = np.asarray(poses, dtype=np.float64).reshape(-1, 7)
    return Submission(filenames, table[:, :4], table[:, 4:], list(seen.values()))


def match_submission(
    labels: Sequence[PoseLabel], submission: Submission, labels_name: str, submission_name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(q_gt, r_gt, q_est, r_est) in label order, after checking both files list the same images.

    An unlabelled image, a submission row for an unknown filename (named with its row number)
    or a labelled image without a row is a SpeedFileError.
    """
    if not labels:
        raise SpeedFileError(f"{labels_name}: no images to score")
    unlabelled = next((label.filename for label in labels if not label.has_pose), None)
    if unlabelled is not None:
        raise SpeedFileError(f"{labels_name}: '{unlabelled}' has no pose to score against")
    known = {label.filename for label in labels}
    for name, row in zip(submission.filenames, submission.rows, strict=True):
        if name not in known:
            raise SpeedFileError(
                f"{submission_name}: row {row}: unknown filename '{name}' (not in {labels_name})"
            )
    index = {name: i for i, name in enumerate(submission.filenames)}
    missing = next((label.filename for label in labels if label.filename not in index), None)
    if missing is not None:
        raise SpeedFileError(f"{submission_name}: no row for '{missing}' listed in {labels_name}")
    order = np.array([index[label.filename] for label in labels])
    q_gt = np.stack([label.q for label in labels])
    r_gt = np.stack([label.r for label in labels])
    return q_gt, r_gt, submission.q[order], submission.r[order]


# -------------------------------------------------------------------------------------- box files
# A box file (TEST.SPEED_BBOX_FILE, also what the two-stage path writes) is a JSON list of
# detections {"filename": "img000001.jpg", "bbox": [x, y, w, h], "score": 0.9} in full-image
# pixels (x, y the top-left corner; "image_name" is accepted for "filename"; "score" defaults
# to 1). A JSON object mapping a filename to one such entry (or to a list of them) is read too.
# Where an image has several detections the highest score wins.
def write_box_file(path: str, filenames: Sequence[str], boxes: np.ndarray,
                   scores: Sequence[float] | np.ndarray | None = None) -> str:
    """Write detections (boxes N x 4 as x, y, w, h full-image pixels) atomically; returns path."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) != len(filenames):
        raise ValueError(f"{len(filenames)} filenames but {len(boxes)} boxes")
    scores = np.ones(len(boxes)) if scores is None else np.asarray(scores, np.float64).ravel()
    if len(scores) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    entries = [{"filename": str(name), "bbox": [float(v) for v in box], "score": float(score)}
               for name, box, score in zip(filenames, boxes, scores, strict=True)]
    write_json_atomic(path, entries, indent=1)
    return path


def _box_entries(data: Any, path: str) -> list[tuple[Any, Any, str]]:
    """(filename, entry, where) of every detection of a parsed box file."""
    if isinstance(data, list):
        return [(e.get("filename", e.get("image_name")) if isinstance(e, dict) else None, e,
                 f"{path}: entry {i}") for i, e in enumerate(data)]
    if isinstance(data, dict):
        found = []
        for name, value in data.items():
            for k, entry in enumerate(value if isinstance(value, list) else [value]):
                found.append((name, entry, f"{path}: '{name}' detection {k}"))
        return found
    raise SpeedFileError(f"{path}: a box file is a JSON list of detections or an object "
                             f"keyed by filename, got {type(data).__name__}")


def read_box_file(path: str) -> dict[str, tuple[np.ndarray, float]]:
    """filename -> (box [x, y, w, h], score) of a box file, the best-scoring detection per image.

    A detection without a filename, with a box that is not 4 finite numbers or has no area, or a
    score that is not a number is an error naming the file and the entry.
    """
    best: dict[str, tuple[np.ndarray, float]] = {}
    for name, entry, where in _box_entries(read_json(path, "box file", SpeedFileError), path):
        if not isinstance(name, str) or not name or not isinstance(entry, dict):
            raise SpeedFileError(f"{where}: needs a 'filename' (or 'image_name') and a 'bbox'")
        if "bbox" not in entry:
            raise SpeedFileError(f"{where} ('{name}'): no 'bbox' [x, y, w, h]")
        try:
            box = np.asarray(entry["bbox"], dtype=np.float64).reshape(-1)
            score = float(entry.get("score", 1.0))
        except (TypeError, ValueError):
            raise SpeedFileError(
                f"{where} ('{name}'): 'bbox' must be 4 numbers and 'score' a number") from None
        if box.size != 4 or not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
            raise SpeedFileError(
                f"{where} ('{name}'): 'bbox' must be [x, y, w, h] with w, h > 0, got "
                f"{entry['bbox']}")
        if name not in best or score > best[name][1]:
            best[name] = (box, score)
    return best
