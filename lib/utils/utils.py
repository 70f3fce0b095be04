"""Run bookkeeping: output folders and logging, optimizers, checkpoints."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lib.utils.checkpoint import save_atomic
from lib.utils.model_summary import get_model_summary

__all__ = ["create_logger", "get_optimizer", "save_checkpoint", "last_saved_checkpoint",
           "get_model_summary", "run_name"]

_last_saved: list[str] = []  # the checkpoint this process wrote last (for an interrupt message)

_LOG_FORMAT = "%(asctime)-15s %(message)s"


def run_name(cfg) -> tuple[str, str]:
    """The (dataset, model) folder names of a run, as the original lays them out."""
    dataset = cfg.DATASET.DATASET
    if cfg.DATASET.HYBRID_JOINTS_TYPE:
        dataset = f"{cfg.DATASET.HYBRID_JOINTS_TYPE}_{dataset}"
    return dataset.replace(":", "_"), cfg.MODEL.NAME


def create_logger(cfg, cfg_name: str, phase: str = "train", rank: int = 0
                  ) -> tuple[logging.Logger, str, str]:
    """Create the run's output and tensorboard folders and log to a file there and to the console.

    Layout: OUTPUT_DIR/<dataset>/<model>/<cfg name>/ for checkpoints, results and the log file,
    LOG_DIR/<dataset>/<model>/<cfg name>_<time>/ for tensorboard. Ranks other than 0 of a
    distributed run log warnings only and to the console only. Calling it again (a second
    run in the same process) replaces the handlers instead of duplicating every line.
    """
    dataset, model = run_name(cfg)
    cfg_name = os.path.basename(cfg_name).split(".")[0]
    final_output_dir = Path(cfg.OUTPUT_DIR) / dataset / model / cfg_name
    time_str = time.strftime("%Y-%m-%d-%H-%M")
    tb_log_dir = Path(cfg.LOG_DIR) / dataset / model / f"{cfg_name}_{time_str}"

    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_hrnet_run_handler", False):
            root.removeHandler(handler)
            handler.close()

    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if rank == 0:
        final_output_dir.mkdir(parents=True, exist_ok=True)
        tb_log_dir.mkdir(parents=True, exist_ok=True)
        log_file = final_output_dir / f"{cfg_name}_{time_str}_{phase}.log"
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        handler._hrnet_run_handler = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    return logging.getLogger(), str(final_output_dir), str(tb_log_dir)


def get_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """TRAIN.OPTIMIZER 'sgd' (MOMENTUM, WD, NESTEROV) or 'adam' (no weight decay, as original)."""
    params = [p for p in model.parameters() if p.requires_grad]
    name = cfg.TRAIN.OPTIMIZER.lower()
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.TRAIN.LR, momentum=cfg.TRAIN.MOMENTUM,
                               weight_decay=cfg.TRAIN.WD, nesterov=cfg.TRAIN.NESTEROV)
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.TRAIN.LR)
    raise ValueError(f"TRAIN.OPTIMIZER must be 'adam' or 'sgd', got {cfg.TRAIN.OPTIMIZER!r}")


def save_checkpoint(states: dict[str, Any], is_best: bool, output_dir: str,
                    filename: str = "checkpoint.pth") -> None:
    """Write model_best.pth (when best, from states['best_state_dict']), then the checkpoint.

    Each file is written to a temporary file and renamed, so an interrupted write never
    replaces a good file with a broken one. model_best.pth goes first: a kill between the
    two leaves the previous checkpoint, whose resumed epoch writes the same model_best again
    (and the engine re-writes a model_best.pth that is missing or differs from the
    checkpoint's best_state_dict at resume).
    """
    if is_best and states.get("best_state_dict") is not None:
        save_atomic(states["best_state_dict"], os.path.join(output_dir, "model_best.pth"))
    path = os.path.join(output_dir, filename)
    save_atomic(states, path)
    _last_saved[:] = [path]


def last_saved_checkpoint() -> str:
    """The checkpoint file this process wrote last, or '' (for the Ctrl-C message)."""
    return _last_saved[0] if _last_saved else ""
