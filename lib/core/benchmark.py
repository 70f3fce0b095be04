"""Throughput of a model in its plain and fast execution modes, measured side by side."""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lib.models.fusion import fuse_conv_bn
from lib.utils.export import onnxruntime_model
from lib.utils.runtime import autocast


@dataclass(frozen=True)
class Mode:
    """One way of executing the same model: memory format, autocast, compilation."""

    name: str
    channels_last: bool = False
    amp: bool = False
    compile: bool = False
    fuse_bn: bool = False  # inference only: BatchNorm folded into the convolutions


PLAIN = Mode("fp32 NCHW (baseline)")


@dataclass
class Measurement:
    mode: Mode
    images_per_s: float
    max_abs_diff: float  # of the heatmaps, against the plain mode on the same input


def _prepare(model: nn.Module, x: torch.Tensor, mode: Mode) -> tuple[nn.Module, torch.Tensor]:
    if mode.fuse_bn:
        model = fuse_conv_bn(model)
    if mode.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if mode.compile:
        model = torch.compile(model)
    return model, x


def _timed(step, warmup: int, repeats: int, iters: int, sync) -> list[float]:
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            step()
        sync()
        times.append((time.perf_counter() - start) / iters)
    return times


def measure_inference(model: nn.Module, x: torch.Tensor, mode: Mode, reference: torch.Tensor,
                      warmup: int = 2, repeats: int = 5, iters: int = 1) -> Measurement:
    """Forward passes per second (in images) under torch.inference_mode."""
    model = copy.deepcopy(model).eval()
    model, xm = _prepare(model, x, mode)
    device = x.device

    def step():
        with torch.inference_mode(), autocast(device, mode.amp):
            return model(xm)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = _timed(step, warmup, repeats, iters, sync)
    out = step().float()
    diff = (out - reference).abs().max().item()
    return Measurement(mode, x.shape[0] / statistics.median(times), diff)


def measure_training(model: nn.Module, x: torch.Tensor, target: torch.Tensor, mode: Mode,
                     reference: torch.Tensor, warmup: int = 2, repeats: int = 5,
                     iters: int = 1) -> Measurement:
    """Forward + backward + Adam step per second (in images); the difference is that of the
    first forward's heatmaps, before any step changed the weights."""
    model = copy.deepcopy(model).train()
    model, xm = _prepare(model, x, mode)
    device = x.device
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)
    with torch.no_grad(), autocast(device, mode.amp):
        diff = (model(xm).float() - reference).abs().max().item()

    def step():
        with autocast(device, mode.amp):
            out = model(xm)
        loss = 0.5 * (out.float() - target).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = _timed(step, warmup, repeats, iters, sync)
    return Measurement(mode, x.shape[0] / statistics.median(times), diff)


def reference_output(model: nn.Module, x: torch.Tensor, train_mode: bool) -> torch.Tensor:
    """The plain fp32 NCHW heatmaps that every mode is compared with."""
    model = copy.deepcopy(model).train(train_mode)
    with torch.no_grad():
        return model(x).float()


def images_per_second_of_loader(loader: Iterable, images: int) -> float:
    """How fast a DataLoader hands out training batches (decoding, augmentation, targets)."""
    start, seen = time.perf_counter(), 0
    for batch in loader:
        seen += batch[0].shape[0]
        if seen >= images:
            break
    return seen / (time.perf_counter() - start)


def training_loop_seconds(run_epoch: Callable[[], object]) -> float:
    """Wall time of one call of the real training loop (data, step, logging, all of it)."""
    start = time.perf_counter()
    run_epoch()
    return time.perf_counter() - start


def profile_training_step(model: nn.Module, x: torch.Tensor, target: torch.Tensor, amp: bool,
                          steps: int = 5, rows: int = 12) -> str:
    """torch.profiler's table of the ops that take the most CPU time in ``steps`` training
    steps (forward, loss, backward, Adam) of ``model`` on ``x``."""
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)
    device = x.device

    def step():
        with autocast(device, amp):
            out = model(x)
        loss = 0.5 * (out.float() - target).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def measure_onnxruntime(model: nn.Module, x: torch.Tensor, reference: torch.Tensor,
                        warmup: int = 2, repeats: int = 5, iters: int = 1) -> Measurement:
    """The model exported to ONNX and run by onnxruntime's CPU provider (TEST.RUNTIME
    'onnxruntime'), on the same input."""
    runtime, _ = onnxruntime_model(copy.deepcopy(model), tuple(x.shape[2:]))
    xc = x.cpu()

    def step():
        return runtime(xc)

    times = _timed(step, warmup, repeats, iters, lambda: None)
    diff = (step() - reference.cpu()).abs().max().item()
    return Measurement(Mode("onnxruntime fp32 (exported ONNX)"), x.shape[0] /
                       statistics.median(times), diff)


def fit_epochs(budget_s: float, epochs: Sequence[int], epoch_seconds: Sequence[float],
               max_factor: float = 1.0) -> list[int]:
    """Epochs for runs trained one after the other within ``budget_s`` seconds: each run's
    ``epochs`` scaled by one common factor (rounded down, at least 1, at most ``max_factor``).
    The runs keep their proportions, so a slow host shortens every schedule alike and, with
    ``max_factor`` above 1, a fast one spends the time it has left on longer ones."""
    wanted = sum(count * seconds for count, seconds in zip(epochs, epoch_seconds, strict=True))
    factor = min(max(budget_s, 0.0) / wanted, max_factor) if wanted > 0 else max_factor
    return [max(1, math.floor(count * factor)) for count in epochs]


def fit_epochs_keeping_first(budget_s: float, epochs: Sequence[int],
                             epoch_seconds: Sequence[float], first_share: float) -> list[int]:
    """Epochs for runs trained one after the other within ``budget_s`` seconds, where the first
    run keeps its ``epochs[0]`` up to ``first_share`` of the budget (as many as fit there, at
    least one) and the later runs share the rest alike (:func:`fit_epochs`): for a run that the
    others build on (the two-stage demo's coarse model places every crop of the fine one), where
    a shortened schedule costs more than it frees."""
    first = max(1, min(epochs[0], math.floor(first_share * max(budget_s, 0.0)
                                             / epoch_seconds[0])))
    rest = fit_epochs(budget_s - first * epoch_seconds[0], epochs[1:], epoch_seconds[1:])
    return [first, *rest]


def steady_epoch(run_s: float, epoch_seconds: Sequence[float]) -> tuple[float, float]:
    """(seconds of a steady epoch, seconds paid once) of a training run that took ``run_s``
    in all: the first epoch also decodes every image into the cache and the run builds its
    model and data before it, so the steady epoch is the mean of the later ones (the only one
    if there is one; a mean, so that validating after some epochs only, TRAIN.VALIDATE_EVERY,
    is counted in its share) and the rest of ``run_s`` is paid once per run."""
    steady_s = steady_epoch_s(epoch_seconds)
    return steady_s, max(run_s - steady_s * len(epoch_seconds), 0.0)


def steady_epoch_s(epoch_seconds: Sequence[float]) -> float:
    """The mean of the epochs after the first (which also decodes the images into the
    cache), or the only one: what :func:`steady_epoch` calls a steady epoch."""
    return statistics.fmean(epoch_seconds[1:] or epoch_seconds)
