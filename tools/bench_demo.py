"""How fast this host trains the demo's models: measure a host in about a minute.

    python tools/bench_demo.py [--images 256] [--profile] [KEY VALUE ...]
    python tools/bench_demo.py --cfg experiments/speed/hrnet/demo_fine.yaml -- TRAIN.LR 2e-3

Renders a small set of the embedded data set (the demo's image size) into a temporary folder,
then for each demo model (experiments/speed/hrnet/demo_{coarse,fine}.yaml) prints images per
second of the model's training step alone (fp32, and bf16 autocast), of the data loader alone,
and of the whole training loop (tools/train.py's, data included, with the precision that
TRAIN.AMP resolves to here), the seconds of one validation pass (inference, PnP, scoring), and
from those one epoch of the demo's training set. The processor heads the output: figures from
different hosts are only comparable beside it. Run it alone on the machine: a second CPU-bound
process on two cores can slow every figure several times.
"""

import _init_paths  # noqa: F401, I001

import argparse
import logging
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from cli import config_from_file, overrides, run_cli
from lib.config import merge_from_list
from lib.core.benchmark import (
    Mode,
    images_per_second_of_loader,
    measure_training,
    profile_training_step,
    reference_output,
    training_loop_seconds,
)
from lib.core.function import train, validate
from lib.core.loss import build_criterion
from lib.dataset import build_dataset
from lib.models import build_model
from lib.spacecraft.renderer import write_speed_synthetic
from lib.utils.runtime import cpu_bf16_speedup, processor_summary, resolve_amp, seed_everything
from lib.utils.transforms import input_transform
from lib.utils.utils import get_optimizer

DEMO_CONFIGS = ("experiments/speed/hrnet/demo_coarse.yaml",
                "experiments/speed/hrnet/demo_fine.yaml")
DEMO_TRAIN_IMAGES = 4000  # tools/speed_demo.py --train


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", nargs="+", default=list(DEMO_CONFIGS), help="experiment files")
    parser.add_argument("--images", type=int, default=256, help="training images to render")
    parser.add_argument("--val", type=int, default=50, help="validation images to render")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=400)
    parser.add_argument("--epoch-images", type=int, default=DEMO_TRAIN_IMAGES,
                        help="training images per epoch the epoch estimate is for")
    parser.add_argument("--epoch-val", type=int, default=100,
                        help="validation images per epoch the epoch estimate is for")
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler's top ops of a training step")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="KEY VALUE for every config (after '--' where --cfg comes last)")
    args = parser.parse_args()
    args.opts = overrides(args.opts)
    return args


def bench_config(cfg, cfg_file: str, root: Path, args: argparse.Namespace) -> list[str]:
    work = root / Path(cfg_file).stem
    merge_from_list(cfg, ["DATASET.ROOT", str(root / "data"), "OUTPUT_DIR", str(work),
                          "LOG_DIR", str(work), "PRINT_FREQ", 10**6])
    seed_everything(0)
    device = torch.device("cpu")
    batch = cfg.TRAIN.BATCH_SIZE_PER_GPU
    transform = input_transform()
    train_set = build_dataset(cfg, cfg.DATASET.TRAIN_SET, True, transform)
    valid_set = build_dataset(cfg, cfg.DATASET.TEST_SET, False, transform)
    loader = DataLoader(train_set, batch_size=batch, shuffle=True, num_workers=cfg.WORKERS,
                        persistent_workers=cfg.WORKERS > 0)
    valid_loader = DataLoader(valid_set, batch_size=cfg.TEST.BATCH_SIZE_PER_GPU,
                              num_workers=cfg.WORKERS)
    model = build_model(cfg, is_train=True)
    width, height = cfg.MODEL.IMAGE_SIZE
    x = torch.randn(batch, 3, height, width)
    reference = reference_output(model, x, train_mode=True)
    target = torch.rand_like(reference)
    channels_last = cfg.MODEL.CHANNELS_LAST
    layout = "channels_last" if channels_last else "NCHW"
    steps = {}
    for name, amp in (("fp32", False), ("bf16", True)):
        mode = Mode(f"{name} {layout}", channels_last=channels_last, amp=amp)
        steps[name] = measure_training(model, x, target, mode, reference, warmup=2,
                                       repeats=3, iters=2).images_per_s

    images_per_s_data = images_per_second_of_loader(loader, len(train_set))  # fills the cache
    images_per_s_data = images_per_second_of_loader(loader, len(train_set))
    amp = resolve_amp(device, cfg.TRAIN.AMP, cfg.CPU_BF16)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = build_criterion(cfg)
    optimizer = get_optimizer(cfg, model)
    loop_s = training_loop_seconds(lambda: train(cfg, loader, model, criterion, optimizer, 0,
                                                 str(work), str(work), None))
    loop = len(train_set) / loop_s
    valid_s = training_loop_seconds(lambda: validate(cfg, valid_loader, valid_set, model,
                                                     criterion, str(work), str(work)))
    epoch_s = args.epoch_images / loop + valid_s * args.epoch_val / max(len(valid_set), 1)
    lines = [f"| {Path(cfg_file).stem} | {width}x{height} | {batch} | {steps['fp32']:.1f} | "
             f"{steps['bf16']:.1f} | {images_per_s_data:.0f} | {loop:.1f} "
             f"({'bf16' if amp else 'fp32'}) | {valid_s:.1f} | {epoch_s:.0f} |"]
    if args.profile:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        lines.append(f"\nprofile of 5 training steps of {Path(cfg_file).stem} "
                     f"({'bf16' if amp else 'fp32'}, batch {batch}):\n"
                     + profile_training_step(model, x, target, amp))
    return lines


def main() -> None:
    args = parse_args()
    # checked before a minute of rendering: a bad file or override is one line
    configs = [config_from_file(cfg_file, args.opts) for cfg_file in args.cfg]
    logging.basicConfig(level=logging.WARNING)
    speedup = cpu_bf16_speedup()
    print(f"processor: {processor_summary()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("bf16 autocast convolution step: "
          + (f"{speedup:.2f}x fp32" if speedup else "no oneDNN bf16 kernels on this processor")
          + f" -> TRAIN.AMP / TEST.AMP run "
          f"{'bf16' if resolve_amp(torch.device('cpu'), True, 'auto') else 'fp32'} here "
          "(CPU_BF16 'auto')")
    with tempfile.TemporaryDirectory(prefix="bench_demo_") as tmp:
        root = Path(tmp)
        write_speed_synthetic(root / "data", args.images, args.val, 0, seed=2019,
                              width=args.width, height=args.height, show_progress=False)
        print(f"{args.images} training / {args.val} validation images of "
              f"{args.width}x{args.height}; epoch = {args.epoch_images} training images + a "
              f"validation pass of {args.epoch_val}")
        print("| model | input | batch | step fp32 img/s | step bf16 img/s | data img/s | "
              "loop img/s | validation s | epoch s |\n|---|---|---|---|---|---|---|---|---|")
        profiles = []
        for cfg, cfg_file in zip(configs, args.cfg, strict=True):
            row, *rest = bench_config(cfg, cfg_file, root, args)
            print(row, flush=True)
            profiles += rest
        for table in profiles:
            print(table)


if __name__ == "__main__":
    run_cli(main)
