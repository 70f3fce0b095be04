"""Train a keypoint network: python tools/train.py --cfg FILE [KEY VALUE ...].

Runs on the CPU, one GPU, DataParallel over GPUS, or DistributedDataParallel when started
with `torchrun --nproc_per_node N tools/train.py --cfg FILE`.
"""

import _init_paths  # noqa: F401  (puts the repository root on sys.path)
from cli import load_config, parse_args, run_cli

from lib.config import cfg
from lib.core.engine import run_training


def main() -> None:
    args = parse_args("Train keypoints network")
    load_config(cfg, args)
    run_training(cfg, args.cfg)


if __name__ == "__main__":
    run_cli(main)
