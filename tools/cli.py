"""The command line shared by the tools: the original's arguments, config loading, and
`run_cli`, which ends every user mistake with one line `error: <what>` and exit status 2.

`--debug` (or HRNET_DEBUG=1) lets the traceback through instead, for developers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import yaml

from lib.config import ConfigKeyError, ConfigValueError, default_config, update_config
from lib.config import cfg as shared_cfg
from lib.core.function import NonFiniteLossError
from lib.dataset import UnknownDatasetError
from lib.models import UnknownModelError
from lib.utils.checkpoint import (
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    UnsafeCheckpointError,
)
from lib.utils.export import ExportDependencyError
from lib.utils.io import UserFileError, disk_full_error
from lib.utils.utils import last_saved_checkpoint

DEBUG_FLAG = "--debug"
DEBUG_VARIABLE = "HRNET_DEBUG"
EXIT_USER_ERROR = 2
EXIT_DIVERGED = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


class ConfigInputError(ValueError):
    """The experiment file or the command-line overrides cannot be read as a configuration."""


# Errors that describe something the user gave (a file, a key, a value): one line, exit 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigKeyError, ConfigValueError, ConfigInputError, UserFileError, FileNotFoundError,
    CheckpointNotFoundError, CheckpointFormatError, CheckpointMismatchError,
    UnsafeCheckpointError, UnknownDatasetError, UnknownModelError, ExportDependencyError,
)


def overrides(opts: list[str]) -> list[str]:
    """The KEY VALUE overrides of a command line, after an optional '--' (which a tool with a
    many-valued option before them, or a habit of marking where options end, puts there)."""
    return opts[1:] if opts[:1] == ["--"] else opts


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cfg", required=True, help="experiment configure file name")
    parser.add_argument("--modelDir", default="", help="model directory (OUTPUT_DIR)")
    parser.add_argument("--logDir", default="", help="log directory (LOG_DIR)")
    parser.add_argument("--dataDir", default="", help="data directory (DATA_DIR)")
    parser.add_argument("--prevModelDir", default="", help="prev model directory")
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help=f"show tracebacks instead of one-line errors (or {DEBUG_VARIABLE}=1)")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="config overrides as KEY VALUE pairs, e.g. TRAIN.LR 0.01")
    args = parser.parse_args(argv)
    # after the first override everything is a KEY VALUE pair to argparse: take --debug out
    args.debug = args.debug or DEBUG_FLAG in args.opts
    args.opts = [item for item in overrides(args.opts) if item != DEBUG_FLAG]
    return args


def load_config(cfg: Any, args: argparse.Namespace) -> None:
    """update_config, with every way the experiment file or the overrides can be unreadable
    (YAML syntax, an empty file, a value of the wrong type, an odd number of overrides) as a
    ConfigInputError naming the file or the command line."""
    path = Path(args.cfg)
    try:
        if path.is_file() and yaml.safe_load(path.read_text(encoding="utf-8")) is None:
            raise ConfigInputError(f"config file {path} is empty (no keys): give an experiment "
                                   f"file, e.g. experiments/coco/hrnet/w32_256x192_adam_lr1e-3"
                                   f".yaml")
        update_config(cfg, args)
    except (ConfigKeyError, ConfigValueError, ConfigInputError, FileNotFoundError):
        raise
    except yaml.YAMLError as error:
        raise ConfigInputError(f"config file {path} is not valid YAML: "
                               f"{' '.join(str(error).split())}") from error
    except UnicodeDecodeError as error:
        raise ConfigInputError(f"config file {path} is not UTF-8 text: {error}") from error
    except (ValueError, AssertionError, TypeError) as error:
        # yacs: "Type mismatch (...) for config key: TRAIN.LR_STEP"; ours: odd KEY VALUE list
        raise ConfigInputError(f"config {path} + command line: {error}") from error


def config_from_file(cfg_file: str, opts: list[str]) -> Any:
    """An experiment file with its overrides over a fresh copy of the defaults (the shared
    config stays untouched), for the tools that load several; unreadable input is
    :func:`load_config`'s one-line error."""
    config = default_config()
    load_config(config, argparse.Namespace(cfg=cfg_file, opts=opts))
    return config


def _debugging() -> bool:
    return DEBUG_FLAG in sys.argv[1:] or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def _message(error: BaseException) -> str:
    """The error's text on one line (a KeyError's str() would quote it)."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(text.split()) or type(error).__name__


def _free_space(path: str) -> tuple[str, str]:
    """The existing folder holding ``path`` and its free space, e.g. ('/runs', '1.2 GiB')."""
    folder = Path(path).resolve()
    if folder.suffix or not folder.is_dir():
        folder = folder.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = float(shutil.disk_usage(folder).free)
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    while free >= 1024 and len(units) > 1:
        free /= 1024
        units.pop(0)
    return str(folder), f"{free:.1f} {units[0]}"


def _fail(message: str, status: int) -> NoReturn:
    print(message, file=sys.stderr)
    sys.exit(status)


def run_cli(main: Callable[[], object]) -> None:
    """Run `main`, turning errors in the user's input into one line and exit status 2,
    a diverged training into one line and exit 1, Ctrl-C into one line saying what was saved
    and exit 130. With --debug or HRNET_DEBUG=1 the tracebacks come through."""
    try:
        main()
    except SystemExit:
        raise
    except BaseException as error:
        if _debugging():
            raise
        if isinstance(error, KeyboardInterrupt):
            saved = last_saved_checkpoint()
            what = (f"the last checkpoint is {saved} (resume with AUTO_RESUME True)" if saved
                    else "this run wrote no checkpoint")
            _fail(f"interrupted: {what}; no file was left half-written", EXIT_INTERRUPTED)
        full = disk_full_error(error)
        if full is not None:
            # our checkpoint writer names the file; otherwise the run's output folder
            folder, free = _free_space(full.filename or shared_cfg.OUTPUT_DIR or os.getcwd())
            target = f" writing {full.filename}" if full.filename else ""
            _fail(f"error: no space left on the device{target}: {free} free in {folder}; the "
                  f"files written before are intact", EXIT_USER_ERROR)
        if isinstance(error, USER_ERRORS):
            _fail(f"error: {_message(error)}", EXIT_USER_ERROR)
        if isinstance(error, NonFiniteLossError):
            _fail(f"error: {_message(error)}", EXIT_DIVERGED)
        raise
