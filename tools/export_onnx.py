"""Export the network of an experiment to ONNX (free batch axis) and check it with onnxruntime.

    python tools/export_onnx.py --cfg experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml \
        --out w32.onnx [--opset N] [--exporter dynamo|torchscript] [--no-check] \
        [TEST.MODEL_FILE model.pth] [KEY VALUE ...]

Weights come from TEST.MODEL_FILE when it is set, otherwise the network keeps its random
initial weights (enough to check that the export is faithful). The check runs the ONNX file
and PyTorch on one random batch and fails (exit 1) when they differ by 1e-4 or more.
Exit 2: bad input or missing optional packages (pip install -r requirements-export.txt).
"""

import argparse
import sys

import _init_paths  # noqa: F401  (puts the repository root on sys.path)
from cli import DEBUG_FLAG, USER_ERRORS, load_config, run_cli

from lib.config import cfg
from lib.models import build_model
from lib.utils.checkpoint import load_weights_file
from lib.utils.export import (
    EXPORTERS,
    export_onnx,
    onnx_opset,
    onnx_parity,
    require_modules,
    required_modules,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True, help="experiment configuration file")
    parser.add_argument("--out", required=True, help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset version (default: the exporter's own)")
    parser.add_argument("--exporter", choices=EXPORTERS, default="dynamo",
                        help="torch.export based (default) or the legacy TorchScript tracer")
    parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                        help="compare onnxruntime with PyTorch on a random batch")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest accepted max abs difference (heatmap units)")
    parser.add_argument(DEBUG_FLAG, action="store_true", help="tracebacks, not one-line errors")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="KEY VALUE pairs overriding the configuration")
    args = parser.parse_args(argv)
    args.opts = [item for item in args.opts if item != DEBUG_FLAG]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        require_modules(required_modules(args.exporter, args.check))
        config = cfg.clone()  # the defaults stay untouched for a later call in this process
        load_config(config, args)
        model = build_model(config, is_train=False)
        if config.TEST.MODEL_FILE:
            load_weights_file(model, config.TEST.MODEL_FILE)
            print(f"weights: {config.TEST.MODEL_FILE}")
        else:
            print("weights: random initialisation (TEST.MODEL_FILE is empty)")
    except (*USER_ERRORS, ValueError) as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2

    width, height = config.MODEL.IMAGE_SIZE
    try:
        path = export_onnx(model, args.out, (height, width), args.opset, args.exporter)
    except Exception as error:  # noqa: BLE001  (any exporter failure: say what to try next)
        other = next(name for name in EXPORTERS if name != args.exporter)
        print(f"error: the {args.exporter} exporter failed: {error}\n"
              f"(try --exporter {other})", file=sys.stderr)
        return 1
    print(f"wrote {path} ({config.MODEL.NAME}, input N x 3 x {height} x {width}, "
          f"opset {onnx_opset(path)}, "
          f"{args.exporter} exporter)")
    if not args.check:
        return 0
    difference = onnx_parity(model, path, (height, width))
    passed = difference < args.tolerance
    print(f"onnxruntime vs PyTorch: max abs difference {difference:.3e} "
          f"(tolerance {args.tolerance:.0e}) {'OK' if passed else 'FAILED'}")
    return 0 if passed else 1


if __name__ == "__main__":
    run_cli(lambda: sys.exit(main()))
