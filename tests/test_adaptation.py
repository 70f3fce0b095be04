"""Test-time adaptation (lib/core/adaptation.py, TEST.ADAPT_*): the entropy it minimises, that
it moves the normalisation layers only, and tools/test.py's path that saves the adapted weights."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import yaml
from conftest import SPEED_CFG, build_cfg
from torch import nn
from yacs.config import CfgNode as CN

import lib.core.engine as engine
import lib.core.speed_two_stage as two_stage
from lib.config import default_config, merge_from_list
from lib.core.adaptation import (
    adapt_normalization,
    adapted_weights_path,
    heatmap_entropy,
    mean_entropy,
    normalization_layers,
)
from lib.models import build_model

TINY_HRNET = {
    "FINAL_CONV_KERNEL": 1,
    "STAGE2": {"NUM_MODULES": 1, "NUM_BRANCHES": 2, "BLOCK": "BASIC", "NUM_BLOCKS": [1, 1],
               "NUM_CHANNELS": [8, 16], "FUSE_METHOD": "SUM"},
}


def test_entropy_of_the_softmax_pixel_distribution():
    flat = torch.zeros(2, 3, 8, 8)
    assert float(heatmap_entropy(flat, 0.1)) == pytest.approx(1.0, abs=1e-6)
    peak = torch.zeros(2, 3, 8, 8)
    peak[..., 4, 5] = 1.0  # e^10 against 63 pixels of e^0
    p = math.exp(10) / (math.exp(10) + 63)
    expected = -(p * math.log(p) + (1 - p) * math.log((1 - p) / 63)) / math.log(64)
    assert float(heatmap_entropy(peak, 0.1)) == pytest.approx(expected, rel=1e-4)
    assert float(heatmap_entropy(peak, 0.01)) < 1e-6  # a colder softmax: one pixel
    two = torch.zeros(1, 1, 8, 8)
    two[0, 0, 0, 0] = two[0, 0, 7, 7] = 50.0  # two equal peaks: log 2 of log 64
    assert float(heatmap_entropy(two, 0.1)) == pytest.approx(math.log(2) / math.log(64),
                                                             abs=1e-5)


def blobs(count: int, generator: torch.Generator, size: int = 16):
    """Images with one bright Gaussian blob on noise, its heatmap and its centre (x, y)."""
    centers = torch.randint(3, size - 3, (count, 2), generator=generator).float()
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(),
                            indexing="ij")
    distance2 = (xs - centers[:, 0, None, None]) ** 2 + (ys - centers[:, 1, None, None]) ** 2
    heatmap = torch.exp(-distance2 / 4.0)[:, None]
    image = heatmap.expand(-1, 3, -1, -1) + 0.1 * torch.randn(count, 3, size, size,
                                                              generator=generator)
    return image, heatmap, centers


def source_trained_model() -> nn.Module:
    """A small conv + BatchNorm net trained to draw the blob's heatmap (the source domain)."""
    torch.manual_seed(0)
    layers, channels = [], 3
    for _ in range(3):
        layers += [nn.Conv2d(channels, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                   nn.ReLU()]
        channels = 8
    model = nn.Sequential(*layers, nn.Conv2d(channels, 1, 1))
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(120):
        image, heatmap, _ = blobs(16, generator)
        loss = ((model(image) - heatmap) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def peak_error(model: nn.Module, images: torch.Tensor, centers: torch.Tensor) -> float:
    """Mean distance (heatmap pixels) from the arg-max to the true centre."""
    with torch.no_grad():
        flat = model(images).flatten(1).argmax(1)
    found = torch.stack([flat % images.shape[-1], flat // images.shape[-1]], 1).float()
    return float((found - centers).norm(dim=1).mean())


def test_adaptation_to_a_contrast_shifted_domain_lowers_the_entropy_and_finds_the_peaks():
    model = source_trained_model()
    generator = torch.Generator().manual_seed(1)
    images, _, centers = blobs(32, generator)
    # the target domain: a washed-out, bright version of the same scenes
    target = 0.15 * images + 1.0 + 0.05 * torch.randn(images.shape, generator=generator)
    batches = [target[:16], target[16:]]
    error_before = peak_error(model, target, centers)
    report = adapt_normalization(model, batches, steps=40, lr=1e-2, temperature=0.1)
    assert report.images == 32 and report.steps == 40
    assert report.entropy_after < report.entropy_before - 0.02
    error_after = peak_error(model, target, centers)
    assert error_before > 0.5 and error_after < 0.5 * error_before


def tiny_hrnet() -> nn.Module:
    cfg = default_config()
    merge_from_list(cfg, ["MODEL.NUM_JOINTS", 11, "MODEL.IMAGE_SIZE", [64, 64],
                          "MODEL.HEATMAP_SIZE", [16, 16]], check=False)
    cfg.MODEL.EXTRA = CN(TINY_HRNET, new_allowed=True)
    torch.manual_seed(3)
    return build_model(cfg, is_train=True)


def normalization_names(model: nn.Module) -> set[str]:
    """state_dict keys that belong to a normalisation layer."""
    layers = {id(layer) for layer in normalization_layers(model)}
    return {f"{name}.{key}" for name, module in model.named_modules() if id(module) in layers
            for key in module.state_dict()}


def test_adaptation_moves_only_the_normalization_layers_of_an_hrnet():
    model = tiny_hrnet()
    generator = torch.Generator().manual_seed(0)
    batches = [2.0 + 0.3 * torch.randn(4, 3, 64, 64, generator=generator) for _ in range(3)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    entropy_before, images = mean_entropy(model, batches, 0.1)
    report = adapt_normalization(model, batches, steps=12, lr=1e-2)
    after = model.state_dict()
    norm_keys = normalization_names(model)
    assert norm_keys and images == 12 and report.images == 12 and report.steps == 12
    for key, value in before.items():
        if key not in norm_keys:
            assert torch.equal(value, after[key]), f"{key} changed"
    moved = {key for key in norm_keys if not torch.equal(before[key], after[key])}
    affine = {k for k in norm_keys if k.endswith((".weight", ".bias"))}
    statistics = {k for k in norm_keys if k.endswith((".running_mean", ".running_var"))}
    assert affine <= moved and statistics <= moved
    assert report.entropy_before == pytest.approx(entropy_before)
    assert not model.training
    assert all(p.requires_grad for p in model.parameters())  # left as it was found


def test_a_model_without_normalization_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match="no normalisation layer"):
        adapt_normalization(model, [torch.zeros(2, 3, 8, 8)], steps=1, lr=1e-3)


def test_single_image_batches_are_refused_not_looped_forever():
    with pytest.raises(ValueError, match="at least two images"):
        adapt_normalization(tiny_hrnet(), [torch.zeros(1, 3, 64, 64)], steps=2, lr=1e-3)


def tiny_test_run(speed_root, tmp_path, seed: int, options: dict):
    """A tiny fine HRNet's config file, its frozen test config (adaptation and ``options``
    set, TEST.MODEL_FILE its saved random weights) and the model."""
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump({"MODEL": {"NAME": "pose_hrnet", "EXTRA": TINY_HRNET}}))
    cfg = build_cfg(str(cfg_file), {
        **SPEED_CFG, "DATASET.ROOT": str(speed_root), "OUTPUT_DIR": str(tmp_path / "out"),
        "LOG_DIR": str(tmp_path / "log"), "TEST.BATCH_SIZE_PER_GPU": 2, "TEST.ADAPT_LR": 1e-2,
        **options})
    torch.manual_seed(seed)
    model = build_model(cfg, is_train=True)
    weights = tmp_path / f"source_{seed}.pth"
    torch.save(model.state_dict(), weights)
    cfg.defrost()
    cfg.TEST.MODEL_FILE = str(weights)
    cfg.freeze()
    return str(cfg_file), cfg, model


def test_tools_test_path_adapts_saves_and_tests_the_adapted_weights(speed_root, tmp_path):
    cfg_file, cfg, model = tiny_test_run(speed_root, tmp_path, 3, {"TEST.ADAPT_STEPS": 3})
    result = engine.run_test(cfg, cfg_file)
    adapted = torch.load(adapted_weights_path(result["output_dir"], "validation"),
                         weights_only=True)
    source = model.state_dict()
    assert adapted.keys() == source.keys()
    changed = {k for k in source if not torch.equal(source[k], adapted[k])}
    assert changed and changed <= normalization_names(model)
    assert np.isfinite(result["perf"])


def test_two_stage_test_adapts_the_coarse_model_once_and_tests_with_both_adapted(
        speed_root, tmp_path):
    from test_speed_two_stage import write_coarse_model

    coarse_cfg_file, coarse_weights = write_coarse_model(tmp_path)
    cfg_file, cfg, _ = tiny_test_run(speed_root, tmp_path, 4, {
        "TEST.SPEED_BBOX": "model", "TEST.SPEED_COARSE_CFG": coarse_cfg_file,
        "TEST.SPEED_COARSE_MODEL_FILE": coarse_weights, "TEST.SPEED_CROP_REFINE": 1,
        "TEST.ADAPT_STEPS": 2})
    result = engine.run_test(cfg, cfg_file)
    out = result["output_dir"]
    coarse_file = adapted_weights_path(out, "validation", "coarse")
    source = torch.load(coarse_weights, weights_only=True)
    adapted = torch.load(coarse_file, weights_only=True)
    coarse_model = build_model(two_stage.coarse_config(cfg), is_train=False)
    changed = {k for k in source if not torch.equal(source[k], adapted[k])}
    assert changed and changed <= normalization_names(coarse_model)
    assert os.path.isfile(adapted_weights_path(out, "validation"))
    # the test itself ran on the adapted coarse model, adapted once
    after = two_stage.config_after_adaptation(cfg, out)
    assert after.TEST.ADAPT_STEPS == 0 and after.TEST.SPEED_COARSE_MODEL_FILE == coarse_file
