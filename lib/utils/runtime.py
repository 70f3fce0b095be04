"""Where and how a run computes: device choice, seeding, mixed precision, RNG snapshots."""

from __future__ import annotations

import contextlib
import functools
import logging
import random
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


def usable_gpus(gpus: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """The GPUS entries this machine has; a model-zoo config that names four GPUs still runs
    on one (with a warning), and a machine without CUDA gets ()."""
    if not torch.cuda.is_available():
        return ()
    count = torch.cuda.device_count()
    present = tuple(dict.fromkeys(int(g) for g in gpus if 0 <= int(g) < count))
    if len(present) < len(gpus):
        _warn_missing_gpus(tuple(int(g) for g in gpus), count, present or (0,))
    return present or (0,)


@functools.cache
def _warn_missing_gpus(gpus: tuple[int, ...], count: int, used: tuple[int, ...]) -> None:
    """Once per configuration, however often the device is looked up."""
    missing = sorted(set(gpus) - set(used))
    logger.warning("GPUS %s: device(s) %s do not exist on this machine (%d CUDA device(s));"
                   " using %s", gpus, missing, count, used)


def select_device(gpus: tuple[int, ...] | list[int], local_rank: int | None = None
                  ) -> torch.device:
    """CUDA when present (the local rank's GPU under torchrun, else the first usable of GPUS),
    else CPU. A config that names GPUs on a machine without CUDA runs on the CPU with one
    warning.
    """
    if torch.cuda.is_available():
        index = local_rank if local_rank is not None else usable_gpus(gpus)[0]
        return torch.device("cuda", index)
    if len(gpus):
        logger.warning("GPUS %s requested but CUDA is not available: running on the CPU",
                       tuple(gpus))
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; a negative seed leaves them alone (the original)."""
    if seed < 0:
        return
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: give numpy and random each worker's own seed.

    torch seeds every worker differently, but forked workers would otherwise share the
    parent's numpy state and draw the same augmentations.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def autocast(device: torch.device, enabled: bool):
    """Mixed precision context: fp16 on CUDA, bf16 on the CPU; a no-op when disabled."""
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    """A GradScaler that scales only for fp16 on CUDA (bf16 needs none)."""
    return torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")


def rng_state() -> dict[str, Any]:
    """The state of every RNG the training loop draws from, as plain tensors and numbers
    (loadable with weights_only=True)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss),
                  "cached_gaussian": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32),
                         np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
