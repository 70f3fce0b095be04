"""Score a spacecraft pose submission CSV against a labels json (SPEED / SPEED+ conventions).

Prints one JSON object: esa_score, esa_score_spec2021, rot_err_deg_mean, rot_err_deg_median,
trans_err_m_mean, trans_err_rel_mean, n. Any problem with the files exits with code 2 and a
one-line message naming the file and the row or filename at fault.
"""
import _init_paths  # noqa: F401, I001  (puts the repository root on sys.path)

import argparse
import json
import sys

from lib.spacecraft.scores import pose_score_summary
from lib.spacecraft.files import match_submission, read_camera, read_labels, read_submission


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", required=True, help="labels json with the true poses")
    parser.add_argument("--submission", required=True, help="CSV filename,q0,q1,q2,q3,x,y,z")
    parser.add_argument("--camera", help="camera.json (validated only: the score needs no camera)")
    return parser.parse_args(argv)


def score(gt_path: str, submission_path: str) -> dict:
    """The JSON-ready score of a submission (errors from lib name the file and row)."""
    labels = read_labels(gt_path)
    poses = match_submission(labels, read_submission(submission_path), gt_path, submission_path)
    summary = pose_score_summary(*poses)
    return {
        "esa_score": summary["ESA score"],
        "esa_score_spec2021": summary["ESA score (SPEC2021)"],
        "rot_err_deg_mean": summary["rot err mean (deg)"],
        "rot_err_deg_median": summary["rot err median (deg)"],
        "trans_err_m_mean": summary["trans err mean (m)"],
        "trans_err_rel_mean": summary["trans err mean (rel)"],
        "n": len(labels),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.camera:
            read_camera(args.camera)
        result = score(args.gt, args.submission)
    except (ValueError, FileNotFoundError) as err:
        print(f"speed_score.py: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
