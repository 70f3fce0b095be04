"""Score a spacecraft pose submission against labels, as ESA's SPEC2019 / SPEC2021 did.

SPEC2019 (8 columns filename,q0,q1,q2,q3,x,y,z):
    speed_score.py --gt LABELS.json --submission FILE
SPEC2021 (9 columns category,filename,q0,...,z, both test domains in one file):
    speed_score.py --gt lightbox=LIGHTBOX.json --gt sunlamp=SUNLAMP.json --submission FILE

Prints one JSON object: esa_score, esa_score_spec2021, rot_err_deg_mean, rot_err_deg_median,
trans_err_m_mean, trans_err_rel_mean, n over all images, plus, per category given, an object of
the same keys ("lightbox": {...}, "sunlamp": {...}), as the leaderboard scored each domain.
With --worst N also "worst": the N images of highest ESA score (filename, category where the
file has one, esa_score, rot_err_deg, trans_err_rel), and "worst_share": the part of the summed
score they carry (a mean of 100 images is often held up by three).
A plain --gt also scores a 9-column file (all its rows against that labels file). Any problem
with the files exits with code 2 and one line naming the file and the line at fault.
"""
import _init_paths  # noqa: F401, I001  (puts the repository root on sys.path)

import argparse
import json
import sys

import numpy as np

from lib.spacecraft.files import (
    SUBMISSION_CATEGORIES,
    SpeedFileError,
    match_submission,
    read_camera,
    read_labels,
    read_submission,
)
from lib.spacecraft.scores import esa_score, pose_errors, pose_score_summary

# printed key -> name in pose_score_summary
KEYS = (
    ("esa_score", "ESA score"),
    ("esa_score_spec2021", "ESA score (SPEC2021)"),
    ("rot_err_deg_mean", "rot err mean (deg)"),
    ("rot_err_deg_median", "rot err median (deg)"),
    ("trans_err_m_mean", "trans err mean (m)"),
    ("trans_err_rel_mean", "trans err mean (rel)"),
)


def parse_gt(values: list[str]) -> str | dict[str, str]:
    """The --gt values: one labels path (SPEC2019), or {category: labels path} (SPEC2021).

    ``NAME=PATH`` with NAME a word is a category (lightbox / sunlamp, each at most once);
    anything else is a path. Mixing the two forms, or two plain paths, is a ValueError.
    """
    plain: list[str] = []
    by_category: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not (sep and name.isidentifier()):
            plain.append(value)
            continue
        if name not in SUBMISSION_CATEGORIES:
            raise ValueError(f"--gt {value}: unknown category '{name}' (SPEC2021 has "
                             f"{' and '.join(SUBMISSION_CATEGORIES)})")
        if name in by_category:
            raise ValueError(f"--gt {value}: category '{name}' given twice")
        if not path:
            raise ValueError(f"--gt {value}: no labels file after '='")
        by_category[name] = path
    if plain and by_category:
        raise ValueError("--gt: give either one LABELS.json (SPEC2019) or CATEGORY=LABELS.json "
                         "per category (SPEC2021), not both")
    if len(plain) > 1:
        raise ValueError(f"--gt given {len(plain)} times without a category; use "
                         "lightbox=LABELS.json / sunlamp=LABELS.json for a SPEC2021 file")
    return plain[0] if plain else by_category


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", required=True, action="append", metavar="[CATEGORY=]LABELS",
                        help="labels json with the true poses; repeat as lightbox=... and "
                             "sunlamp=... to score a SPEC2021 file per category")
    parser.add_argument("--submission", required=True,
                        help="filename,q0,q1,q2,q3,x,y,z rows, or category,filename,... rows")
    parser.add_argument("--camera", help="camera.json (validated only: the score needs no camera)")
    parser.add_argument("--worst", type=int, default=0, metavar="N",
                        help="also list the N images of highest score and the share they carry")
    args = parser.parse_args(argv)
    if args.worst < 0:
        parser.error(f"--worst {args.worst}: give a number of images, 0 or more")
    try:
        args.gt = parse_gt(args.gt)
    except ValueError as err:
        parser.error(str(err))
    return args


