"""What tools/train.py and tools/test.py run: build everything from the config, then loop.

One code path serves the CPU, one GPU, DataParallel over GPUS and DistributedDataParallel
under torchrun; only `_wrap_model` and the samplers differ between them.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tensorboardX import SummaryWriter
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler

import lib.models
from lib.config import check_config
from lib.core.adaptation import adapt_on_loader, adapted_weights_path
from lib.core.function import train, validate
from lib.core.loss import build_criterion
from lib.core.lr_schedule import build_scheduler
from lib.core.predictor import Predictor, load_network
from lib.core.speed_two_stage import config_after_adaptation, two_stage_dataset_kwargs
from lib.dataset import build_dataset
from lib.dataset.mixing import (
    MixedSampler,
    epoch_counts,
    image_sets,
    set_sizes,
    training_sets,
)
from lib.utils import distributed
from lib.utils.checkpoint import (
    CheckpointFormatError,
    extract_state_dict,
    load_checkpoint_file,
    load_state_dict_strict,
    remove_stale_temp_files,
    save_atomic,
)
from lib.utils.image_io import configure_opencv_for_workers
from lib.utils.model_summary import count_params_and_macs, paper_gflops
from lib.utils.runtime import (
    make_grad_scaler,
    rng_state,
    seed_everything,
    seed_worker,
    select_device,
    set_rng_state,
    usable_gpus,
)
from lib.utils.transforms import input_transform
from lib.utils.utils import create_logger, get_optimizer, save_checkpoint

logger = logging.getLogger(__name__)

# What a training checkpoint.pth holds besides the weights, all needed to resume it.
RESUME_ENTRIES = ("epoch", "state_dict", "best_state_dict", "perf", "best_perf", "optimizer",
                  "scheduler", "scaler", "rng")


@dataclass
class RunContext:
    """Where a run lives and what it computes on."""

    output_dir: str
    tb_log_dir: str
    device: torch.device
    rank: int
    world_size: int
    local_rank: int
    data_parallel: bool
    gpus: tuple[int, ...]           # the GPUS entries that exist here (DataParallel's devices)


def _setup(cfg, cfg_file: str, phase: str) -> RunContext:
    check_config(cfg)  # a config built in code is checked too: a typo fails now
    rank, world, local_rank = distributed.init_distributed()
    _, output_dir, tb_log_dir = create_logger(cfg, cfg_file, phase, rank)
    logger.info("config:\n%s", cfg)
    torch.backends.cudnn.benchmark = cfg.CUDNN.BENCHMARK
    torch.backends.cudnn.deterministic = cfg.CUDNN.DETERMINISTIC
    torch.backends.cudnn.enabled = cfg.CUDNN.ENABLED
    device = select_device(cfg.GPUS, local_rank if world > 1 else None)
    gpus = usable_gpus(cfg.GPUS) if world == 1 else ()
    data_parallel = device.type == "cuda" and len(gpus) > 1
    return RunContext(output_dir, tb_log_dir, device, rank, world, local_rank, data_parallel,
                      gpus)


def _wrap_model(cfg, model: nn.Module, ctx: RunContext) -> nn.Module:
    """Place the model and wrap it for the device layout: DDP, DataParallel or nothing."""
    model = model.to(ctx.device)
    if cfg.MODEL.CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last)
    if ctx.world_size > 1:
        if cfg.MODEL.SYNC_BN:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        device_ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    elif ctx.data_parallel:
        model = nn.DataParallel(model, device_ids=list(ctx.gpus))
    if cfg.MODEL.COMPILE:
        model = torch.compile(model)
    return model


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)      # DataParallel / DDP


def _weight_average(cfg, model: nn.Module) -> AveragedModel | None:
    """The exponential moving average of the weights (and BN statistics) that TRAIN.EMA_DECAY
    asks for, or None. It is what gets validated and saved as model_best / final_state: at a
    high learning rate the raw weights of one epoch can validate far worse than the next."""
    decay = cfg.TRAIN.EMA_DECAY
    if not decay:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _loader(cfg, dataset, ctx: RunContext, train_split: bool) -> DataLoader:
    per_device = cfg.TRAIN.BATCH_SIZE_PER_GPU if train_split else cfg.TEST.BATCH_SIZE_PER_GPU
    batch_size = per_device * (len(ctx.gpus) if ctx.data_parallel else 1)
    if train_split and cfg.DATASET.TRAIN_SET_SHARES:
        sizes, shares = set_sizes(dataset), cfg.DATASET.TRAIN_SET_SHARES
        sampler = MixedSampler(sizes, shares, max(cfg.SEED, 0), ctx.rank, ctx.world_size)
        logger.info("=> an epoch draws %s images of %s", " + ".join(
            map(str, epoch_counts(sizes, shares))), cfg.DATASET.TRAIN_SET)
        shuffle = None
    elif ctx.world_size > 1:
        sampler = (DistributedSampler(dataset, ctx.world_size, ctx.rank,
                                      shuffle=cfg.TRAIN.SHUFFLE, seed=max(cfg.SEED, 0))
                   if train_split else
                   distributed.ShardSampler(len(dataset), ctx.rank, ctx.world_size))
        shuffle = None
    else:
        sampler = None
        shuffle = cfg.TRAIN.SHUFFLE if train_split else False
    configure_opencv_for_workers(cfg.WORKERS)
    # a worker's image cache lives as long as the worker: keep them across epochs
    persistent = cfg.WORKERS > 0 and any(getattr(part, "image_cache", None) is not None
                                         for part in image_sets(dataset))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                      num_workers=cfg.WORKERS,
                      pin_memory=cfg.PIN_MEMORY and ctx.device.type == "cuda",
                      worker_init_fn=seed_worker, drop_last=False,
                      persistent_workers=persistent)


def test_split(cfg, output_dir: str = "", model: nn.Module | None = None):
    """DATASET.TEST_SET as tools/test.py predicts it. Spacecraft two-stage (TEST.SPEED_BBOX
    'model'): the coarse model's crops come first, re-framed and chosen by ``model`` (the
    tested one: TEST.SPEED_CROP_REFINE, _CROP_CANDIDATES, _GAMMA_CANDIDATES)."""
    extra = two_stage_dataset_kwargs(cfg, output_dir, model)
    return build_dataset(cfg, cfg.DATASET.TEST_SET, False, input_transform(), **extra)


def _datasets(cfg, train_too: bool, output_dir: str = "", model: nn.Module | None = None):
    valid = test_split(cfg, output_dir, model)
    train_set = (training_sets(lambda name: build_dataset(cfg, name, True, input_transform()),
                               cfg.DATASET.TRAIN_SET) if train_too else None)
    return train_set, valid


def _log_model_size(cfg, model: nn.Module) -> None:
    width, height = cfg.MODEL.IMAGE_SIZE
    params, macs = count_params_and_macs(model, (1, 3, height, width))
    logger.info("%s: %.2fM parameters, %.2f GFLOPs at %dx%d",
                cfg.MODEL.NAME, params / 1e6, paper_gflops(macs), width, height)


def _is_better(new: float, best: float | None, higher_is_better: bool) -> bool:
    """Whether this epoch's perf beats the best so far.

    NaN (a validation split without labels: nothing to rank) makes the latest epoch
    model_best. An infinite perf is what validate returns for non-finite predictions (a
    diverged model, the worst value of the metric's direction): never best, so model_best.pth
    never holds a diverged epoch.
    """
    if math.isinf(new):
        return False
    if best is None or math.isnan(new) or not math.isfinite(best):
        return True
    return new > best if higher_is_better else new < best


def validates_after(epoch: int, every: int, end_epoch: int) -> bool:
    """Whether training validates after ``epoch`` (0-based): every ``every``-th epoch counted
    from the start of the schedule (so a resumed run keeps the same ones) and the last."""
    return (epoch + 1) % every == 0 or epoch + 1 == end_epoch


def _set_end_epoch(cfg, end_epoch: int) -> None:
    logger.info("=> the run now ends after epoch %d (was %d)", end_epoch, cfg.TRAIN.END_EPOCH)
    frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.TRAIN.END_EPOCH = end_epoch
    if frozen:
        cfg.freeze()


def run_training(cfg, cfg_file: str,
                 replan: Callable[[int, list[float]], int] | None = None) -> dict[str, Any]:
    """Train cfg's model, validating every epoch; returns the run's summary (folders, last
    and best perf, the final weights, the wall seconds of each epoch trained here).

    ``replan``, where given, is asked after each epoch (epochs done, the wall seconds of each
    trained here) for the run's TRAIN.END_EPOCH from then on, at least one more epoch: a run
    fitted to a time budget can correct its length once its own epochs are timed. ``cfg`` is
    changed to match, and the LR schedule, which reads it, follows; under DDP rank 0 decides.

    checkpoint.pth (everything needed to resume bit-exactly), model_best.pth (by the data
    set's perf direction) and final_state.pth are written to the output directory, each
    atomically. With AUTO_RESUME an existing checkpoint.pth is continued.
    """
    ctx = _setup(cfg, cfg_file, "train")
    seed_everything(cfg.SEED + ctx.rank if cfg.SEED >= 0 else -1)
    try:
        return _train_loop(cfg, cfg_file, ctx, replan)
    finally:
        distributed.cleanup()


def _train_loop(cfg, cfg_file: str, ctx: RunContext,
                replan: Callable[[int, list[float]], int] | None) -> dict[str, Any]:
    rank0 = ctx.rank == 0
    model = lib.models.build_model(cfg, is_train=True)
    if rank0:
        remove_stale_temp_files(ctx.output_dir)
        shutil.copy2(cfg_file, ctx.output_dir)
        shutil.copy2(os.path.join(os.path.dirname(lib.models.__file__), f"{cfg.MODEL.NAME}.py"),
                     ctx.output_dir)
        _log_model_size(cfg, model)

    train_dataset, valid_dataset = _datasets(cfg, train_too=True, output_dir=ctx.output_dir)
    higher_is_better = getattr(valid_dataset, "perf_higher_is_better", True)
    train_loader = _loader(cfg, train_dataset, ctx, train_split=True)
    valid_loader = _loader(cfg, valid_dataset, ctx, train_split=False)

    model = _wrap_model(cfg, model, ctx)
    criterion = build_criterion(cfg).to(ctx.device)
    optimizer = get_optimizer(cfg, model)
    scheduler, per_iteration = build_scheduler(cfg, optimizer, len(train_loader))
    scaler = make_grad_scaler(ctx.device, cfg.TRAIN.AMP)
    ema = _weight_average(cfg, _unwrap(model))
    evaluated = model if ema is None else ema.module  # what validation and the saved files see

    begin_epoch, best_perf, perf = cfg.TRAIN.BEGIN_EPOCH, None, None
    best_state_dict = None
    checkpoint_file = os.path.join(ctx.output_dir, "checkpoint.pth")
    resume_file = (cfg.TRAIN.CHECKPOINT if cfg.TRAIN.RESUME and cfg.TRAIN.CHECKPOINT
                   else checkpoint_file if cfg.AUTO_RESUME and os.path.exists(checkpoint_file)
                   else "")
    if resume_file:
        state = _load_resume_state(resume_file, ctx.device)
        load_state_dict_strict(_unwrap(model), extract_state_dict(state["state_dict"]),
                               resume_file)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema_state_dict") is not None:
            ema.load_state_dict(state["ema_state_dict"])
        elif ema is not None:
            logger.warning("=> %s holds no weight average (TRAIN.EMA_DECAY was off): it starts "
                           "again from the resumed weights", resume_file)
        begin_epoch, perf, best_perf = state["epoch"], state["perf"], state["best_perf"]
        best_state_dict = state["best_state_dict"]
        set_rng_state(state["rng"][min(ctx.rank, len(state["rng"]) - 1)])
        logger.info("resumed from %s (epoch %d)", resume_file, begin_epoch)
        if rank0:
            _restore_model_best(best_state_dict, os.path.join(ctx.output_dir, "model_best.pth"))

    writer_dict = None
    if rank0:
        writer_dict = {"writer": SummaryWriter(log_dir=ctx.tb_log_dir),
                       "train_global_steps": 0, "valid_global_steps": begin_epoch}
    last_good = checkpoint_file if os.path.exists(checkpoint_file) else ""

    def after_step() -> None:
        if per_iteration:
            scheduler.step()
        if ema is not None:
            ema.update_parameters(_unwrap(model))

    epoch_seconds = []
    epoch = begin_epoch
    while epoch < cfg.TRAIN.END_EPOCH:
        epoch_start = time.perf_counter()
        if isinstance(train_loader.sampler, (DistributedSampler, MixedSampler)):
            train_loader.sampler.set_epoch(epoch)
        if writer_dict is not None:
            writer_dict["writer"].add_scalar("learning_rate", optimizer.param_groups[0]["lr"],
                                             epoch)
        train(cfg, train_loader, model, criterion, optimizer, epoch, ctx.output_dir,
              ctx.tb_log_dir, writer_dict, scaler=scaler, last_checkpoint=last_good,
              on_step=after_step)
        if not per_iteration:
            scheduler.step()
        is_best = False
        if validates_after(epoch, cfg.TRAIN.VALIDATE_EVERY, cfg.TRAIN.END_EPOCH):
            if writer_dict is not None:  # the curves' x is the epoch, validated or not
                writer_dict["valid_global_steps"] = epoch
            perf = validate(cfg, valid_loader, valid_dataset, evaluated, criterion,
                            ctx.output_dir, ctx.tb_log_dir, writer_dict)
            is_best = _is_better(perf, best_perf, higher_is_better)
        if is_best:
            best_perf = perf
            best_state_dict = {k: v.detach().clone() for k, v in
                               _unwrap(evaluated).state_dict().items()}
        rng = distributed.all_gather_objects(rng_state())
        if rank0:
            logger.info("=> saving checkpoint to %s", ctx.output_dir)
            save_checkpoint({
                "epoch": epoch + 1,
                "model": cfg.MODEL.NAME,
                "state_dict": _unwrap(model).state_dict(),
                "best_state_dict": best_state_dict,
                "perf": perf,
                "best_perf": best_perf,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "ema_state_dict": None if ema is None else ema.state_dict(),
                "rng": rng,
            }, is_best, ctx.output_dir)
            last_good = checkpoint_file
        distributed.barrier()
        epoch_seconds.append(time.perf_counter() - epoch_start)
        epoch += 1
        if replan is not None and epoch < cfg.TRAIN.END_EPOCH:
            end_epoch = max(epoch + 1, distributed.broadcast_object(
                replan(epoch, list(epoch_seconds))))
            if end_epoch != cfg.TRAIN.END_EPOCH:
                _set_end_epoch(cfg, end_epoch)
                if per_iteration:  # the next step's LR was set for the old end: set it again
                    scheduler.last_epoch -= 1
                    scheduler.step()

    if ctx.world_size > 1:
        _check_ranks_agree(_unwrap(model), ctx.world_size)
    final_file = os.path.join(ctx.output_dir, "final_state.pth")
    if rank0:
        logger.info("=> saving final model state to %s", final_file)
        save_atomic(_unwrap(evaluated).state_dict(), final_file)
        writer_dict["writer"].close()
    return {"output_dir": ctx.output_dir, "tb_log_dir": ctx.tb_log_dir, "perf": perf,
            "best_perf": best_perf, "final_state": final_file, "epoch_seconds": epoch_seconds}


def _load_resume_state(path: str, device: torch.device) -> dict[str, Any]:
    """A training checkpoint to resume; a weights-only file is an error saying what to use."""
    state = load_checkpoint_file(path, map_location=device)
    missing = [key for key in RESUME_ENTRIES if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointFormatError(
            f"{path!r} is not a training checkpoint to resume from (it lacks "
            f"{', '.join(missing)}); to start from its weights set MODEL.PRETRAINED instead "
            f"of TRAIN.CHECKPOINT / TRAIN.RESUME, to test them TEST.MODEL_FILE")
    return state


def _restore_model_best(best_state_dict: dict[str, torch.Tensor] | None, path: str) -> None:
    """Re-write model_best.pth from the resumed checkpoint when it is missing, unreadable or
    holds other weights (a run killed between two saves): the run then ends with the files
    an uninterrupted run would have written."""
    if best_state_dict is None:
        return
    try:
        on_disk = extract_state_dict(load_checkpoint_file(path)) if os.path.exists(path) else {}
    except CheckpointFormatError:
        on_disk = {}
    same = on_disk.keys() == best_state_dict.keys() and all(
        torch.equal(on_disk[key].cpu(), value.cpu()) for key, value in best_state_dict.items())
    if not same:
        logger.info("=> %s is missing or stale: written again from the checkpoint", path)
        save_atomic(best_state_dict, path)


def _weights_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _check_ranks_agree(model: nn.Module, world_size: int) -> None:
    """Log whether every rank ended with the same weights (DDP keeps them in step)."""
    digests = distributed.all_gather_objects(_weights_digest(model))
    if all(d == digests[0] for d in digests):
        logger.info("weights identical on all %d ranks (sha256 %s)", world_size, digests[0][:16])
    else:
        logger.warning("weights DIFFER between ranks: %s", [d[:16] for d in digests])


def _adapt_to_test_set(cfg, network: nn.Module, ctx: RunContext) -> tuple[str, Any]:
    """TEST.ADAPT_STEPS of test-time adaptation of ``network`` (moved to the run's device) on
    the unlabelled inputs of the test set, crops as the unadapted model frames them (a
    two-stage coarse model is adapted first, to the whole images); every rank adapts on all of
    them alike, rank 0 saves the weights. Returns the adapted weights' path and the config to
    test with (adaptation done: off; the adapted coarse weights)."""
    network.to(ctx.device)
    _, dataset = _datasets(cfg, train_too=False, output_dir=ctx.output_dir, model=network)
    adapt_on_loader(cfg, network, Predictor(cfg, network).loader(dataset), ctx.device)
    path = adapted_weights_path(ctx.output_dir, cfg.DATASET.TEST_SET)
    if ctx.rank == 0:
        save_atomic(network.state_dict(), path)
        logger.info("=> weights adapted to '%s' saved to %s", cfg.DATASET.TEST_SET, path)
    return path, config_after_adaptation(cfg, ctx.output_dir)


def run_test(cfg, cfg_file: str) -> dict[str, Any]:
    """Evaluate TEST.MODEL_FILE on the test set; returns the perf indicator and output dir."""
    ctx = _setup(cfg, cfg_file, "valid")
    try:
        model_file = cfg.TEST.MODEL_FILE or os.path.join(ctx.output_dir, "model_best.pth")
        network = load_network(cfg, model_file)
        logger.info("=> loaded model weights from %s", model_file)
        if cfg.TEST.ADAPT_STEPS > 0:
            model_file, cfg = _adapt_to_test_set(cfg, network, ctx)
        predictor = Predictor.from_network(cfg, network, ctx.device, model_file)
        _, valid_dataset = _datasets(cfg, train_too=False, output_dir=ctx.output_dir,
                                     model=predictor.model)
        valid_loader = _loader(cfg, valid_dataset, ctx, train_split=False)
        model = _wrap_model(cfg, predictor.model, ctx)
        criterion = build_criterion(cfg).to(ctx.device)
        perf = validate(cfg, valid_loader, valid_dataset, model, criterion, ctx.output_dir,
                        ctx.tb_log_dir)
        return {"output_dir": ctx.output_dir, "perf": perf, "model_file": model_file}
    finally:
        distributed.cleanup()
