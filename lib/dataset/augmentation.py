"""Training augmentation shared by every data set, beyond the original's scale / rotation /
flip / half-body draws: a random crop shift (geometric) and brightness / contrast, blur and
sensor noise on the crop (photometric). Keys: DATASET.SHIFT_FACTOR, PROB_BRIGHTNESS_CONTRAST,
BRIGHTNESS_FACTOR, CONTRAST_FACTOR, PROB_BLUR, BLUR_SIGMA, PROB_NOISE, NOISE_SIGMA.

Draws come from ``np.random`` (as the original's), after the original's draws of an item. A
step that is off draws nothing: with the defaults (probabilities 0, SHIFT_FACTOR 0) an item is
the original's, random state included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from lib.utils.transforms import PIXEL_STD


@dataclass(frozen=True)
class CropAugmentation:
    """The configured shift and photometric steps (all off by default)."""

    shift_factor: float = 0.0
    prob_brightness_contrast: float = 0.0
    brightness_factor: float = 0.2
    contrast_factor: float = 0.2
    prob_blur: float = 0.0
    blur_sigma: float = 1.5
    prob_noise: float = 0.0
    noise_sigma: float = 8.0

    @classmethod
    def from_config(cls, cfg: Any) -> CropAugmentation:
        """The steps set in cfg.DATASET."""
        data = cfg.DATASET
        return cls(
            shift_factor=float(data.SHIFT_FACTOR),
            prob_brightness_contrast=float(data.PROB_BRIGHTNESS_CONTRAST),
            brightness_factor=float(data.BRIGHTNESS_FACTOR),
            contrast_factor=float(data.CONTRAST_FACTOR),
            prob_blur=float(data.PROB_BLUR),
            blur_sigma=float(data.BLUR_SIGMA),
            prob_noise=float(data.PROB_NOISE),
            noise_sigma=float(data.NOISE_SIGMA),
        )

    @property
    def photometric(self) -> bool:
        """Whether any photometric step can happen (and so draws random numbers)."""
        return self.prob_brightness_contrast > 0 or self.prob_blur > 0 or self.prob_noise > 0

    def shift_crop(self, center: np.ndarray, scale: np.ndarray, pixel_std: float = PIXEL_STD
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Crop translation (two uniform draws): up to SHIFT_FACTOR of the crop size along
        each axis; the center comes back float32, the scale unchanged."""
        if self.shift_factor <= 0:
            return center, scale
        shift = np.random.uniform(-1.0, 1.0, 2) * self.shift_factor * np.asarray(scale)
        return (np.asarray(center) + shift * pixel_std).astype(np.float32), scale

    def adjust_pixels(self, crop: np.ndarray) -> np.ndarray:
        """Brightness / contrast, blur, then sensor noise on a uint8 crop (any channels), each
        with its own probability; one gate draw per step once any step is on. Returns uint8 of
        the same shape (``crop`` itself when every step is off)."""
        if not self.photometric:
            return crop
        out = crop.astype(np.float32)
        if np.random.rand() < self.prob_brightness_contrast:
            gain = 1.0 + np.random.uniform(-self.contrast_factor, self.contrast_factor)
            offset = 255.0 * np.random.uniform(-self.brightness_factor, self.brightness_factor)
            out = out * np.float32(gain) + np.float32(offset)
        if np.random.rand() < self.prob_blur:
            sigma = np.random.uniform(0.1, max(self.blur_sigma, 0.1))
            out = cv2.GaussianBlur(out, (0, 0), sigma)
        if np.random.rand() < self.prob_noise:
            sigma = np.random.uniform(0.0, self.noise_sigma)
            out = out + np.random.standard_normal(out.shape).astype(np.float32) * np.float32(sigma)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)
