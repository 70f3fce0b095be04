"""Training-data throughput: samples per second of the training __getitem__ (decode, crop,
targets), in one process and with DataLoader workers, beside the original algorithm measured
in the same run, plus a check that both give identical items for the same random state.

    python tools/bench_data.py --cfg experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml \
        --num 400 --workers 2

Without --data a COCO (or MPII, after the config's data set) fixture of 640 x 480 JPEGs is
generated in a temporary folder.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from argparse import Namespace

import _init_paths  # noqa: F401
import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from lib.config import cfg, update_config
from lib.dataset import build_dataset, configure_opencv_for_workers
from lib.dataset.JointsDataset import JointsDataset, _reference_getitem
from lib.utils.transforms import input_transform


class ReferenceItems(Dataset):
    """The same records through the original algorithm (``_reference_getitem``)."""

    def __init__(self, dataset: JointsDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int):
        return _reference_getitem(self.dataset, idx)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", required=True, help="experiment config file")
    parser.add_argument("--num", type=int, default=400, help="items per measurement")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers "
                        "(default: cfg.WORKERS)")
    parser.add_argument("--data", default="", help="data set root (default: generate one)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating timing rounds per pipeline; the best one is reported")
    parser.add_argument("--check", type=int, default=100,
                        help="items compared between the two pipelines")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE")
    return parser.parse_args()


def generate_fixture(root: str, name: str, image_set: str) -> None:
    from tests.datagen import make_coco_fixture, make_mpii_fixture

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


def items_equal(a, b) -> bool:
    tensors_equal = all(torch.equal(x, y) if isinstance(x, torch.Tensor) else np.array_equal(x, y)
                        for x, y in zip(a[:3], b[:3], strict=True))
    meta_equal = a[3].keys() == b[3].keys() and all(
        np.array_equal(np.asarray(a[3][k]), np.asarray(b[3][k])) for k in a[3])
    return tensors_equal and meta_equal


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

    dataset = build_dataset(cfg, cfg.DATASET.TRAIN_SET, True,
                            input_transform())
    reference = ReferenceItems(dataset)
    print(f"data: {cfg.DATASET.ROOT} ({cfg.DATASET.DATASET} {cfg.DATASET.TRAIN_SET}, "
          f"{len(dataset)} samples), input {list(cfg.MODEL.IMAGE_SIZE)}, "
          f"heatmap {list(cfg.MODEL.HEATMAP_SIZE)}, COLOR_RGB {cfg.DATASET.COLOR_RGB}, "
          f"PROB_HALF_BODY {cfg.DATASET.PROB_HALF_BODY}")

    # One core: the original's single-process number is a one-thread number.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    identical = 0
    for k in range(args.check):
        idx = k % len(dataset)
        seed_all(k)
        ours = dataset[idx]
        seed_all(k)
        identical += items_equal(ours, reference[idx])

    single = {"reference": 0.0, "ours": 0.0}
    for _ in range(args.rounds):
        single["reference"] = max(single["reference"], time_single(reference, args.num))
        single["ours"] = max(single["ours"], time_single(dataset, args.num))
    loaded = {"reference": 0.0, "ours": 0.0}
    if workers > 0:
        configure_opencv_for_workers(workers)
        batch = min(32, max(1, args.num // (4 * workers)))
        for _ in range(max(1, args.rounds - 1)):
            loaded["reference"] = max(loaded["reference"],
                                      time_loader(reference, args.num, workers, batch))
            loaded["ours"] = max(loaded["ours"], time_loader(dataset, args.num, workers, batch))

    print(f"\nsamples/s over {args.num} training items, best of {args.rounds} rounds")
    print(f"| pipeline | 1 process | {workers} workers |")
    print("|---|---|---|")
    names = {"reference": "original algorithm (per-joint loops)", "ours": "lib.dataset"}
    for key, name in names.items():
        print(f"| {name} | {single[key]:.0f} | {loaded[key]:.0f} |")
    ratio_loaded = loaded["ours"] / loaded["reference"] if workers > 0 else float("nan")
    print(f"| speed-up | {single['ours'] / single['reference']:.2f}x | {ratio_loaded:.2f}x |")
    print(f"\nidentical items for the same random state: {identical}/{args.check}")
    if tmp is not None:
        tmp.cleanup()
    if identical != args.check:
        sys.exit(1)


if __name__ == "__main__":
    main()
