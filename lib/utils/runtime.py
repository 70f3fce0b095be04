"""Where and how a run computes: device choice, seeding, mixed precision, RNG snapshots."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import random
import statistics
import time
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


BF16_MIN_SPEEDUP = 1.1  # CPU_BF16 'auto' takes bf16 from this measured gain over fp32 on


@functools.cache
def cpu_bf16_speedup() -> float:
    """How much faster a bf16-autocast convolution step (forward + backward) runs than fp32 on
    this CPU, measured once per process (~0.2 s); 0.0 where oneDNN has no bf16 kernels.

    The gain is a property of the processor, not of the model: AVX512-BF16 / AMX parts run bf16
    convolutions at up to twice the fp32 rate, AVX2-only parts fall back to a reference kernel
    ten times slower than fp32, and AVX512 parts without BF16 land near parity.
    """
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return 0.0
    # the first caller may be a prediction under torch.inference_mode: the probe needs autograd;
    # and it may be a seeded training run, whose random stream the probe's weights and input
    # must not shift (the first run of a process drew other batches than the next ones)
    with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=[]):
        return _bf16_step_ratio()


def _bf16_step_ratio(rounds: int = 9) -> float:
    """fp32 / bf16-autocast seconds of a small conv-BN-ReLU-conv training step.

    Both precisions are warmed up first (oneDNN builds its primitives on first use) and then
    timed in alternating rounds, the ratio being the median of the rounds' ratios: a probe of
    a few milliseconds timed in two blocks swung between 1.1x and 3x on one AMX host as the
    other core's work came and went, and chose fp32 or bf16 by chance.
    """
    block = torch.nn.Sequential(
        torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 32, 3, padding=1)).to(memory_format=torch.channels_last)
    x = torch.randn(16, 32, 32, 32).contiguous(memory_format=torch.channels_last)

    def step_seconds(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = block(x)
        out.float().square().mean().backward()
        return time.perf_counter() - start

    for bf16 in (False, True, False, True):
        step_seconds(bf16)
    ratios = [step_seconds(False) / step_seconds(True) for _ in range(rounds)]
    return statistics.median(ratios)


def resolve_amp(device: torch.device, requested: bool, cpu_policy: str = "auto") -> bool:
    """Whether a run that asks for mixed precision (TRAIN.AMP / TEST.AMP) gets it.

    On CUDA always (fp16). On a CPU per ``cpu_policy`` (the CPU_BF16 key): 'on' and 'off' as
    said, 'auto' only where bf16 beats fp32 by 10% on this processor (logged once), so the same
    experiment file is never slower with AMP on than off, whichever host runs it.
    """
    if not requested or device.type != "cpu" or cpu_policy == "on":
        return requested
    if cpu_policy == "off":
        return False
    if cpu_policy != "auto":
        raise ValueError(f"CPU_BF16 must be 'auto', 'on' or 'off', got {cpu_policy!r}")
    speedup = cpu_bf16_speedup()
    _log_bf16_choice(speedup)
    return speedup >= BF16_MIN_SPEEDUP


@functools.cache
def _log_bf16_choice(speedup: float) -> None:
    if speedup >= BF16_MIN_SPEEDUP:
        logger.info("AMP on this CPU: bf16 autocast (a bf16 convolution step runs %.2fx the "
                    "fp32 one here)", speedup)
    elif speedup == 0.0:
        logger.info("AMP on this CPU: fp32 (oneDNN has no bf16 kernels for this processor; "
                    "CPU_BF16 'on' would force it)")
    else:
        logger.info("AMP on this CPU: fp32 (a bf16 convolution step runs %.2fx the fp32 one "
                    "here; CPU_BF16 'on' would force bf16)", speedup)


def autocast(device: torch.device, enabled: bool):
    """Mixed precision context: fp16 on CUDA, bf16 on the CPU; a no-op when disabled (the
    policy of whether to enable it is resolve_amp's)."""
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


def processor_summary() -> str:
    """The processor in one line, for every printed speed figure: its name (lscpu's model name),
    the cores this process may use, and the instruction sets that decide bf16's worth."""
    name = "unknown processor"
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and name == "unknown processor":
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        name = platform.processor() or name
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    present = [flag for flag in wanted if flag in flags]
    isa = ", ".join(present) if present else ("no AVX2" if flags else "flags unknown")
    return f"{name}, {cores} cores ({isa})"
