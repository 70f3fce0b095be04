"""One way to run a keypoint model: config + weights file -> model -> (image, box) items ->
landmarks N x J x 3 (x, y in image pixels, confidence).

Validation (``function.validate``), ``tools/test.py``, ``tools/infer.py``, the spacecraft
two-stage crops and ``make demo`` all go through :class:`Predictor`, so test-time options
(flip test, AMP, channels_last, fused BN) and decoding are written once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

import lib.models
from lib.core.inference import get_final_preds
from lib.dataset import register
from lib.dataset.image_boxes import ImageBoxesDataset
from lib.models.fusion import fuse_conv_bn
from lib.utils.checkpoint import load_weights_file
from lib.utils.export import onnxruntime_model
from lib.utils.image_io import ImageCache, configure_opencv_for_workers
from lib.utils.runtime import autocast, resolve_amp, select_device
from lib.utils.transforms import flip_back, input_transform

logger = logging.getLogger(__name__)

# (image path, box x, y, w, h in image pixels, score): what a Predictor crops and runs on
Item = tuple[str, Sequence[float], float]


@dataclass
class BatchPrediction:
    """The model's output for one loader batch: fp32 heatmaps on the model's device and the
    decoded landmarks N x J x 3 (float64, image pixels + confidence)."""

    heatmaps: torch.Tensor
    landmarks: np.ndarray


def _flip_test(model: nn.Module, input: torch.Tensor, flip_pairs: Sequence,
               shift_heatmap: bool) -> torch.Tensor:
    """Average the heatmaps of the image and of its mirror image, in one batched forward."""
    outputs = model(torch.cat([input, input.flip(3)]))
    if isinstance(outputs, (list, tuple)):
        outputs = outputs[-1]
    output, output_flipped = outputs.float().chunk(2)
    output_flipped = flip_back(output_flipped, flip_pairs)
    if shift_heatmap:  # the mirrored argmax lands one pixel left of the original one
        output_flipped[:, :, :, 1:] = output_flipped.clone()[:, :, :, :-1]
    return (output + output_flipped) * 0.5


def _shift_by_fraction(heatmaps: torch.Tensor, fraction: float, dim: int) -> torch.Tensor:
    """Heatmaps resampled ``fraction`` (0 <= fraction < 1) of a pixel towards higher indices
    along ``dim``, by linear interpolation; the first row or column takes zeros from outside."""
    if fraction == 0:
        return heatmaps
    previous = torch.zeros_like(heatmaps)
    length = heatmaps.shape[dim]
    previous.narrow(dim, 1, length - 1).copy_(heatmaps.narrow(dim, 0, length - 1))
    return (1 - fraction) * heatmaps + fraction * previous


def turn_heatmaps_back(heatmaps: torch.Tensor, turns: int,
                       input_size: Sequence[int]) -> torch.Tensor:
    """Heatmaps N x J x H x W of an input turned by ``turns`` quarter turns
    (``torch.rot90(input, turns, (2, 3))``), turned back into the frame of the unturned input.

    Heatmap pixel i stands for input pixel i * stride, so an axis the turn reverses maps i to
    (size_in - 1) / stride - i, not to (size_hm - 1) - i as a plain turn of the heatmap would:
    the turned-back heatmap is resampled by that fraction of a pixel (0.75 for 128 -> 32).
    ``input_size`` is (width, height) of the unturned input.
    """
    turns %= 4
    width_in, height_in = input_size
    turned = torch.rot90(heatmaps, -turns, (2, 3))
    height, width = turned.shape[2:]
    fraction_x = (width_in - 1) * width / width_in - (width - 1)
    fraction_y = (height_in - 1) * height / height_in - (height - 1)
    if turns in (1, 2):  # the turn reversed the columns
        turned = _shift_by_fraction(turned, fraction_x, 3)
    if turns in (2, 3):  # ... the rows
        turned = _shift_by_fraction(turned, fraction_y, 2)
    return turned


def _single_view(config: Any, model: nn.Module, input: torch.Tensor,
                 flip_pairs: Sequence | None) -> torch.Tensor:
    if config.TEST.FLIP_TEST and flip_pairs is not None:
        return _flip_test(model, input, flip_pairs, config.TEST.SHIFT_HEATMAP)
    outputs = model(input)
    return outputs[-1] if isinstance(outputs, (list, tuple)) else outputs


def predict_heatmaps(config: Any, model: nn.Module, input: torch.Tensor,
                     flip_pairs: Sequence | None) -> torch.Tensor:
    """The model's fp32 heatmaps for a batch already on its device: TEST.AMP autocast, with
    TEST.FLIP_TEST the average with the mirrored image's heatmaps, and with
    TEST.ROTATION_VIEWS 2 or 4 the average over the input turned by a half or every quarter
    turn (each view's heatmaps turned back first)."""
    amp = resolve_amp(input.device, config.TEST.AMP, config.CPU_BF16)
    views = int(config.TEST.ROTATION_VIEWS)
    width, height = input.shape[3], input.shape[2]
    with autocast(input.device, amp):
        output = _single_view(config, model, input, flip_pairs).float()
        for turns in ((2,) if views == 2 else (1, 2, 3) if views == 4 else ()):
            turned = torch.rot90(input, turns, (2, 3))
            if config.MODEL.CHANNELS_LAST:
                turned = turned.contiguous(memory_format=torch.channels_last)
            view = _single_view(config, model, turned, flip_pairs).float()
            output = output + turn_heatmaps_back(view, turns, (width, height))
    return output if views == 1 else output / views


def load_network(cfg: Any, weights_file: str) -> nn.Module:
    """cfg's network (eval-mode build) with the weights of ``weights_file`` (checkpoint or
    state_dict, loaded strictly and weights_only), on the CPU, unfused."""
    if not weights_file:
        raise FileNotFoundError("no weights file given (TEST.MODEL_FILE or the run's "
                                "model_best.pth)")
    model = lib.models.build_model(cfg, is_train=False)
    load_weights_file(model, weights_file)
    return model


class Predictor:
    """A model ready for inference with the config's test-time options.

    Build it from a weights file (:meth:`from_weights`) or around a model that is already
    placed (the training loop's, possibly wrapped in DataParallel / DDP).
    """

    def __init__(self, cfg: Any, model: nn.Module,
                 flip_pairs: Sequence | None | str = "dataset") -> None:
        self.cfg = cfg
        self.model = model
        dataset_class = register.get(cfg.DATASET.DATASET)
        self.flip_pairs = (getattr(dataset_class, "flip_pairs", None)
                           if isinstance(flip_pairs, str) else flip_pairs)
        self.read_grayscale = bool(getattr(dataset_class, "read_grayscale", False))

    @classmethod
    def from_weights(cls, cfg: Any, weights_file: str,
                     device: torch.device | None = None) -> Predictor:
        """cfg's network with the weights of ``weights_file`` (checkpoint or state_dict, loaded
        strictly and weights_only), made ready by :meth:`from_network`."""
        return cls.from_network(cfg, load_network(cfg, weights_file), device, weights_file)

    @classmethod
    def from_network(cls, cfg: Any, model: nn.Module, device: torch.device | None = None,
                     name: str = "the model") -> Predictor:
        """A network with its weights in place, made ready for inference: BN fused into the
        convolutions with TEST.FUSE_CONV_BN, TEST.RUNTIME, on ``device`` (GPUS when None),
        channels_last with MODEL.CHANNELS_LAST, in eval mode."""
        if cfg.TEST.FUSE_CONV_BN:
            model = fuse_conv_bn(model)
        if cfg.TEST.RUNTIME == "onnxruntime":
            width, height = cfg.MODEL.IMAGE_SIZE
            model, difference = onnxruntime_model(model.cpu().eval(), (height, width))
            logger.info("=> %s runs in onnxruntime (largest heatmap difference to PyTorch on a "
                        "check batch: %.2g of the peak)", name, difference)
            return cls(cfg, model)
        model = model.to(device if device is not None else select_device(cfg.GPUS)).eval()
        if cfg.MODEL.CHANNELS_LAST:
            model = model.to(memory_format=torch.channels_last)
        return cls(cfg, model)

    @property
    def device(self) -> torch.device:
        """The model's device (the CPU for onnxruntime, which holds no torch parameters)."""
        parameter = next(self.model.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    def heatmaps(self, input: torch.Tensor) -> torch.Tensor:
        """fp32 heatmaps of a batch of model inputs (moved to the model's device here)."""
        device = self.device
        input = input.to(device, non_blocking=device.type == "cuda")
        if self.cfg.MODEL.CHANNELS_LAST:
            input = input.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return predict_heatmaps(self.cfg, self.model, input, self.flip_pairs)

    def decode(self, heatmaps: torch.Tensor, meta: dict[str, Any]) -> np.ndarray:
        """Landmarks N x J x 3 in image pixels for heatmaps of crops described by ``meta``."""
        coords, maxvals = get_final_preds(self.cfg, heatmaps, meta["center"].numpy(),
                                          meta["scale"].numpy())
        return np.concatenate([coords, maxvals], axis=2).astype(np.float64)

    def batches(self, loader: Iterable) -> Iterator[tuple[Any, BatchPrediction]]:
        """(the loader's batch, its prediction) for every batch of a JointsDataset loader."""
        self.model.eval()
        for batch in loader:
            heatmaps = self.heatmaps(batch[0])
            yield batch, BatchPrediction(heatmaps, self.decode(heatmaps, batch[-1]))

    def predict(self, loader: Iterable) -> np.ndarray:
        """Landmarks N x J x 3 of every item of ``loader``, in loader order."""
        parts = [prediction.landmarks for _, prediction in self.batches(loader)]
        return np.concatenate(parts) if parts else np.zeros((0, self.cfg.MODEL.NUM_JOINTS, 3))

    def predict_items(self, items: Sequence[Item], whole_image: bool = False,
                      image_cache: ImageCache | None = None,
                      gammas: Sequence[float] | None = None) -> np.ndarray:
        """Landmarks N x J x 3 for (image path, box, score) items, cropped exactly as the
        config's data set crops its test split (``whole_image``: the box is the whole image,
        unpadded, as the spacecraft's coarse model sees it; ``image_cache``: decoded images
        shared with other calls; ``gammas``: each crop's tone curve, ImageBoxesDataset)."""
        return self.predict(self.loader(self.items_dataset(items, whole_image, image_cache,
                                                           gammas)))

    def items_dataset(self, items: Sequence[Item], whole_image: bool = False,
                      image_cache: ImageCache | None = None,
                      gammas: Sequence[float] | None = None) -> ImageBoxesDataset:
        """The crops of (image path, box, score) items as the config's test split crops them
        (``whole_image``: the box is the whole image, unpadded; ``gammas``: tone curves)."""
        return ImageBoxesDataset(self.cfg, items, self.flip_pairs, input_transform(),
                                 read_grayscale=self.read_grayscale, whole_image=whole_image,
                                 image_cache=image_cache, gammas=gammas)

    def loader(self, dataset: Any) -> DataLoader:
        """A test-time loader of ``dataset``: TEST.BATCH_SIZE_PER_GPU, WORKERS, in order."""
        configure_opencv_for_workers(self.cfg.WORKERS)
        return DataLoader(dataset, batch_size=self.cfg.TEST.BATCH_SIZE_PER_GPU, shuffle=False,
                          num_workers=self.cfg.WORKERS,
                          pin_memory=self.cfg.PIN_MEMORY and self.device.type == "cuda")


def keypoint_records(items: Sequence[Item], keypoints: np.ndarray) -> list[dict[str, Any]]:
    """JSON-ready predictions: one record per item."""
    return [{"image": path, "bbox": [round(float(v), 2) for v in box], "score": float(score),
             "keypoints": np.round(kpts, 3).tolist()}
            for (path, box, score), kpts in zip(items, keypoints, strict=True)]
