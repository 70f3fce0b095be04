"""Print the parameter count and GFLOPs of the model an experiment file describes.

    python tools/model_summary.py --cfg experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml \
        [--verbose] [KEY VALUE ...]

The model is built on the meta device (shapes only), so even the largest one takes a second.
"""

import argparse

import _init_paths  # noqa: F401  (puts the repository root on sys.path)
import torch
from cli import DEBUG_FLAG, load_config, run_cli

from lib.config import cfg
from lib.models import build_model
from lib.utils.model_summary import count_params_and_macs, get_model_summary, paper_gflops


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cfg', required=True, help='experiment configuration file')
    parser.add_argument('--verbose', action='store_true', help='print the per-layer table')
    parser.add_argument('--count-batchnorm', action='store_true',
                        help='count one MAC per BatchNorm output element as well')
    parser.add_argument(DEBUG_FLAG, action='store_true', help='tracebacks, not one-line errors')
    parser.add_argument('opts', nargs=argparse.REMAINDER,
                        help='KEY VALUE pairs overriding the configuration')
    args = parser.parse_args()
    args.opts = [item for item in args.opts if item != DEBUG_FLAG]
    return args


def main() -> None:
    args = parse_args()
    load_config(cfg, args)
    width, height = cfg.MODEL.IMAGE_SIZE
    with torch.device('meta'):
        model = build_model(cfg, is_train=False)
    if args.verbose:
        dummy = torch.zeros(1, 3, height, width, device='meta')
        print(get_model_summary(model, dummy, verbose=True, count_batchnorm=args.count_batchnorm))
    params, macs = count_params_and_macs(model, (1, 3, height, width),
                                         count_batchnorm=args.count_batchnorm)
    print(f'{cfg.MODEL.NAME} {height}x{width} (HxW): {params / 1e6:.2f}M params, '
          f'{paper_gflops(macs):.2f} GFLOPs (= {macs / 1e9:.2f}e9 multiply-adds)')


if __name__ == '__main__':
    run_cli(main)
