"""TRAIN.LR_SCHEDULER / TRAIN.WARMUP_EPOCHS: the learning rate of every optimizer step."""

import math

import pytest
import torch
from torch.optim.lr_scheduler import MultiStepLR

from lib.core.lr_schedule import build_scheduler, lr_factor


def _rates(cfg, iters_per_epoch):
    """The learning rate of every optimizer step of the run, as the engine steps it."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.TRAIN.LR)
    scheduler, per_iteration = build_scheduler(cfg, optimizer, iters_per_epoch)
    rates = []
    for _ in range(cfg.TRAIN.END_EPOCH):
        for _ in range(iters_per_epoch):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if per_iteration:
                scheduler.step()
        if not per_iteration:
            scheduler.step()
    return scheduler, rates


def test_original_multistep_is_torchs_multisteplr_per_epoch(make_cfg):
    cfg = make_cfg(None, {"TRAIN.END_EPOCH": 6, "TRAIN.LR_STEP": [2, 4]})
    scheduler, rates = _rates(cfg, 3)
    assert isinstance(scheduler, MultiStepLR)
    assert rates == [0.001] * 6 + [0.001 * 0.1] * 6 + [0.001 * 0.1 * 0.1] * 6


def test_cosine_warms_up_linearly_then_anneals_to_zero(make_cfg):
    cfg = make_cfg(None, {"TRAIN.END_EPOCH": 5, "TRAIN.LR": 0.002,
                          "TRAIN.LR_SCHEDULER": "cosine", "TRAIN.WARMUP_EPOCHS": 1.0})
    _, rates = _rates(cfg, 10)
    assert len(rates) == 50
    assert rates[:10] == pytest.approx([0.002 * (i + 1) / 10 for i in range(10)])
    assert rates[10] == pytest.approx(0.002)  # the peak, right after the warm-up
    assert all(a >= b for a, b in zip(rates[10:], rates[11:], strict=False))  # never rises
    assert rates[30] == pytest.approx(0.002 * 0.5 * (1 + math.cos(math.pi * 20 / 40)))
    assert rates[-1] == pytest.approx(0.002 * 0.5 * (1 + math.cos(math.pi * 39 / 40)))


def test_warmup_before_multistep_keeps_the_steps(make_cfg):
    cfg = make_cfg(None, {"TRAIN.END_EPOCH": 4, "TRAIN.LR_STEP": [2], "TRAIN.LR_FACTOR": 0.5,
                          "TRAIN.WARMUP_EPOCHS": 0.5})
    _, rates = _rates(cfg, 4)
    assert rates[:2] == pytest.approx([0.0005, 0.001])
    assert rates[2:8] == pytest.approx([0.001] * 6)
    assert rates[8:] == pytest.approx([0.0005] * 8)


def test_factor_is_a_pure_function_of_the_step():
    assert lr_factor(0, 100, 10, "cosine", 0.0, [], 0.1) == 1.0
    assert lr_factor(999, 100, 10, "cosine", 0.0, [], 0.1) == pytest.approx(0.0, abs=1e-4)
    assert lr_factor(5000, 100, 10, "cosine", 0.0, [], 0.1) == 0.0  # past the end: stays 0
    assert lr_factor(250, 100, 10, "multistep", 0.0, [2, 3], 0.1) == pytest.approx(0.1)


def test_unknown_scheduler_is_refused_by_name(make_cfg):
    from lib.config import ConfigValueError, check_config

    with pytest.raises(ConfigValueError, match="TRAIN.LR_SCHEDULER must be one of"):
        check_config(make_cfg(None, {"TRAIN.LR_SCHEDULER": "linear"}))
    with pytest.raises(ConfigValueError, match="TRAIN.WARMUP_EPOCHS"):
        check_config(make_cfg(None, {"TRAIN.WARMUP_EPOCHS": -1.0}))
