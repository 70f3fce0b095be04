"""Training-data throughput: samples per second of the training __getitem__ (decode, crop,
augmentation, targets), in one process and with DataLoader workers.

    python tools/bench_data.py --cfg experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml \
        --num 400 --workers 2

Without --data a synthetic COCO (or MPII, after the config's data set) set of 640 x 480 JPEGs
is generated in a temporary folder (lib.dataset.fixtures). That the items equal the original
algorithm's, bit for bit, is shown by the tests (tests/reference_pipeline.py), not here.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from argparse import Namespace

import _init_paths  # noqa: F401
import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from lib.config import cfg, update_config
from lib.dataset import build_dataset
from lib.dataset.fixtures import make_coco_fixture, make_mpii_fixture
from lib.utils.image_io import configure_opencv_for_workers
from lib.utils.transforms import input_transform


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", required=True, help="experiment config file")
    parser.add_argument("--num", type=int, default=400, help="items per measurement")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers "
                        "(default: cfg.WORKERS)")
    parser.add_argument("--data", default="", help="data set root (default: generate one)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="timing rounds; the best one is reported")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE")
    return parser.parse_args()


def generate_fixture(root: str, name: str, image_set: str) -> None:
    if name == "mpii":
        make_mpii_fixture(root, num_train=32, num_valid=4, width=640, height=480)
    else:
        make_coco_fixture(root, image_set=image_set, num_images=32, people_per_image=2,
                          width=640, height=480)


def seed_all(seed: int) -> None:
    np.random.seed(seed)
    random.seed(seed)


def time_single(dataset: Dataset, num: int) -> float:
    """Samples per second of dataset[i] for num items, in this process."""
    seed_all(0)
    start = time.perf_counter()
    for i in range(num):
        dataset[i % len(dataset)]
    return num / (time.perf_counter() - start)


def time_loader(dataset: Dataset, num: int, workers: int, batch_size: int) -> float:
    """Samples per second through a DataLoader, after its first batch (worker start-up)."""
    indices = [i % len(dataset) for i in range(num + batch_size)]
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False,
                        num_workers=workers, persistent_workers=False)
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    count = sum(len(batch[0]) for batch in iterator)
    return count / (time.perf_counter() - start)


def main() -> None:
    args = parse_args()
    update_config(cfg, Namespace(cfg=args.cfg, opts=args.opts))
    workers = cfg.WORKERS if args.workers is None else args.workers
    tmp = None
    if not args.data:
        tmp = tempfile.TemporaryDirectory(prefix="bench_data_")
        generate_fixture(tmp.name, cfg.DATASET.DATASET, cfg.DATASET.TRAIN_SET)
    cfg.defrost()
    cfg.DATASET.ROOT = args.data or tmp.name
    cfg.freeze()

    dataset = build_dataset(cfg, cfg.DATASET.TRAIN_SET, True, input_transform())
    print(f"data: {cfg.DATASET.ROOT} ({cfg.DATASET.DATASET} {cfg.DATASET.TRAIN_SET}, "
          f"{len(dataset)} samples), input {list(cfg.MODEL.IMAGE_SIZE)}, "
          f"heatmap {list(cfg.MODEL.HEATMAP_SIZE)}, COLOR_RGB {cfg.DATASET.COLOR_RGB}, "
          f"PROB_HALF_BODY {cfg.DATASET.PROB_HALF_BODY}")

    # One core: the single-process number is a one-thread number.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    single = max(time_single(dataset, args.num) for _ in range(args.rounds))
    loaded = float("nan")
    if workers > 0:
        configure_opencv_for_workers(workers)
        batch = min(32, max(1, args.num // (4 * workers)))
        loaded = max(time_loader(dataset, args.num, workers, batch)
                     for _ in range(max(1, args.rounds - 1)))

    print(f"\nsamples/s over {args.num} training items, best of {args.rounds} rounds")
    print(f"| pipeline | 1 process | {workers} workers |")
    print("|---|---|---|")
    print(f"| lib.dataset | {single:.0f} | {loaded:.0f} |")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
