"""OKS NMS speed: the vectorised implementation beside the original's per-candidate loop.

  python tools/bench_nms.py [--images 100] [--candidates 60] [--repeats 5] [--seed 0]

Each image gets crowded, overlapping candidate poses (as a detector's duplicates produce);
both implementations run over all images, the median of --repeats runs is printed, and the
kept lists are compared image by image.
"""

import argparse
import statistics
import time

import _init_paths  # noqa: F401
import numpy as np

from lib.nms import oks_nms
from lib.nms.oks_nms import _oks_nms_loop


def make_images(num_images: int, num_candidates: int, rng: np.random.Generator) -> list:
    """Per image, a few people each detected several times with jittered keypoints."""
    images = []
    for _ in range(num_images):
        people = rng.uniform(50, 600, (max(1, num_candidates // 10), 17, 2))
        owner = rng.integers(0, len(people), num_candidates)
        xy = people[owner] + rng.normal(0, 4, (num_candidates, 17, 2))
        scores = rng.uniform(0.05, 1.0, (num_candidates, 17, 1))
        images.append([{"keypoints": np.concatenate([xy[k], scores[k]], axis=1),
                        "score": float(rng.uniform(0.1, 1.0)),
                        "area": float(rng.uniform(2000, 40000))}
                       for k in range(num_candidates)])
    return images


def timed(fn, images, thresh, repeats):
    runs, keeps = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        keeps = [fn(db, thresh) for db in images]
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), keeps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=60)
    parser.add_argument("--thresh", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    images = make_images(args.images, args.candidates, np.random.default_rng(args.seed))
    loop_s, loop_keep = timed(_oks_nms_loop, images, args.thresh, args.repeats)
    fast_s, fast_keep = timed(oks_nms, images, args.thresh, args.repeats)
    identical = all(list(a) == list(b) for a, b in zip(loop_keep, fast_keep, strict=True))
    kept = sum(len(k) for k in fast_keep)
    print(f"OKS NMS, {args.images} images x {args.candidates} candidates, OKS_THRE "
          f"{args.thresh}, median of {args.repeats} runs ({kept} poses kept)")
    print("| implementation | ms (all images) | speed-up |\n|---|---|---|")
    print(f"| per-candidate loop (original) | {loop_s * 1e3:.1f} | 1.00x |")
    print(f"| vectorised | {fast_s * 1e3:.1f} | {loop_s / fast_s:.2f}x |")
    print(f"identical keep lists: {identical}")
    if not identical:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
