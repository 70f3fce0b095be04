"""Evaluate a keypoint network: python tools/test.py --cfg FILE TEST.MODEL_FILE path.

TEST.MODEL_FILE may be a model-zoo state_dict (with or without `module.`) or one of our
checkpoints; when empty, the run's model_best.pth is used.
"""

import _init_paths  # noqa: F401  (puts the repository root on sys.path)
from cli import load_config, parse_args, run_cli

from lib.config import cfg
from lib.core.engine import run_test


def main() -> None:
    args = parse_args("Test keypoints network")
    load_config(cfg, args)
    result = run_test(cfg, args.cfg)
    print(f"results in {result['output_dir']} (perf indicator {result['perf']:.4f})")


if __name__ == "__main__":
    run_cli(main)
