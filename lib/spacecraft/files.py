"""Readers and writers for the SPEED / SPEED+ files: camera, landmarks, labels, submission CSV,
box files.

One module knows the on-disk formats so that the data set, the generator and the scoring tool
agree. Every reader validates what it returns and names the file (and row / entry) at fault.
"""
from __future__ import annotations

import csv
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
    "SUBMISSION_HEADER",
    "SUBMISSION_CATEGORIES",
    "speed_camera",
    "speedplus_camera",
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
    "merge_spec2021_submission",
    "Crop",
    "read_box_file",
    "write_box_file",
]

# The SPEC2019 row (ESA's starter kit, no header line); SPEC2021 puts a category before it.
SUBMISSION_HEADER = ("filename", "q0", "q1", "q2", "q3", "x", "y", "z")
SUBMISSION_CATEGORIES = ("lightbox", "sunlamp")  # SPEC2021's two test domains, in one file


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
    """A read submission: filenames, q N x 4 and r N x 3 as written, each entry's 1-based line
    number in the file (``rows``) and its SPEC2021 category (``categories`` is None for a file
    without the category column)."""

    filenames: list[str]
    q: np.ndarray
    r: np.ndarray
    rows: list[int]
    categories: list[str] | None = None

    def of_category(self, category: str) -> Submission:
        """Only the rows of one SPEC2021 category (none for a file without categories)."""
        keep = [i for i, name in enumerate(self.categories or ()) if name == category]
        return Submission([self.filenames[i] for i in keep], self.q[keep], self.r[keep],
                          [self.rows[i] for i in keep], [category] * len(keep))


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


# The SPEED+ camera as SLAB ships it in camera.json (1920 x 1200; OpenCV's k1, k2, p1, p2, k3).
_SPEEDPLUS_MATRIX = ((2988.5795163815555, 0.0, 960.0), (0.0, 2988.3401159176124, 600.0),
                     (0.0, 0.0, 1.0))
_SPEEDPLUS_DIST = (-0.22383016606510672, 0.51409797089106379, -0.00066499611998340662,
                   -0.00021404771667484594, -0.13124227429077406)


