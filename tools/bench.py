"""Images per second of a model's inference or training step, plain fp32 beside the fast modes.

  python tools/bench.py --cfg experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml \
      --mode infer --batch 16 [--channels-last] [--amp] [--compile] [--fuse-bn] [KEY VALUE ...]

Without a mode flag every fast mode is measured. Each figure is the
median of --repeats timed runs after --warmup untimed ones; the last column is the largest
heatmap difference to the plain fp32 NCHW baseline on the same input. In --mode infer the last
row is onnxruntime on the model's own ONNX export (TEST.RUNTIME 'onnxruntime'; --no-onnx skips).
"""

import argparse
import os

import _init_paths  # noqa: F401
import torch

from lib.config import cfg, merge_from_file, merge_from_list
from lib.core.benchmark import (
    PLAIN,
    Measurement,
    Mode,
    measure_inference,
    measure_onnxruntime,
    measure_training,
    reference_output,
)
from lib.models import build_model
from lib.utils.export import missing_modules
from lib.utils.runtime import processor_summary, select_device


def fast_modes(args) -> list[Mode]:
    fuse = args.fuse_bn and args.mode == "infer"
    if not (args.channels_last or args.amp or args.compile or args.fuse_bn):
        modes = [Mode("fp32 channels_last", channels_last=True),
                 Mode("bf16/fp16 autocast NCHW", amp=True),
                 Mode("bf16/fp16 autocast channels_last", channels_last=True, amp=True)]
        if args.mode == "infer":
            modes += [Mode("fp32 channels_last + fused BN", channels_last=True, fuse_bn=True),
                      Mode("bf16 channels_last + fused BN", channels_last=True, amp=True,
                           fuse_bn=True)]
        return modes
    parts = [p for p, on in (("channels_last", args.channels_last), ("autocast", args.amp),
                             ("compile", args.compile), ("fused BN", fuse)) if on]
    return [Mode(" + ".join(parts), args.channels_last, args.amp, args.compile, fuse)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--mode", choices=["infer", "train"], default="infer")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--fuse-bn", action="store_true",
                        help="fold BatchNorm into the convolutions (inference)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--no-onnx", action="store_true",
                        help="skip the onnxruntime row of --mode infer")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args()

    c = cfg.clone()
    merge_from_file(c, args.cfg, check=False)  # checked once, after the options
    merge_from_list(c, args.opts)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(())
    torch.manual_seed(0)
    model = build_model(c, is_train=False).to(device)
    width, height = c.MODEL.IMAGE_SIZE
    x = torch.randn(args.batch, 3, height, width, device=device)
    train = args.mode == "train"
    reference = reference_output(model, x, train_mode=train)
    target = torch.rand_like(reference)

    print(f"processor: {processor_summary()}")
    print(f"{c.MODEL.NAME} {os.path.basename(args.cfg)} {height}x{width}, batch {args.batch}, "
          f"{args.mode}, device {device}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}")
    scale = max(reference.abs().max().item(), 1e-12)
    print("| mode | img/s | speed-up | max abs diff | diff / max abs baseline |\n"
          "|---|---|---|---|---|")
    baseline = None
    for mode in [PLAIN, *fast_modes(args)]:
        if train:
            m = measure_training(model, x, target, mode, reference, args.warmup, args.repeats)
        else:
            m = measure_inference(model, x, mode, reference, args.warmup, args.repeats)
        baseline = baseline or m.images_per_s
        print_row(m, baseline, scale)
    if not train and not args.no_onnx:
        if missing_modules(["onnx", "onnxruntime"]):
            print("| onnxruntime | not installed (pip install -r requirements-export.txt) |")
        else:
            print_row(measure_onnxruntime(model, x, reference, args.warmup, args.repeats),
                      baseline, scale)


def print_row(m: Measurement, baseline: float, scale: float) -> None:
    print(f"| {m.mode.name} | {m.images_per_s:.2f} | {m.images_per_s / baseline:.2f}x | "
          f"{m.max_abs_diff:.2e} | {m.max_abs_diff / scale:.1e} |", flush=True)


if __name__ == "__main__":
    main()
