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


def test_training_validates_every_nth_epoch_counted_from_the_schedules_start_and_the_last():
    from lib.core.engine import validates_after

    assert [e for e in range(10) if validates_after(e, 4, 10)] == [3, 7, 9]
    assert [e for e in range(10) if validates_after(e, 1, 10)] == list(range(10))  # original
    assert [e for e in range(5, 10) if validates_after(e, 4, 10)] == [7, 9]  # resumed at 5
    assert [e for e in range(3) if validates_after(e, 8, 3)] == [2]  # only the last


def test_an_unknown_subpixel_method_stops_the_run_before_it_starts(tmp_path):
    from lib.config import default_config
    from lib.core.engine import run_training

    cfg = default_config()
    cfg.OUTPUT_DIR, cfg.LOG_DIR = str(tmp_path / "out"), str(tmp_path / "log")
    cfg.TEST.SUBPIXEL_METHOD = "bilinear"
    with pytest.raises(ValueError, match="TEST.SUBPIXEL_METHOD must be one of"):
        run_training(cfg, "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml")
    assert not (tmp_path / "out").exists()


def test_amp_on_a_cpu_follows_the_policy_and_the_measured_gain(monkeypatch, caplog):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr(runtime, "cpu_bf16_speedup", lambda: 0.3)   # an AVX2-only part
    assert runtime.resolve_amp(cpu, True, "auto") is False
    assert runtime.resolve_amp(cpu, True, "on") is True
    assert runtime.resolve_amp(cpu, True, "off") is False
    assert runtime.resolve_amp(cpu, False, "on") is False             # AMP not asked for
    assert runtime.resolve_amp(cuda, True, "off") is True             # fp16 on CUDA regardless
    monkeypatch.setattr(runtime, "cpu_bf16_speedup", lambda: 1.9)   # an AMX part
    with caplog.at_level(logging.INFO):
        assert runtime.resolve_amp(cpu, True, "auto") is True
    assert "bf16 autocast" in caplog.text and "1.90x" in caplog.text
    monkeypatch.setattr(runtime, "cpu_bf16_speedup", lambda: 1.05)  # parity is not worth it
    assert runtime.resolve_amp(cpu, True, "auto") is False
    with pytest.raises(ValueError, match="CPU_BF16"):
        runtime.resolve_amp(cpu, True, "maybe")


def test_bf16_probe_measures_only_where_onednn_has_bf16_kernels(monkeypatch):
    runtime.cpu_bf16_speedup.cache_clear()
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert runtime.cpu_bf16_speedup() == 0.0
    runtime.cpu_bf16_speedup.cache_clear()
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert runtime.cpu_bf16_speedup() > 0.0   # timed: whatever this host's ratio is
    runtime.cpu_bf16_speedup.cache_clear()
    # the first to ask may be a prediction (TEST.AMP) under inference_mode: the probe's
    # backward still runs
    with torch.inference_mode():
        assert runtime.cpu_bf16_speedup() > 0.0
    runtime.cpu_bf16_speedup.cache_clear()
    # a seeded run that probes first draws what one that finds the answer cached draws
    torch.manual_seed(5)
    assert runtime.cpu_bf16_speedup() > 0.0
    probed = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), probed)
    runtime.cpu_bf16_speedup.cache_clear()


@pytest.mark.parametrize("speedup, expected", [(0.3, False), (1.9, True)])
def test_training_loop_asks_for_bf16_only_where_it_pays(monkeypatch, make_cfg, speedup,
                                                        expected):
    """TRAIN.AMP in the real training loop: autocast is entered only on a host whose bf16 is
    faster; elsewhere the step is plain fp32 (and the loss the same as with AMP off)."""
    from conftest import TINY_HRNET

    from lib.core import function
    from lib.core.loss import build_criterion
    from lib.models import build_model

    cfg = make_cfg("experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml",
                   TINY_HRNET + ["TRAIN.AMP", "True", "PRINT_FREQ", "1000"])
    monkeypatch.setattr(runtime, "cpu_bf16_speedup", lambda: speedup)
    seen = []
    monkeypatch.setattr(function, "autocast",
                        lambda device, enabled: seen.append(enabled)
                        or runtime.autocast(device, enabled))
    torch.manual_seed(0)
    model = build_model(cfg, is_train=True)
    width, height = cfg.MODEL.IMAGE_SIZE
    batch = (torch.randn(2, 3, height, width), torch.rand(2, 17, height // 4, width // 4),
             torch.ones(2, 17, 1), {})
    monkeypatch.setattr(function, "accuracy", lambda output, target: (None, 0.0, 1, 0))
    monkeypatch.setattr(function, "save_debug_images", lambda *args: None)
    function.train(cfg, [batch], model, build_criterion(cfg),
                   torch.optim.Adam(model.parameters()), 0, "", "", None)
    assert seen == [expected]


def test_processor_summary_names_the_processor_and_its_cores():
    summary = runtime.processor_summary()
    assert "cores" in summary and summary.split(",")[0].strip()