def speedplus_camera(width: int = 1920, height: int = 1200) -> Camera:
    """The real SPEED+ camera (with its lens distortion), resampled to ``width`` x ``height``.

    Resizing the image scales the focal lengths and the principal point by ``width / 1920``
    horizontally and ``height / 1200`` vertically. The distortion coefficients act on
    normalised coordinates (x/z, y/z), which a resize leaves alone, so they stay as they are.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"camera size must be positive, got {width} x {height}")
    matrix = np.array(_SPEEDPLUS_MATRIX, dtype=np.float64)
    matrix[0] = matrix[0] * width / 1920.0  # multiply first: 960 * 640 / 1920 is exactly 320
    matrix[1] = matrix[1] * height / 1200.0
    return Camera(int(width), int(height), matrix, np.asarray(_SPEEDPLUS_DIST, dtype=np.float64))


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
    """camera.json with every key of SLAB's SPEED+ file, so tools written for it read ours.

    ``ppx``, ``ppy`` are the pixel pitch in metres (5.86 um at 1920 x 1200, larger for a smaller
    image of the same sensor), ``fx``, ``fy`` the focal lengths in metres, ``ccx``, ``ccy`` the
    principal point in pixels; only ``Nu``, ``Nv``, ``cameraMatrix`` and ``distCoeffs`` are read.
    """
    matrix = np.asarray(camera.matrix, dtype=np.float64)
    pitch_x = 5.86e-6 * 1920.0 / camera.width
    pitch_y = 5.86e-6 * 1200.0 / camera.height
    data = {
        "Nu": camera.width,
        "Nv": camera.height,
        "ppx": pitch_x,
        "ppy": pitch_y,
        "fx": float(matrix[0, 0]) * pitch_x,
        "fy": float(matrix[1, 1]) * pitch_y,
        "ccx": float(matrix[0, 2]),
        "ccy": float(matrix[1, 2]),
        "cameraMatrix": matrix.tolist(),
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
    Quaternions are normalised; a zero norm, half a pose, a position behind the camera (z <= 0)
    or a repeated filename is an error.
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
        if r[2] <= 0:
            # The camera looks along +z: no image of the spacecraft can have it at z <= 0.
            raise SpeedFileError(
                f"{where}: 'r_Vo2To_vbs_true' z = {r[2]:g} m puts the spacecraft behind the "
                f"camera (z must be > 0)")
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
# ESA's files, as its kits write and its leaderboards read them (no header line, no quoting):
#   SPEC2019  filename,q0,q1,q2,q3,x,y,z
#   SPEC2021  category,filename,q0,q1,q2,q3,x,y,z   (category lightbox / sunlamp, one file)
# q scalar first as estimated (not renormalised), x y z in metres. Our older runs wrote the
# SPEC2019 row after a header line; the reader takes any header of known names, in any order.
_CATEGORY = "category"
_SUBMISSION_COLUMNS = (_CATEGORY, *SUBMISSION_HEADER)


def _pose_table(values: Any, count: int, width: int, name: str) -> np.ndarray:
    """``values`` as a count x width float array, or a ValueError naming the shapes."""
    table = np.asarray(values, dtype=np.float64)
    if table.shape != (count, width) and not (count == 0 and table.size == 0):
        raise ValueError(
            f"submission needs one pose per filename: {count} names but {name} has shape "
            f"{table.shape} (expected {count} x {width})"
        )
    return table.reshape(count, width)


def write_submission(
    path: str | os.PathLike,
    filenames: Sequence[str],
    q: np.ndarray,
    r: np.ndarray,
    categories: Sequence[str] | None = None,
) -> None:
    """The submission file exactly as ESA's kits write it: no header, one row per image.

    Without ``categories``: SPEC2019 rows ``filename,q0,q1,q2,q3,x,y,z``; with one category
    per row ('lightbox' or 'sunlamp'): SPEC2021 rows ``category,filename,q0,...,z``. Values are
    written with repr, so the reader gets back the very floats (and the score of the file is the
    score of the poses). The caller chooses every pose, failures included: a non-finite value,
    a zero quaternion, a repeated or unwritable filename or a wrong category is a ValueError,
    never a silently invented pose.
    """
    names = list(filenames)
    q = _pose_table(q, len(names), 4, "q")
    r = _pose_table(r, len(names), 3, "r")
    if categories is not None:
        if isinstance(categories, str):
            raise ValueError("categories: give one per row (a list), not a single string")
        categories = list(categories)
        if len(categories) != len(names):
            raise ValueError(f"{len(names)} filenames but {len(categories)} categories")
    seen: dict[str, int] = {}
    lines = []
    for index, name in enumerate(names):
        where = f"submission row {index} ('{name}')"
        if not isinstance(name, str) or not name or name != name.strip() or any(
                char in name for char in ',"\r\n'):
            raise ValueError(f"{where}: a filename must be a non-empty string without "
                             "surrounding spaces, commas, quotes or line breaks")
        if name in seen:
            raise ValueError(f"{where}: filename already given in row {seen[name]}")
        seen[name] = index
        if not (np.all(np.isfinite(q[index])) and np.all(np.isfinite(r[index]))):
            raise ValueError(f"{where}: pose is not finite (q = {q[index].tolist()}, "
                             f"r = {r[index].tolist()}); write a fallback pose instead")
        if float(np.linalg.norm(q[index])) < 1e-12:
            raise ValueError(f"{where}: quaternion {q[index].tolist()} has zero norm")
        cells = [name, *(repr(float(v)) for v in (*q[index], *r[index]))]
        if categories is not None:
            if categories[index] not in SUBMISSION_CATEGORIES:
                raise ValueError(f"{where}: category {categories[index]!r} is not one of "
                                 f"{', '.join(SUBMISSION_CATEGORIES)}")
            cells.insert(0, categories[index])
        lines.append(",".join(cells) + "\n")
    write_text_atomic(path, "".join(lines))


def _submission_columns(cells: list[str], where: str) -> dict[str, int] | None:
    """Column name -> index of a header line, or None when the line is not a header (a header
    is a line whose cells include 'filename'; every cell must then be a known name)."""
    names = [cell.strip().lower() for cell in cells]
    if "filename" not in names:
        return None
    for number, name in enumerate(names, start=1):
        if name not in _SUBMISSION_COLUMNS:
            raise SpeedFileError(
                f"{where}: header column {number} '{cells[number - 1].strip()}' is not one of "
                f"{','.join(_SUBMISSION_COLUMNS)}")
        if names.index(name) != number - 1:
            raise SpeedFileError(f"{where}: header column '{name}' given twice")
    missing = [name for name in SUBMISSION_HEADER if name not in names]
    if missing:
        raise SpeedFileError(f"{where}: header lacks the column(s) {','.join(missing)}")
    return {name: number for number, name in enumerate(names)}


def _positional_columns(count: int, where: str) -> dict[str, int]:
    """Column name -> index of a file without header: 8 columns SPEC2019, 9 SPEC2021."""
    if count == len(SUBMISSION_HEADER):
        return {name: number for number, name in enumerate(SUBMISSION_HEADER)}
    if count == len(_SUBMISSION_COLUMNS):
        return {name: number for number, name in enumerate(_SUBMISSION_COLUMNS)}
    raise SpeedFileError(
        f"{where}: expected 8 columns {','.join(SUBMISSION_HEADER)} (SPEC2019) or 9 columns "
        f"{','.join(_SUBMISSION_COLUMNS)} (SPEC2021), got {count}")


def _submission_row(row: list[str], columns: dict[str, int],
                    where: str) -> tuple[str, str | None, list[float]]:
    """(filename, category or None, [q0, q1, q2, q3, x, y, z]) of one checked data row."""
    name = row[columns["filename"]].strip()
    if not name:
        raise SpeedFileError(f"{where}: empty filename")
    category = None
    if _CATEGORY in columns:
        category = row[columns[_CATEGORY]].strip()
        if category not in SUBMISSION_CATEGORIES:
            raise SpeedFileError(f"{where}: unknown category '{category}' (SPEC2021 has "
                                 f"{' and '.join(SUBMISSION_CATEGORIES)})")
    values = []
    for column in SUBMISSION_HEADER[1:]:
        cell = row[columns[column]]
        try:
            value = float(cell)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise SpeedFileError(f"{where}: {column} = '{cell.strip()}' is not a finite number")
        values.append(value)
    if math.hypot(*values[:4]) < 1e-12:
        raise SpeedFileError(f"{where}: quaternion of '{name}' has zero norm")
    return name, category, values


def merge_spec2021_submission(path: str | os.PathLike, category: str,
                              filenames: Sequence[str], q: np.ndarray, r: np.ndarray) -> None:
    """Put one test domain's rows into the single SPEC2021 file of both domains: the rows of
    ``category`` already in ``path`` are replaced, the other domain's are kept (before them),
    so testing lightbox and sunlamp in either order leaves one complete file."""
    keep_names: list[str] = []
    keep_q, keep_r = np.zeros((0, 4)), np.zeros((0, 3))
    keep_categories: list[str] = []
    if Path(path).is_file():
        earlier = read_submission(path)
        if earlier.categories is None:
            raise SpeedFileError(f"{path}: not a SPEC2021 submission (no category column)")
        keep = [i for i, name in enumerate(earlier.categories) if name != category]
        keep_names = [earlier.filenames[i] for i in keep]
        keep_q, keep_r = earlier.q[keep], earlier.r[keep]
        keep_categories = [earlier.categories[i] for i in keep]
    write_submission(path, keep_names + list(filenames),
                     np.concatenate([keep_q, np.asarray(q, np.float64).reshape(-1, 4)]),
                     np.concatenate([keep_r, np.asarray(r, np.float64).reshape(-1, 3)]),
                     keep_categories + [category] * len(filenames))


def read_submission(path: str | os.PathLike) -> Submission:
    """Filenames, q N x 4, r N x 3, line numbers and categories of a submission file.

    Reads ESA's layouts without a header, by position: 8 columns (SPEC2019) or 9 with the
    category first (SPEC2021); and a file with a header line (our older runs), by column name in
    any order. A UTF-8 byte-order mark is skipped. Errors name the file, the 1-based line and
    what is wrong: the column count, a value that is not a finite number, a zero quaternion, a
    repeated filename (in SPEC2021 also one filename under two categories), an unknown category.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: submission file not found")
    columns: dict[str, int] | None = None
    layout_line = 0
    filenames: list[str] = []
    categories: list[Any] = []  # str, or None in a file without the category column
    poses: list[list[float]] = []
    lines: list[int] = []
    first: dict[str, int] = {}  # filename -> index of its entry
    line = 0
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            for row in reader:
                line = reader.line_num
                if len(row) <= 1 and not "".join(row).strip():
                    continue  # an empty line
                where = f"{path}: line {line}"
                if columns is None:
                    layout_line = line
                    columns = _submission_columns(row, where)
                    if columns is not None:
                        continue
                    columns = _positional_columns(len(row), where)
                if len(row) != len(columns):
                    order = ",".join(sorted(columns, key=columns.__getitem__))
                    raise SpeedFileError(f"{where}: expected {len(columns)} columns {order} "
                                         f"(as on line {layout_line}), got {len(row)}")
                name, category, values = _submission_row(row, columns, where)
                if name in first:
                    other = first[name]
                    if category is not None and categories[other] != category:
                        raise SpeedFileError(
                            f"{where}: '{name}' is under '{category}' here and under "
                            f"'{categories[other]}' on line {lines[other]}: an image belongs "
                            "to one test domain")
                    raise SpeedFileError(f"{where}: '{name}' already given on line "
                                         f"{lines[other]}")
                first[name] = len(filenames)
                filenames.append(name)
                categories.append(category)
                poses.append(values)
                lines.append(line)
    except UnicodeDecodeError as err:
        raise SpeedFileError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") \
            from err
    except csv.Error as err:
        raise SpeedFileError(f"{path}: after line {line}: not CSV text ({err})") from err
    table = np.asarray(poses, dtype=np.float64).reshape(-1, 7)
    has_category = columns is not None and _CATEGORY in columns
    return Submission(filenames, table[:, :4], table[:, 4:], lines,
                      categories if has_category else None)


