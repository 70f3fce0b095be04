"""Parameter and multiply-accumulate (MAC) counts of a network for one input.

Counts come from forward hooks on the leaf modules, so they follow what the forward pass really
runs. MACs are per sample, counted as the original HRNet tool does:
  convolution      weight elements x output pixels (C_out * C_in / groups * k * k * H_out * W_out)
  transposed conv  the same formula (4x the exact figure at stride 2, as the original counts)
  linear           in_features x out_features per output row
  batch norm       one MAC per output element, only with ``count_batchnorm=True``
The "GFLOPs" of the HRNet / SimpleBaseline papers are these MACs in units of 2**30, not 1e9:
HRNet-W32 at 256x192 has 7.645e9 MACs = 7.12 * 2**30, published as 7.1 GFLOPs. ``paper_gflops``
converts. Works on the meta device too: shapes are all it needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

PAPER_GFLOP = 2 ** 30  # the unit of the published GFLOPs (see the module docstring)
COLUMNS = ('Name', 'Input Size', 'Output Size', 'Parameters', 'Multiply Adds')


@dataclass
class LayerRecord:
    """One call of a leaf module during the profiled forward pass."""

    name: str
    kind: str
    input_size: list[int]
    output_size: list[int]
    parameters: int
    macs: int | None  # None: not a layer type whose MACs we count


def _first_tensor(value) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def layer_macs(module: nn.Module, output: torch.Tensor, count_batchnorm: bool) -> int | None:
    """MACs of one call of ``module`` per sample, by the convention of the module docstring."""
    batch = output.shape[0] if output.dim() > 1 else 1
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                           nn.ConvTranspose2d, nn.ConvTranspose3d)):
        return module.weight.numel() * math.prod(output.shape[2:])
    if isinstance(module, nn.Linear):
        rows_per_sample = output.numel() // (batch * module.out_features)
        return module.in_features * module.out_features * rows_per_sample
    if count_batchnorm and isinstance(module, nn.modules.batchnorm._BatchNorm):
        return output.numel() // batch
    return None


def profile_layers(model: nn.Module, *input_tensors: torch.Tensor,
                   count_batchnorm: bool = False) -> list[LayerRecord]:
    """Run one forward pass (eval mode, no grad) and record every leaf module call."""
    records: list[LayerRecord] = []
    calls_per_kind: dict[str, int] = {}

    def record(module: nn.Module, inputs, output) -> None:
        kind = type(module).__name__
        calls_per_kind[kind] = calls_per_kind.get(kind, 0) + 1
        first_in, first_out = _first_tensor(inputs), _first_tensor(output)
        if first_out is None:
            return
        records.append(LayerRecord(
            name=f'{kind}_{calls_per_kind[kind]}',
            kind=kind,
            input_size=list(first_in.shape) if first_in is not None else [],
            output_size=list(first_out.shape),
            parameters=sum(p.numel() for p in module.parameters(recurse=False)),
            macs=layer_macs(module, first_out, count_batchnorm),
        ))

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [leaf.register_forward_hook(record) for leaf in leaves]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*input_tensors)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return records


def paper_gflops(macs: int) -> float:
    """MACs expressed as the papers' GFLOPs (units of 2**30 MACs)."""
    return macs / PAPER_GFLOP


def count_parameters(model: nn.Module) -> int:
    """Learnable parameters, each shared tensor once."""
    return sum(p.numel() for p in model.parameters())


def get_model_summary(model: nn.Module, *input_tensors: torch.Tensor, item_length: int = 26,
                      verbose: bool = False, count_batchnorm: bool = False) -> str:
    """Text summary: total parameters and MACs, plus a per-layer table when ``verbose``."""
    records = profile_layers(model, *input_tensors, count_batchnorm=count_batchnorm)
    total_macs = sum(r.macs for r in records if r.macs is not None)
    rule = '-' * item_length * len(COLUMNS)
    lines = []
    if verbose:
        lines += ['Model Summary', ''.join(c.ljust(item_length) for c in COLUMNS).rstrip(), rule]
        for r in records:
            cells = (r.name, r.input_size, r.output_size, r.parameters,
                     'Not Available' if r.macs is None else r.macs)
            lines.append(''.join(str(c).ljust(item_length) for c in cells).rstrip())
        lines.append(rule)
    counted = 'Convolution, Linear and BatchNorm' if count_batchnorm else 'Convolution and Linear'
    lines += [
        f'Total Parameters: {count_parameters(model):,}',
        rule,
        f'Total Multiply Adds (For {counted} Layers only): {total_macs:,} '
        f'(= {paper_gflops(total_macs):.2f} GFLOPs as the papers count them)',
        rule,
    ]
    layer_counts: dict[str, int] = {}
    for r in records:
        layer_counts[r.kind] = layer_counts.get(r.kind, 0) + 1
    lines.append('Number of Layers')
    lines.append('   '.join(f'{kind} : {n} layers' for kind, n in layer_counts.items()))
    return '\n'.join(lines)


def count_params_and_macs(model: nn.Module, input_size: Sequence[int],
                          count_batchnorm: bool = False) -> tuple[int, int]:
    """(parameters, MACs per sample) for an input of shape ``input_size`` = (N, C, H, W).

    The input is created on the model's device, so a model built on the meta device is
    profiled without allocating or computing anything.
    """
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device('cpu')
    dtype = parameter.dtype if parameter is not None else torch.float32
    dummy = torch.zeros(tuple(input_size), device=device, dtype=dtype)
    records = profile_layers(model, dummy, count_batchnorm=count_batchnorm)
    return count_parameters(model), sum(r.macs for r in records if r.macs is not None)
