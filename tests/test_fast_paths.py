"""The fast execution paths give the plain path's predictions within their tolerances."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from lib.config import cfg as default_cfg
from lib.config import merge_from_file, merge_from_list
from lib.core.benchmark import (
    PLAIN,
    Mode,
    fit_epochs,
    fit_epochs_keeping_first,
    measure_inference,
    reference_output,
    steady_epoch,
    steady_epoch_s,
)
from lib.core.inference import get_max_preds
from lib.models import build_model
from lib.utils.runtime import autocast

TINY = ["MODEL.IMAGE_SIZE", "[64, 96]", "MODEL.HEATMAP_SIZE", "[16, 24]",
        "MODEL.EXTRA.STAGE2.NUM_CHANNELS", "[8, 16]", "MODEL.EXTRA.STAGE3.NUM_MODULES", "1",
        "MODEL.EXTRA.STAGE3.NUM_CHANNELS", "[8, 16, 32]", "MODEL.EXTRA.STAGE4.NUM_MODULES", "1",
        "MODEL.EXTRA.STAGE4.NUM_CHANNELS", "[8, 16, 32, 64]"]


@pytest.fixture(scope="module")
def model_and_input():
    c = default_cfg.clone()
    merge_from_file(c, "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml")
    merge_from_list(c, TINY)
    torch.manual_seed(0)
    model = build_model(c, is_train=False).eval()
    for m in model.modules():  # O(1) activations, so that differences are meaningful
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
    x = torch.randn(4, 3, 96, 64)
    return model, x


def _outputs(model, x, channels_last, amp):
    model = copy.deepcopy(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(x.device, amp):
        return model(x).float()


def test_channels_last_fp32_matches_plain(model_and_input):
    model, x = model_and_input
    plain = _outputs(model, x, False, False)
    fast = _outputs(model, x, True, False)
    scale = plain.abs().max().item()
    assert scale > 0.1
    assert (fast - plain).abs().max().item() < 1e-4 * max(1.0, scale)
    np.testing.assert_array_equal(get_max_preds(fast)[0], get_max_preds(plain)[0])


@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_autocast_close_to_plain(model_and_input, channels_last):
    model, x = model_and_input
    plain = _outputs(model, x, False, False)
    fast = _outputs(model, x, channels_last, True)
    scale = plain.abs().max().item()
    # bf16 keeps 8 bits of mantissa: a few per cent of the heatmap range after ~40 layers
    assert (fast - plain).abs().max().item() < 0.05 * scale
    assert (fast - plain).abs().mean().item() < 0.005 * scale


def test_benchmark_reports_the_difference(model_and_input):
    model, x = model_and_input
    reference = reference_output(model, x, train_mode=False)
    plain = measure_inference(model, x, PLAIN, reference, warmup=0, repeats=1)
    fast = measure_inference(model, x, Mode("cl", channels_last=True), reference, 0, 1)
    assert plain.max_abs_diff == 0.0 and plain.images_per_s > 0
    assert fast.max_abs_diff < 1e-4 * reference.abs().max().item()


def test_fused_conv_bn_matches_plain(model_and_input):
    from lib.models.fusion import fuse_conv_bn

    model, x = model_and_input
    model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():  # BatchNorms that are not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
    fused = fuse_conv_bn(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    plain = _outputs(model, x, False, False)
    fast = _outputs(fused, x, True, False)
    assert (fast - plain).abs().max().item() < 1e-4 * max(1.0, plain.abs().max().item())
    np.testing.assert_array_equal(get_max_preds(fast)[0], get_max_preds(plain)[0])


def test_fit_epochs_keeping_first_shrinks_the_later_runs_first():
    # 8 coarse epochs of 18 s take 144 of 324 s (under 0.6 of it): kept; 180 s: 7 of 13 fine
    assert fit_epochs_keeping_first(324.0, [8, 13], [18.0, 24.0], 0.6) == [8, 7]
    # a third of 324 s holds 6 coarse epochs (108 s); the other 216 s hold 9 fine ones
    assert fit_epochs_keeping_first(324.0, [8, 13], [18.0, 24.0], 1 / 3) == [6, 9]
    assert fit_epochs_keeping_first(1e4, [8, 13], [18.0, 24.0], 0.6) == [8, 13]
    assert fit_epochs_keeping_first(10.0, [8, 13], [18.0, 24.0], 0.6) == [1, 1]  # at least one
    assert fit_epochs_keeping_first(100.0, [8], [18.0], 0.5) == [2]


def test_fit_epochs_scales_every_run_alike_within_the_budget():
    assert fit_epochs(100.0, [8, 12], [5.0, 4.0]) == [8, 12]  # 88 s fit
    # 176 s wanted in 88: half of each, rounded down
    assert fit_epochs(88.0, [8, 12], [10.0, 8.0]) == [4, 6]
    assert fit_epochs(50.0, [7, 11], [10.0, 10.0]) == [1, 3]  # factor 50/180
    assert fit_epochs(0.0, [8, 12], [10.0, 8.0]) == [1, 1]  # never below one epoch
    # room to spare: grown alike, up to max_factor
    assert fit_epochs(176.0, [4, 6], [10.0, 8.0], max_factor=3.0) == [8, 12]
    assert fit_epochs(200.0, [4, 6], [10.0, 8.0], max_factor=3.0) == [9, 13]  # x2.27
    assert fit_epochs(1e6, [4, 6], [10.0, 8.0], max_factor=2.5) == [10, 15]


def test_steady_epoch_leaves_the_first_epochs_decode_and_the_set_up_to_be_paid_once():
    # 8 epochs, the first 12 s slower (decoding into the cache), 10 s of set-up before them
    assert steady_epoch(10.0 + 12.0 + 8 * 15.0, [27.0] + [15.0, 14.0, 16.0] * 2 + [15.0]) \
        == (15.0, 22.0)
    assert steady_epoch(30.0, [25.0]) == (25.0, 5.0)  # one epoch: it is the steady one
    assert steady_epoch(40.0, [20.0, 21.0]) == (21.0, 0.0)  # never a negative cost
    assert steady_epoch_s([25.0, 18.0, 17.0, 19.0]) == 18.0  # the fine run's refit reads it