def match_submission(
    labels: Sequence[PoseLabel],
    submission: Submission,
    labels_name: str,
    submission_name: str,
    category: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(q_gt, r_gt, q_est, r_est) in label order, after checking both files list the same images.

    With ``category`` only the submission's rows of that SPEC2021 category are matched (the
    labels are that test domain's). An unlabelled image, a row for an unknown filename (named
    with its line) or a labelled image without a row is a SpeedFileError.
    """
    if not labels:
        raise SpeedFileError(f"{labels_name}: no images to score")
    unlabelled = next((label.filename for label in labels if not label.has_pose), None)
    if unlabelled is not None:
        raise SpeedFileError(f"{labels_name}: '{unlabelled}' has no pose to score against")
    kind = ""
    if category is not None:
        if submission.categories is None:
            raise SpeedFileError(
                f"{submission_name}: has no category column (8 columns), so no '{category}' "
                "rows: SPEC2021 files have 9 columns category,filename,q0,...,z")
        submission = submission.of_category(category)
        kind = f"{category} "
    known = {label.filename for label in labels}
    for name, line in zip(submission.filenames, submission.rows, strict=True):
        if name not in known:
            raise SpeedFileError(f"{submission_name}: line {line}: unknown {kind}filename "
                                 f"'{name}' (not in {labels_name})")
    index = {name: i for i, name in enumerate(submission.filenames)}
    missing = next((i for i, label in enumerate(labels) if label.filename not in index), None)
    if missing is not None:
        raise SpeedFileError(f"{submission_name}: no {kind}row for '{labels[missing].filename}' "
                             f"listed in {labels_name} (entry {missing})")
    order = np.array([index[label.filename] for label in labels])
    q_gt = np.stack([label.q for label in labels])
    r_gt = np.stack([label.r for label in labels])
    return q_gt, r_gt, submission.q[order], submission.r[order]

# -------------------------------------------------------------------------------------- box files
# A box file (TEST.SPEED_BBOX_FILE, also what the two-stage path writes) is a JSON list of
# detections {"filename": "img000001.jpg", "bbox": [x, y, w, h], "score": 0.9} in full-image
# pixels (x, y the top-left corner; "image_name" is accepted for "filename"; "score" defaults
# to 1). An optional "gamma" (default 1) is the tone curve the crop is seen through, chosen per
# image by the two-stage search (TEST.SPEED_GAMMA_CANDIDATES). A JSON object mapping a filename
# to one such entry (or to a list of them) is read too. Where an image has several detections
# the highest score wins.
class Crop(NamedTuple):
    """One image's crop as a box file gives it."""

    box: np.ndarray  # x, y, w, h in full-image pixels
    score: float
    gamma: float = 1.0  # the crop's pixels v become 255 (v / 255) ** gamma


