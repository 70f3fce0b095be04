"""ONNX export of a pose network, and the onnxruntime check that the file computes what it should.

The file takes an N x 3 x H x W float batch named ``input`` (N free, H and W those of
MODEL.IMAGE_SIZE) and returns ``heatmaps`` N x J x H/4 x W/4. Two exporters of torch are offered:
``dynamo`` (torch.export based, torch's default since 2.9, needs onnxscript) and ``torchscript``
(the tracing exporter, deprecated by torch, kept as a fallback for models torch.export refuses).
onnx, onnxruntime and onnxscript are optional extras (requirements-export.txt): this module
imports them only inside the functions that need them.
"""

from __future__ import annotations

import importlib
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "EXPORTERS",
    "ExportDependencyError",
    "required_modules",
    "missing_modules",
    "require_modules",
    "export_onnx",
    "onnx_parity",
    "onnx_opset",
]

EXPORTERS = ("dynamo", "torchscript")
INSTALL_COMMAND = ".venv/bin/pip install -r requirements-export.txt"
INPUT_NAME = "input"
OUTPUT_NAME = "heatmaps"


class ExportDependencyError(ImportError):
    """An optional package that ONNX export or its check needs is not installed."""


def required_modules(exporter: str, check: bool) -> list[str]:
    """The optional modules that exporting with ``exporter`` (and checking, if asked) imports."""
    _validate_exporter(exporter)
    return ["onnx"] + (["onnxscript"] if exporter == "dynamo" else []) + (
        ["onnxruntime"] if check else [])


