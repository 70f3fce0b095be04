"""One training epoch and one validation pass, with the original's signatures.

Both loops are device-agnostic (the device is the model's), honour MODEL.CHANNELS_LAST and
TRAIN.AMP / TEST.AMP, and work unchanged under DataParallel and DistributedDataParallel:
validation of a sharded loader gathers every rank's predictions and evaluates them once.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from lib.core.evaluate import accuracy
from lib.core.predictor import Predictor
from lib.utils import distributed
from lib.utils.meters import AverageMeter
from lib.utils.runtime import autocast, resolve_amp
from lib.utils.vis import save_debug_images

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the weights were left untouched."""


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _to_device(t: torch.Tensor, device: torch.device, channels_last: bool = False
               ) -> torch.Tensor:
    t = t.to(device, non_blocking=device.type == "cuda")
    if channels_last and t.dim() == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def _progress(loader: Iterable, desc: str, enabled: bool) -> Iterable:
    """A tqdm bar on an interactive terminal of rank 0; the plain loader elsewhere (CI, logs)."""
    show = enabled and sys.stderr.isatty() and not os.environ.get("CI")
    return tqdm(loader, desc=desc, leave=False, dynamic_ncols=True) if show else loader


def _criterion_on(outputs: torch.Tensor | list[torch.Tensor], criterion: nn.Module,
                  target: torch.Tensor, target_weight: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss (summed over the outputs of multi-output models) in fp32, and the last output."""
    if isinstance(outputs, (list, tuple)):
        loss = sum(criterion(o.float(), target, target_weight) for o in outputs)
        return loss, outputs[-1]
    return criterion(outputs.float(), target, target_weight), outputs


def train(config, train_loader, model: nn.Module, criterion: nn.Module,
          optimizer: torch.optim.Optimizer, epoch: int, output_dir: str, tb_log_dir: str,
          writer_dict: dict[str, Any] | None, scaler: torch.amp.GradScaler | None = None,
          last_checkpoint: str = "", on_step: Callable[[], None] | None = None) -> float:
    """Train for one epoch; returns the mean training loss.

    A non-finite loss stops training before the optimizer step with NonFiniteLossError,
    naming the epoch, the iteration and `last_checkpoint`, the last good checkpoint.
    ``on_step`` runs after every optimizer step (the engine's weight averaging).
    """
    device = _model_device(model)
    amp = resolve_amp(device, config.TRAIN.AMP, config.CPU_BF16)
    channels_last = config.MODEL.CHANNELS_LAST
    rank0 = distributed.get_rank() == 0
    batch_time, data_time, losses, acc = (AverageMeter() for _ in range(4))

    model.train()
    end = time.time()
    bar = _progress(train_loader, f"epoch {epoch}", rank0)
    for i, (input, target, target_weight, meta) in enumerate(bar):
        data_time.update(time.time() - end)
        input = _to_device(input, device, channels_last)
        target = _to_device(target, device)
        target_weight = _to_device(target_weight, device)

        with autocast(device, amp):
            outputs = model(input)
        loss, output = _criterion_on(outputs, criterion, target, target_weight)
        if not torch.isfinite(loss):
            where = f"epoch {epoch}, iteration {i}"
            good = last_checkpoint or "none written yet"
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at {where}; stopped before the weights were "
                f"updated. Last good checkpoint: {good}. Lower TRAIN.LR or check the data.")

        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if on_step is not None:
            on_step()

        n = input.size(0)
        losses.update(loss.item(), n)
        _, avg_acc, cnt, pred = accuracy(output.detach(), target)
        acc.update(avg_acc, cnt)
        batch_time.update(time.time() - end)
        end = time.time()

        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{losses.avg:.5f}", acc=f"{acc.avg:.3f}",
                            rate=f"{n / max(batch_time.val, 1e-9):.1f}/s")
        if i % config.PRINT_FREQ == 0 and rank0:
            logger.info(
                f"Epoch: [{epoch}][{i}/{len(train_loader)}]\t"
                f"Time {batch_time.val:.3f}s ({batch_time.avg:.3f}s)\t"
                f"Speed {n / max(batch_time.val, 1e-9):.1f} samples/s\t"
                f"Data {data_time.val:.3f}s ({data_time.avg:.3f}s)\t"
                f"Loss {losses.val:.5f} ({losses.avg:.5f})\t"
                f"Accuracy {acc.val:.3f} ({acc.avg:.3f})")
            if writer_dict is not None:
                writer, step = writer_dict["writer"], writer_dict["train_global_steps"]
                writer.add_scalar("train_loss", losses.val, step)
                writer.add_scalar("train_acc", acc.val, step)
                writer_dict["train_global_steps"] = step + 1
            prefix = os.path.join(output_dir, "train", f"train_{i}")
            save_debug_images(config, input, meta, target, pred * 4, output, prefix)
    return losses.avg


def validate(config, val_loader, val_dataset, model: nn.Module, criterion: nn.Module,
             output_dir: str, tb_log_dir: str, writer_dict: dict[str, Any] | None = None
             ) -> float:
    """Predict the validation set, evaluate it with the data set's metric, return the
    perf indicator (on every rank)."""
    predictor = Predictor(config, model, val_dataset.flip_pairs)
    device = predictor.device
    rank0 = distributed.get_rank() == 0
    num_joints = config.MODEL.NUM_JOINTS
    losses, acc = AverageMeter(), AverageMeter()

    sampler = getattr(val_loader, "sampler", None)
    indices = list(getattr(sampler, "indices", range(len(val_dataset))))
    all_preds = np.zeros((len(indices), num_joints, 3), dtype=np.float32)
    all_boxes = np.zeros((len(indices), 6))
    image_path: list[str] = []
    filenames: list[str] = []
    imgnums: list = []

    idx = 0
    with torch.inference_mode():
        batches = predictor.batches(_progress(val_loader, "validate", rank0))
        for i, ((input, target, target_weight, meta), prediction) in enumerate(batches):
            output = prediction.heatmaps
            target = _to_device(target, device)
            target_weight = _to_device(target_weight, device)
            loss = criterion(output, target, target_weight)

            n = input.size(0)
            losses.update(loss.item(), n)
            _, avg_acc, cnt, pred = accuracy(output, target)
            acc.update(avg_acc, cnt)

            c = meta["center"].numpy()
            s = meta["scale"].numpy()
            all_preds[idx:idx + n] = prediction.landmarks
            # a non-finite heatmap can still decode to finite numbers: mark its sample
            broken = ~torch.isfinite(output.reshape(n, -1)).all(dim=1).cpu().numpy()
            all_preds[idx:idx + n][broken, :, 2] = np.nan
            all_boxes[idx:idx + n, 0:2] = c[:, 0:2]
            all_boxes[idx:idx + n, 2:4] = s[:, 0:2]
            all_boxes[idx:idx + n, 4] = np.prod(s * 200, 1)
            all_boxes[idx:idx + n, 5] = meta["score"].numpy()
            image_path.extend(meta["image"])
            filenames.extend(_as_list(meta.get("filename", [""] * n)))
            imgnums.extend(_as_list(meta.get("imgnum", [0] * n)))
            idx += n

            if i % config.PRINT_FREQ == 0 and rank0:
                logger.info(f"Test: [{i}/{len(val_loader)}]\t"
                            f"Loss {losses.val:.4f} ({losses.avg:.4f})\t"
                            f"Accuracy {acc.val:.3f} ({acc.avg:.3f})")
                prefix = os.path.join(output_dir, "val", f"val_{i}")
                save_debug_images(config, input, meta, target, pred * 4, output, prefix)
                if writer_dict is not None and i == 0:
                    _log_heatmaps(writer_dict, output, target)

    all_preds, all_boxes, image_path, filenames, imgnums = _gather_in_dataset_order(
        indices, all_preds, all_boxes, image_path, filenames, imgnums)
    valid_loss = distributed.all_reduce_mean(losses.avg, losses.count)
    valid_acc = distributed.all_reduce_mean(acc.avg, acc.count)
    perf_indicator = 0.0
    if rank0:
        diverged = _blank_non_finite(all_preds)
        name_values, perf_indicator = val_dataset.evaluate(
            config, all_preds, output_dir, all_boxes, image_path, filenames, imgnums)
        if diverged:
            # NaN compares as nothing, so a metric may score NaN predictions as perfect: the
            # perf is the worst value of its direction instead (never model_best.pth)
            higher = getattr(val_dataset, "perf_higher_is_better", True)
            perf_indicator = -math.inf if higher else math.inf
            logger.warning("=> validation: %d of %d samples have non-finite predictions (NaN "
                           "or inf: the model diverged); perf indicator set to %s",
                           diverged, len(all_preds), perf_indicator)
        tables = name_values if isinstance(name_values, list) else [name_values]
        for table in tables:
            logger.info("\n" + format_name_value_table(table, config.MODEL.NAME))
        if writer_dict is not None:
            writer, step = writer_dict["writer"], writer_dict["valid_global_steps"]
            writer.add_scalar("valid_loss", valid_loss, step)
            writer.add_scalar("valid_acc", valid_acc, step)
            for table in tables:
                for name, value in table.items():
                    writer.add_scalar(f"valid/{_tag(name)}", value, step)
            writer_dict["valid_global_steps"] = step + 1
    return float(distributed.broadcast_object(perf_indicator))


def _blank_non_finite(preds: np.ndarray) -> int:
    """Set every landmark holding NaN/inf to (0, 0) with confidence 0, in place, so that the
    data set's evaluation and result files see plain numbers; returns how many samples had
    one."""
    bad_joints = ~np.isfinite(preds).all(axis=2)
    preds[bad_joints] = 0.0
    return int(bad_joints.any(axis=1).sum())


def _as_list(batch_field) -> list:
    """A collated meta field (tensor or list) as a list of plain Python values."""
    return batch_field.tolist() if isinstance(batch_field, torch.Tensor) else list(batch_field)


def _gather_in_dataset_order(indices, preds, boxes, image_path, filenames, imgnums):
    """Merge every rank's shard and put the samples back into data-set order.

    Returns (preds, all_boxes, image_path, filenames, imgnums).
    """
    shards = distributed.all_gather_objects(
        (indices, preds, boxes, image_path, filenames, imgnums))
    if len(shards) == 1:
        return preds, boxes, image_path, filenames, imgnums
    order = np.argsort(np.concatenate([s[0] for s in shards]), kind="stable")
    preds = np.concatenate([s[1] for s in shards])[order]
    boxes = np.concatenate([s[2] for s in shards])[order]
    merged = [sum((list(s[k]) for s in shards), []) for k in (3, 4, 5)]
    image_path, filenames, imgnums = ([m[j] for j in order] for m in merged)
    return preds, boxes, image_path, filenames, imgnums


def _log_heatmaps(writer_dict: dict[str, Any], output: torch.Tensor,
                  target: torch.Tensor) -> None:
    """The first validation sample's predicted and target heatmaps, as one image per epoch."""
    pred = output[0].amax(dim=0).clamp(0, 1)
    gt = target[0].amax(dim=0).clamp(0, 1)
    image = torch.cat([pred, gt], dim=1).unsqueeze(0).cpu()
    writer_dict["writer"].add_image("valid_heatmaps_pred_gt", image,
                                    writer_dict["valid_global_steps"])


def _tag(name: str) -> str:
    """A metric name as a legal tensorboard tag: 'AP (M)' -> 'AP_M'."""
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_.\-]", "_", name)).strip("_")


def format_name_value_table(name_value: OrderedDict | dict, full_arch_name: str) -> str:
    """The original's markdown result table: '| Arch | AP | Ap .5 | ... |'."""
    names = list(name_value.keys())
    values = list(name_value.values())
    if len(full_arch_name) > 15:
        full_arch_name = full_arch_name[:8] + "..."
    lines = [
        "| Arch " + " ".join(f"| {name}" for name in names) + " |",
        "|---" * (len(names) + 1) + "|",
        "| " + full_arch_name + " " + " ".join(f"| {value:.3f}" for value in values) + " |",
    ]
    return "\n".join(lines)