def write_box_file(path: str, filenames: Sequence[str], boxes: np.ndarray,
                   scores: Sequence[float] | np.ndarray | None = None,
                   gammas: Sequence[float] | np.ndarray | None = None) -> str:
    """Write detections (boxes N x 4 as x, y, w, h full-image pixels) atomically, with a
    "gamma" per detection when ``gammas`` are given; returns path."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) != len(filenames):
        raise ValueError(f"{len(filenames)} filenames but {len(boxes)} boxes")
    scores = np.ones(len(boxes)) if scores is None else np.asarray(scores, np.float64).ravel()
    if len(scores) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    entries = [{"filename": str(name), "bbox": [float(v) for v in box], "score": float(score)}
               for name, box, score in zip(filenames, boxes, scores, strict=True)]
    if gammas is not None:
        gammas = np.asarray(gammas, np.float64).ravel()
        if len(gammas) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(gammas)} gammas")
        for entry, gamma in zip(entries, gammas, strict=True):
            entry["gamma"] = float(gamma)
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


def read_box_file(path: str) -> dict[str, Crop]:
    """filename -> Crop(box [x, y, w, h], score, gamma) of a box file, the best-scoring
    detection per image.

    A detection without a filename, with a box that is not 4 finite numbers or has no area, a
    score that is not a number or a gamma that is not a positive finite number is an error
    naming the file and the entry.
    """
    best: dict[str, Crop] = {}
    for name, entry, where in _box_entries(read_json(path, "box file", SpeedFileError), path):
        if not isinstance(name, str) or not name or not isinstance(entry, dict):
            raise SpeedFileError(f"{where}: needs a 'filename' (or 'image_name') and a 'bbox'")
        if "bbox" not in entry:
            raise SpeedFileError(f"{where} ('{name}'): no 'bbox' [x, y, w, h]")
        try:
            box = np.asarray(entry["bbox"], dtype=np.float64).reshape(-1)
            score = float(entry.get("score", 1.0))
            gamma = float(entry.get("gamma", 1.0))
        except (TypeError, ValueError):
            raise SpeedFileError(f"{where} ('{name}'): 'bbox' must be 4 numbers, 'score' and "
                                 f"'gamma' numbers") from None
        if box.size != 4 or not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
            raise SpeedFileError(
                f"{where} ('{name}'): 'bbox' must be [x, y, w, h] with w, h > 0, got "
                f"{entry['bbox']}")
        if not (math.isfinite(gamma) and gamma > 0):
            raise SpeedFileError(f"{where} ('{name}'): 'gamma' must be a positive number, got "
                                 f"{entry['gamma']}")
        if name not in best or score > best[name].score:
            best[name] = Crop(box, score, gamma)
    return best