def missing_modules(modules: Iterable[str]) -> list[str]:
    """Those of ``modules`` that cannot be imported."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def require_modules(modules: Iterable[str]) -> None:
    """Raise ExportDependencyError naming the missing packages and how to install them."""
    missing = missing_modules(modules)
    if missing:
        raise ExportDependencyError(
            f"ONNX export needs the optional package(s) {', '.join(missing)}, which are not "
            f"installed. Install them with: {INSTALL_COMMAND}"
        )


def _validate_exporter(exporter: str) -> None:
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown ONNX exporter {exporter!r}; choose one of {list(EXPORTERS)}")


def _validate_input_size(input_size: Sequence[int]) -> tuple[int, int]:
    height, width = (int(v) for v in input_size)
    if height <= 0 or width <= 0:
        raise ValueError(f"input size must be positive (height, width), got {tuple(input_size)}")
    return height, width


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_size: Sequence[int],
    opset: int | None = None,
    exporter: str = "dynamo",
) -> Path:
    """Write ``model`` (put in eval mode, on the CPU) to ``path`` as ONNX with a free batch axis.

    ``input_size`` is (height, width). ``opset`` None takes the exporter's default. The example
    batch holds two images: torch.export would fix a batch of one as a constant.
    """
    _validate_exporter(exporter)
    height, width = _validate_input_size(input_size)
    require_modules(required_modules(exporter, check=False))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    example = torch.zeros(2, 3, height, width)
    names = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    with torch.no_grad():
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=4096)
            # external_data=False: one self-contained file (fine below protobuf's 2 GB).
            torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=opset,
                              dynamic_shapes=({0: batch},), external_data=False,
                              verbose=False, **names)
        else:
            with warnings.catch_warnings():
                # The input-size check reads static H and W: the trace is right for any batch.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                torch.onnx.export(model, (example,), str(path), dynamo=False,
                                  opset_version=opset,
                                  dynamic_axes={INPUT_NAME: {0: "batch"},
                                                OUTPUT_NAME: {0: "batch"}},
                                  **names)
    return path


def onnx_opset(path: str | os.PathLike) -> int:
    """The default-domain opset version an ONNX file was written for."""
    require_modules(["onnx"])
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def _flatten_outputs(outputs) -> list[np.ndarray]:
    if isinstance(outputs, (list, tuple)):
        return [o.detach().float().cpu().numpy() for o in outputs]
    return [outputs.detach().float().cpu().numpy()]


def onnx_parity(
    model: nn.Module,
    path: str | os.PathLike,
    input_size: Sequence[int],
    batch_size: int = 3,
    seed: int = 0,
    relative: bool = False,
) -> float:
    """Max |onnxruntime - PyTorch| over every output element, on one seeded N(0, 1) batch
    (``relative``: divided by the larger of 1 and PyTorch's largest |output|).

    The batch size differs from the export example's on purpose, so that the free batch axis is
    checked too. The file is validated with onnx.checker first; the run uses the CPU provider.
    """
    height, width = _validate_input_size(input_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    require_modules(["onnx", "onnxruntime"])
    import onnx
    import onnxruntime

    if not Path(path).is_file():
        raise FileNotFoundError(f"ONNX file {str(path)!r} does not exist")
    onnx.checker.check_model(str(path))
    generator = torch.Generator().manual_seed(seed)
    batch = torch.randn(batch_size, 3, height, width, generator=generator)
    model = model.cpu().eval()
    with torch.no_grad():
        expected = _flatten_outputs(model(batch))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: batch.numpy()})
    if len(got) != len(expected):
        raise ValueError(f"{path}: {len(got)} ONNX outputs but the model gives {len(expected)}")
    for onnx_out, torch_out in zip(got, expected, strict=True):
        if onnx_out.shape != torch_out.shape:
            raise ValueError(
                f"{path}: ONNX output shape {list(onnx_out.shape)} differs from PyTorch's "
                f"{list(torch_out.shape)}"
            )
    differences = [np.abs(o - t) for o, t in zip(got, expected, strict=True)]
    if not all(np.all(np.isfinite(d)) for d in differences):
        return float("inf")  # a NaN / inf on either side is no match, whatever the other says
    difference = float(max(d.max(initial=0.0) for d in differences))
    if relative:
        difference /= max(1.0, *(float(np.abs(t).max(initial=0.0)) for t in expected))
    return difference


class OnnxRuntimeModel(nn.Module):
    """An onnxruntime session behind the nn.Module call of the network it was exported from:
    tensors in, fp32 heatmap tensors out, so flip test, decoding and every caller of the model
    run unchanged. CPU execution provider; as many intra-op threads as torch uses."""

    def __init__(self, onnx_bytes: bytes, threads: int | None = None) -> None:
        super().__init__()
        require_modules(["onnxruntime"])
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(onnx_bytes, options,
                                                    providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        array = input.detach().float().cpu().contiguous().numpy()
        (heatmaps,) = self.session.run(None, {self.input_name: array})[-1:]
        return torch.from_numpy(heatmaps).to(input.device)


def onnxruntime_model(model: nn.Module, input_size: Sequence[int], tolerance: float = 1e-3,
                      exporter: str = "torchscript") -> tuple[OnnxRuntimeModel, float]:
    """``model`` exported to ONNX in a temporary folder and loaded into onnxruntime, with the
    largest heatmap difference to PyTorch on a seeded check batch, relative to the larger of 1
    and the largest heatmap value (raises ValueError above ``tolerance``: a file that computes
    something else is never used in its place)."""
    height, width = _validate_input_size(input_size)
    require_modules(required_modules(exporter, check=True))
    model = model.cpu().eval()
    with tempfile.TemporaryDirectory(prefix="onnx_") as folder:
        path = export_onnx(model, Path(folder) / "model.onnx", (height, width),
                           exporter=exporter)
        difference = onnx_parity(model, path, (height, width), relative=True)
        runtime = OnnxRuntimeModel(path.read_bytes())
    if not difference <= tolerance:
        raise ValueError(f"onnxruntime's heatmaps differ from PyTorch's by {difference:.3g} "
                         f"of their peak (more than {tolerance:g}) on a check batch: not used")
    return runtime, difference