def summary(q_gt: np.ndarray, r_gt: np.ndarray, q_est: np.ndarray, r_est: np.ndarray) -> dict:
    """The printed keys for one set of matched poses."""
    scores = pose_score_summary(q_gt, r_gt, q_est, r_est)
    return {**{key: scores[name] for key, name in KEYS}, "n": len(q_gt)}


def worst_images(names: list[str], categories: list[str] | None, q_gt: np.ndarray,
                 r_gt: np.ndarray, q_est: np.ndarray, r_est: np.ndarray, count: int) -> dict:
    """The ``count`` images of highest ESA score, worst first, and the share of the summed
    score they carry."""
    errors = pose_errors(q_gt, r_gt, q_est, r_est)
    per_image = esa_score(errors.rot_rad, errors.trans_rel)
    order = np.argsort(-per_image, kind="stable")[:count]
    worst = [{**({"category": categories[i]} if categories else {}), "filename": names[i],
              "esa_score": float(per_image[i]),
              "rot_err_deg": float(np.rad2deg(errors.rot_rad[i])),
              "trans_err_rel": float(errors.trans_rel[i])} for i in order]
    total = float(per_image.sum())
    return {"worst": worst, "worst_share": float(per_image[order].sum()) / total if total else 0.0}


def score(gt: str | dict[str, str], submission_path: str, worst: int = 0) -> dict:
    """The JSON-ready score of a submission (errors from lib name the file and line).

    ``gt`` is a labels path (every row scored against it) or {category: labels path}: then each
    category's rows are matched with its labels, and a row of a category without labels is an
    error; the result holds all images together plus one object per category. With ``worst``
    it also lists that many images of highest score (:func:`worst_images`).
    """
    submission = read_submission(submission_path)
    if isinstance(gt, str):
        labels = read_labels(gt)
        poses = match_submission(labels, submission, gt, submission_path)
        result = summary(*poses)
        if worst:
            result.update(worst_images([label.filename for label in labels], None, *poses,
                                       worst))
        return result
    if submission.categories is None:
        raise SpeedFileError(f"{submission_path}: has no category column (8 columns); "
                             "--gt CATEGORY=LABELS scores the 9-column SPEC2021 file, "
                             "a plain --gt LABELS.json this one")
    labels = {category: read_labels(gt[category]) for category in SUBMISSION_CATEGORIES
              if category in gt}
    known = {category: {label.filename for label in entries}
             for category, entries in labels.items()}
    # Every row first, in file order, so that the first bad line is the one named.
    for name, line, category in zip(submission.filenames, submission.rows,
                                    submission.categories, strict=True):
        if category not in gt:
            raise SpeedFileError(f"{submission_path}: line {line}: category '{category}' has no "
                                 f"--gt {category}=LABELS.json")
        if name not in known[category]:
            other = next((c for c, names in known.items() if name in names), None)
            raise SpeedFileError(
                f"{submission_path}: line {line}: unknown {category} filename '{name}' (not in "
                f"{gt[category]}){f'; it is a {other} image' if other else ''}")
    matched = {category: match_submission(entries, submission, gt[category], submission_path,
                                          category)
               for category, entries in labels.items()}
    together = [np.concatenate([poses[k] for poses in matched.values()]) for k in range(4)]
    result = {**summary(*together),
              **{category: summary(*poses) for category, poses in matched.items()}}
    if worst:
        names = [label.filename for entries in labels.values() for label in entries]
        categories = [category for category, entries in labels.items() for _ in entries]
        result.update(worst_images(names, categories, *together, worst))
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.camera:
            read_camera(args.camera)
        result = score(args.gt, args.submission, args.worst)
    except (ValueError, FileNotFoundError) as err:
        print(f"speed_score.py: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
