"""ONNX export: parity with PyTorch for HRNet and PoseResNet, the tool, missing extras."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script
from torch import nn

from lib.models import build_model
from lib.utils.export import (
    ExportDependencyError,
    export_onnx,
    onnx_opset,
    onnx_parity,
    require_modules,
    required_modules,
)

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4


_STAGE = {"NUM_MODULES": 1, "BLOCK": "BASIC", "FUSE_METHOD": "SUM"}
# HRNet with three branches (fusion up and down), 5 joints, 64 x 48 (H x W): seconds.
TINY_HRNET = (None, {
    "MODEL.NUM_JOINTS": 5, "MODEL.IMAGE_SIZE": [48, 64], "MODEL.HEATMAP_SIZE": [12, 16],
    "MODEL.EXTRA": {
        "FINAL_CONV_KERNEL": 1, "PRETRAINED_LAYERS": ["*"],
        "STAGE2": {**_STAGE, "NUM_BRANCHES": 2, "NUM_BLOCKS": [1, 1], "NUM_CHANNELS": [8, 16]},
        "STAGE3": {**_STAGE, "NUM_BRANCHES": 3, "NUM_BLOCKS": [1, 1, 1],
                   "NUM_CHANNELS": [8, 16, 32]}}})
# PoseResNet-18 (the res50 experiment with 18 layers) at 64 x 64, 17 joints. Its input must be
# a multiple of 32 (at 64 x 48 the last stage rounds up and the heatmaps come out 16 x 16, in
# PyTorch and ONNX alike).
RES50_FILE = "experiments/coco/resnet/res50_256x192_d256x3_adam_lr1e-3.yaml"
RES18 = (RES50_FILE, {"MODEL.EXTRA.NUM_LAYERS": 18, "MODEL.IMAGE_SIZE": [64, 64],
                      "MODEL.HEATMAP_SIZE": [16, 16]})


def with_random_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Trained-like BatchNorm (random statistics and affine terms), so that whatever the
    exporter does to BatchNorm (folding it into convolutions) is checked too."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(size, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(size, generator=generator))
            module.weight.data.copy_(1.0 + 0.2 * torch.randn(size, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(size, generator=generator))
    return model.eval()


def test_required_modules_follow_exporter_and_check():
    assert required_modules("dynamo", check=True) == ["onnx", "onnxscript", "onnxruntime"]
    assert required_modules("torchscript", check=False) == ["onnx"]
    with pytest.raises(ValueError, match="unknown ONNX exporter"):
        required_modules("tracer", check=True)


def test_missing_package_names_it_and_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(ExportDependencyError, match=r"onnxruntime.*pip install -r "
                                                    r"requirements-export\.txt"):
        require_modules(["onnxruntime"])


def test_tool_without_extras_says_how_to_install_and_exits_2(monkeypatch, capsys, tmp_path):
    for name in ("onnx", "onnxruntime", "onnxscript"):
        monkeypatch.setitem(sys.modules, name, None)
    tool = load_script("tools/export_onnx.py", monkeypatch, "export_onnx_tool")
    out = tmp_path / "model.onnx"
    cfg_file = REPO / RES50_FILE
    code = tool.main(["--cfg", str(cfg_file), "--out", str(out)])
    message = capsys.readouterr().err
    assert code == 2
    assert "onnx, onnxscript, onnxruntime" in message
    assert ".venv/bin/pip install -r requirements-export.txt" in message
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("setting, input_size, heatmap_shape", [
    (TINY_HRNET, (64, 48), (5, 16, 12)),
    (RES18, (64, 64), (17, 16, 16)),
], ids=["hrnet", "pose_resnet18"])
def test_onnx_matches_pytorch(make_cfg, setting, input_size, heatmap_shape, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = with_random_batchnorm(build_model(make_cfg(*setting), is_train=False))
    path = export_onnx(model, tmp_path / "model.onnx", input_size)

    difference = onnx_parity(model, path, input_size, batch_size=3)
    print(f"{model.__class__.__name__} {input_size}: max abs difference {difference:.3e}")
    assert difference < TOLERANCE

    # The batch axis is free: batches of 1 and 4 run and give 1 and 4 heatmap stacks.
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "input"
    for batch in (1, 4):
        x = np.random.default_rng(batch).standard_normal((batch, 3, *input_size), np.float32)
        (heatmaps,) = session.run(None, {"input": x})
        assert heatmaps.shape == (batch, *heatmap_shape)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(heatmaps, expected, atol=TOLERANCE, rtol=0)


@pytest.mark.slow
def test_torchscript_exporter_and_requested_opset(make_cfg, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = with_random_batchnorm(build_model(make_cfg(*TINY_HRNET), is_train=False))
    path = export_onnx(model, tmp_path / "model.onnx", (64, 48), opset=17,
                       exporter="torchscript")
    assert onnx_opset(path) == 17
    assert onnx_parity(model, path, (64, 48), batch_size=2) < TOLERANCE


@pytest.mark.slow
def test_parity_catches_a_model_that_differs(make_cfg, tmp_path):
    """A file exported from other weights must fail the check: the check really compares."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = with_random_batchnorm(build_model(make_cfg(*TINY_HRNET), is_train=False))
    path = export_onnx(model, tmp_path / "model.onnx", (64, 48), exporter="torchscript")
    with torch.no_grad():
        model.final_layer.bias.add_(1e-3)
    assert onnx_parity(model, path, (64, 48)) == pytest.approx(1e-3, rel=1e-3)


