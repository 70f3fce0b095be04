"""Device choice when the config names GPUs the machine may not have."""

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
