"""Test-time adaptation of a keypoint model to an unlabelled image domain (TEST.ADAPT_*).

Only the normalisation layers move: their affine parameters follow the gradient of the
predicted heatmaps' entropy (AdamW, no weight decay) and BatchNorm re-estimates its running
statistics on the target images, the recipe of SPNv2's online domain refinement. Every other
tensor of the model stays bit-equal, so an adapted checkpoint differs from its source in the
normalisation entries only.

A heatmap is read as a distribution over its pixels, the softmax of the heatmap divided by a
temperature (TEST.ADAPT_TEMPERATURE): the model was trained to draw one Gaussian of height 1 per
landmark on a zero background, so at 0.1 a clean peak holds most of the mass, and a domain the
model does not know shows up as low, spread or doubled blobs, i.e. high entropy. (Normalising
the heatmap clipped at zero instead lets the model win by pushing everything but one pixel
below zero; on a shifted-contrast fixture that moved the peaks, where the softmax form and the
re-estimated statistics alone brought them back.)
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from lib.utils.io import image_set_tag

logger = logging.getLogger(__name__)

NORMALIZATION_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def normalization_layers(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm / InstanceNorm / GroupNorm / LayerNorm modules of ``model``."""
    return [module for module in model.modules() if isinstance(module, NORMALIZATION_LAYERS)]


def normalization_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The affine weights and biases of the normalisation layers (what adaptation updates)."""
    return [parameter for layer in normalization_layers(model)
            for parameter in layer.parameters(recurse=False)]


def heatmap_entropy(heatmaps: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean entropy of the per-landmark pixel distributions softmax(heatmap / temperature) of
    N x J x H x W heatmaps, divided by log(H * W): 0 for one pixel, 1 for a flat map."""
    logits = heatmaps.float().flatten(2) / temperature
    log_probability = torch.log_softmax(logits, dim=-1)
    entropy = -(log_probability.exp() * log_probability).sum(dim=-1)
    return entropy.mean() / math.log(logits.shape[-1])


@dataclass(frozen=True)
class AdaptationReport:
    """What one adaptation did: mean heatmap entropy on the target images before and after."""

    steps: int
    images: int
    entropy_before: float
    entropy_after: float


def _outputs(model: nn.Module, input: torch.Tensor) -> torch.Tensor:
    output = model(input)
    return output[-1] if isinstance(output, (list, tuple)) else output


def mean_entropy(model: nn.Module, batches: Iterable[torch.Tensor], temperature: float
                 ) -> tuple[float, int]:
    """Mean heatmap entropy of the model in eval mode over ``batches`` and the image count."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for input in batches:
            entropy = heatmap_entropy(_outputs(model, input), temperature)
            total += float(entropy) * len(input)
            count += len(input)
    model.train(was_training)
    return (total / count if count else float("nan")), count


@dataclass
class ModelInputs:
    """The model inputs of a JointsDataset-style loader's batches, on a device, channels_last
    if asked: what :func:`adapt_normalization` iterates (again and again)."""

    loader: Iterable
    device: torch.device
    channels_last: bool = False

    def __iter__(self) -> Iterator[torch.Tensor]:
        for batch in self.loader:
            input = batch[0].to(self.device, non_blocking=self.device.type == "cuda")
            yield (input.contiguous(memory_format=torch.channels_last)
                   if self.channels_last else input)


def _cycle(batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    """The batches again and again (a fresh pass each time, so a shuffling loader reshuffles);
    batches of one image are skipped, BatchNorm cannot take statistics of them."""
    while True:
        seen = False
        for input in batches:
            if len(input) > 1:
                seen = True
                yield input
        if not seen:
            raise ValueError("test-time adaptation needs batches of at least two images")


def adapt_normalization(model: nn.Module, batches: Iterable[torch.Tensor], steps: int,
                        lr: float, temperature: float = 0.1) -> AdaptationReport:
    """Adapt ``model`` in place to the images of ``batches`` (model inputs already on its
    device) for ``steps`` AdamW updates of the normalisation parameters at ``lr``, minimising
    the entropy of softmax(heatmap / ``temperature``); leaves it in eval mode. Raises
    ValueError when the model has no normalisation layer."""
    layers = normalization_layers(model)
    parameters = normalization_parameters(model)
    if not layers:
        raise ValueError("test-time adaptation: the model has no normalisation layer")
    before, images = mean_entropy(model, batches, temperature)
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for parameter, _ in frozen:
        parameter.requires_grad_(False)
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    model.eval()
    for layer in layers:  # batch statistics in the forward pass, running statistics updated
        layer.train()
    try:
        for input in itertools.islice(_cycle(batches), steps):
            loss = heatmap_entropy(_outputs(model, input), temperature)
            if not torch.isfinite(loss):
                raise FloatingPointError("test-time adaptation: the heatmap entropy is not "
                                         "finite")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        for parameter, requires_grad in frozen:
            parameter.requires_grad_(requires_grad)
        model.eval()
    after, _ = mean_entropy(model, batches, temperature)
    report = AdaptationReport(steps, images, before, after)
    logger.info("=> test-time adaptation: %d steps on %d images, heatmap entropy %.4f -> %.4f",
                steps, images, before, after)
    return report


def adapted_weights_path(output_dir: str, image_set: str, model: str = "") -> str:
    """Where a test saves a model adapted to ``image_set``: ``model_adapted_<set>.pth``, or
    ``model_adapted_<model>_<set>.pth`` for another model of the test (the coarse one)."""
    tag = "_".join(filter(None, [model, image_set_tag(image_set)]))
    return os.path.join(output_dir, f"model_adapted_{tag}.pth")


def adapt_on_loader(cfg, network: nn.Module, loader: Iterable, device: torch.device
                    ) -> AdaptationReport:
    """cfg's TEST.ADAPT_STEPS / _LR / _TEMPERATURE of :func:`adapt_normalization` of
    ``network`` (moved to ``device``, channels_last with MODEL.CHANNELS_LAST) on the inputs of
    a test-time loader's batches."""
    network.to(device)
    if cfg.MODEL.CHANNELS_LAST:
        network.to(memory_format=torch.channels_last)
    inputs = ModelInputs(loader, device, cfg.MODEL.CHANNELS_LAST)
    return adapt_normalization(network, inputs, cfg.TEST.ADAPT_STEPS, cfg.TEST.ADAPT_LR,
                               cfg.TEST.ADAPT_TEMPERATURE)