@pytest.mark.slow
def test_tool_exports_checks_and_loads_weights(make_cfg, tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    tool = load_script("tools/export_onnx.py", monkeypatch, "export_onnx_tool")
    cfg_file = REPO / RES50_FILE
    overrides = ["MODEL.EXTRA.NUM_LAYERS", "18", "MODEL.IMAGE_SIZE", "[64, 64]"]
    weights = tmp_path / "weights.pth"
    cfg = make_cfg(*RES18)
    torch.save(with_random_batchnorm(build_model(cfg, is_train=False), seed=3).state_dict(),
               weights)
    out = tmp_path / "res18.onnx"
    code = tool.main(["--cfg", str(cfg_file), "--out", str(out), "--exporter", "torchscript",
                      *overrides, "TEST.MODEL_FILE", str(weights)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"weights: {weights}" in printed
    assert "max abs difference" in printed and "OK" in printed
    assert out.is_file()

    missing = tool.main(["--cfg", str(cfg_file), "--out", str(out), *overrides,
                         "TEST.MODEL_FILE", str(tmp_path / "absent.pth")])
    assert missing == 2
    assert "absent.pth" in capsys.readouterr().err


@pytest.mark.slow
def test_predictor_on_onnxruntime_gives_the_torch_landmarks(make_cfg, tmp_path):
    """TEST.RUNTIME 'onnxruntime': same weights file, same heatmaps (to 1e-4) and the same
    decoded landmarks as the PyTorch predictor, flip test included; nothing written."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from lib.core.predictor import Predictor

    base, overrides = TINY_HRNET
    overrides = {**overrides, "MODEL.NUM_JOINTS": 17}  # COCO's, for its flip pairs
    torch.manual_seed(0)
    model = with_random_batchnorm(build_model(make_cfg(base, overrides), is_train=False))
    weights = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), weights)
    settings = {**overrides, "TEST.FLIP_TEST": True, "DATASET.DATASET": "coco"}
    on_torch = Predictor.from_weights(make_cfg(base, settings), str(weights))
    on_onnx = Predictor.from_weights(
        make_cfg(base, {**settings, "TEST.RUNTIME": "onnxruntime"}), str(weights))
    assert on_onnx.device == torch.device("cpu")
    assert list(tmp_path.iterdir()) == [weights]

    x = torch.randn(3, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    expected, got = on_torch.heatmaps(x), on_onnx.heatmaps(x)
    assert got.dtype == torch.float32 and got.shape == expected.shape == (3, 17, 16, 12)
    assert (got - expected).abs().max().item() < TOLERANCE
    meta = {"center": torch.tensor([[24.0, 32.0]] * 3), "scale": torch.tensor([[0.24, 0.32]] * 3)}
    np.testing.assert_allclose(on_onnx.decode(got, meta), on_torch.decode(expected, meta),
                               atol=1e-3)


@pytest.mark.slow
def test_onnxruntime_model_refuses_an_export_that_computes_something_else(make_cfg,
                                                                            monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from lib.utils import export

    model = with_random_batchnorm(build_model(make_cfg(*TINY_HRNET), is_train=False))
    monkeypatch.setattr(export, "onnx_parity", lambda *args, **kwargs: 0.5)
    with pytest.raises(ValueError, match="differ from PyTorch's by 0.5"):
        export.onnxruntime_model(model, (64, 48))
    monkeypatch.setattr(export, "onnx_parity", lambda *args, **kwargs: float("nan"))
    with pytest.raises(ValueError, match="differ from PyTorch's by nan"):
        export.onnxruntime_model(model, (64, 48))
