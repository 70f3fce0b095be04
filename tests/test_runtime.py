"""Run-level decisions: which device a config gets, which epoch becomes model_best."""

import logging

import pytest
import torch

from lib.utils import runtime


@pytest.fixture
def fake_cuda(monkeypatch):
    def install(count):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    return install


def test_no_cuda_means_cpu_and_no_gpus(fake_cuda, caplog):
    fake_cuda(0)
    assert runtime.usable_gpus((0, 1, 2, 3)) == ()
    with caplog.at_level(logging.WARNING):
        assert runtime.select_device((0, 1)) == torch.device("cpu")
    assert "CUDA is not available" in caplog.text


def test_model_zoo_gpus_on_a_smaller_machine_keep_the_present_ones(fake_cuda, caplog):
    fake_cuda(2)
    with caplog.at_level(logging.WARNING):
        assert runtime.usable_gpus((0, 1, 2, 3)) == (0, 1)
    assert "[2, 3]" in caplog.text
    assert runtime.select_device((1, 0)) == torch.device("cuda", 1)


def test_only_absent_gpus_fall_back_to_the_first(fake_cuda):
    fake_cuda(1)
    assert runtime.usable_gpus((3,)) == (0,)
    assert runtime.usable_gpus(()) == (0,)
    assert runtime.select_device((5, 6)) == torch.device("cuda", 0)
    assert runtime.select_device((0,), local_rank=0) == torch.device("cuda", 0)


def test_best_model_ranks_by_the_perf_direction_and_skips_unlabelled_perf():
    from lib.core.engine import _is_better

    assert _is_better(0.7, None, True) and _is_better(0.3, None, False)
    assert _is_better(0.71, 0.7, True) and not _is_better(0.69, 0.7, True)
    assert _is_better(0.2, 0.3, False) and not _is_better(0.4, 0.3, False)  # ESA: lower wins
    nan = float("nan")
    assert _is_better(nan, nan, False)     # unlabelled split: the latest epoch is kept
    assert _is_better(0.5, nan, False)
    inf = float("inf")  # a diverged epoch (non-finite predictions) scores the worst value
    assert not _is_better(-inf, None, True) and not _is_better(inf, None, False)
    assert not _is_better(inf, 9.0, False) and not _is_better(-inf, 0.1, True)


def test_an_unknown_subpixel_method_stops_the_run_before_it_starts(tmp_path):
    from lib.config import default_config
    from lib.core.engine import run_training

    cfg = default_config()
    cfg.OUTPUT_DIR, cfg.LOG_DIR = str(tmp_path / "out"), str(tmp_path / "log")
    cfg.TEST.SUBPIXEL_METHOD = "bilinear"
    with pytest.raises(ValueError, match="TEST.SUBPIXEL_METHOD must be one of"):
        run_training(cfg, "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml")
    assert not (tmp_path / "out").exists()
