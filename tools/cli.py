"""The argument parser shared by tools/train.py and tools/test.py (the original's arguments)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from lib.config import ConfigKeyError, ConfigValueError
from lib.core.function import NonFiniteLossError
from lib.utils.io import UserFileError


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cfg", required=True, help="experiment configure file name")
    parser.add_argument("--modelDir", default="", help="model directory (OUTPUT_DIR)")
    parser.add_argument("--logDir", default="", help="log directory (LOG_DIR)")
    parser.add_argument("--dataDir", default="", help="data directory (DATA_DIR)")
    parser.add_argument("--prevModelDir", default="", help="prev model directory")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="config overrides as KEY VALUE pairs, e.g. TRAIN.LR 0.01")
    return parser.parse_args(argv)


def run_cli(main: Callable[[], object]) -> None:
    """Run `main`, turning errors in the user's input into one line and exit status 2."""
    try:
        main()
    except (ConfigKeyError, ConfigValueError, FileNotFoundError, UserFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
