"""Training augmentation shared by every data set, beyond the original's scale / rotation /
flip / half-body draws: a random crop shift (geometric) and photometric steps on the crop.

The photometric steps are brightness / contrast, Gaussian blur and Gaussian sensor noise
(DATASET.PROB_BRIGHTNESS_CONTRAST, BRIGHTNESS_FACTOR, CONTRAST_FACTOR, PROB_BLUR, BLUR_SIGMA,
PROB_NOISE, NOISE_SIGMA), plus the domain-gap steps of spacecraft pose estimation trained on
synthetic images only (SLAB's SPNv2): style / texture randomisation of the whole crop
(PROB_STYLE), coarse dropout inside the object's box (PROB_COARSE_DROPOUT), a sun flare on the
object (PROB_SUN_FLARE), motion and median blur (PROB_MOTION_BLUR, PROB_MEDIAN_BLUR) and
ISO-like shot noise with speckle (PROB_ISO_NOISE). They never move a joint: only pixels
change.

"The object's box" is the box of the joints visible in the crop (crop pixels, clipped to the
crop), or the whole crop when none is visible: for a spacecraft the landmarks span its body,
for a person it is the person.

Draws come from ``np.random`` (as the original's), after the original's draws of an item. A
step that is off draws nothing: with the defaults (probabilities 0, SHIFT_FACTOR 0) an item is
the original's, random state included. The first three photometric steps draw first, exactly
as they always did (so a configuration using only them keeps its items), then the domain-gap
steps, each only when its probability is above 0. The pixels go through the steps in the order
a camera would produce them: style, brightness / contrast, dropout, flare, blurs, noises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from lib.utils.transforms import PIXEL_STD

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 crop pixels, end exclusive, never empty


def object_box(shape: tuple[int, ...], joints: np.ndarray | None,
               joints_vis: np.ndarray | None) -> Box:
    """Integer box (x0, y0, x1, y1), ends exclusive, of the joints with ``joints_vis > 0``
    (J x 2+ crop pixel positions, J x 1+ visibilities), clipped to a crop of ``shape``; the
    whole crop without joints or without a visible one. Never empty, so every step that works
    inside it has at least one pixel."""
    height, width = shape[:2]
    if joints is None or joints_vis is None:
        return 0, 0, width, height
    visible = np.asarray(joints_vis).reshape(len(joints), -1)[:, 0] > 0
    if not visible.any():
        return 0, 0, width, height
    xy = np.asarray(joints, dtype=np.float64)[visible, :2]
    (left, top), (right, bottom) = xy.min(axis=0).tolist(), xy.max(axis=0).tolist()
    x0 = math.floor(min(max(left, 0.0), width - 1))
    y0 = math.floor(min(max(top, 0.0), height - 1))
    x1 = math.ceil(min(max(right, 0.0), width - 1)) + 1
    y1 = math.ceil(min(max(bottom, 0.0), height - 1)) + 1
    return x0, y0, x1, y1


@lru_cache(maxsize=1)
def _byte_to_normal() -> np.ndarray:
    """1 x 256 float32 table: byte u -> the standard normal quantile at (u + 0.5) / 256, scaled
    to unit variance. A uniform byte looked up in it is a Gaussian draw with 256 levels, at a
    fifth of the cost of ``np.random.standard_normal`` (the noise steps' whole cost)."""
    x = np.linspace(-6.0, 6.0, 24001)
    cdf = 0.5 * (1.0 + np.frompyfunc(math.erf, 1, 1)(x / math.sqrt(2.0)).astype(np.float64))
    table = np.interp((np.arange(256) + 0.5) / 256.0, cdf, x)
    return (table / table.std()).astype(np.float32)[None, :]


_FADE = (1.0 - np.arange(256, dtype=np.float32) / 255.0)[None, :]  # byte -> 1 - its light


def _gaussian_field(shape: tuple[int, ...]) -> np.ndarray:
    """Unit Gaussian noise of ``shape`` (float32) from one uint8 draw per value."""
    return cv2.LUT(np.random.randint(0, 256, shape, dtype=np.uint8), _byte_to_normal())


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
    prob_style: float = 0.0
    style_shading: float = 0.3
    prob_hard_light: float = 0.0
    hard_light_shadow: float = 0.3
    hard_light_gain: float = 1.5
    prob_coarse_dropout: float = 0.0
    coarse_dropout_holes: int = 5
    coarse_dropout_size: tuple[float, float] = (0.2, 0.5)
    prob_sun_flare: float = 0.0
    sun_flare_radius: tuple[float, float] = (0.1, 0.3)
    sun_flare_jitter: float = 0.2
    prob_motion_blur: float = 0.0
    motion_blur_length: int = 7
    prob_median_blur: float = 0.0
    median_blur_size: int = 5
    prob_iso_noise: float = 0.0
    iso_noise_gain: float = 1.0
    iso_noise_speckle: float = 0.05

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
            prob_style=float(data.PROB_STYLE),
            style_shading=float(data.STYLE_SHADING),
            prob_hard_light=float(data.PROB_HARD_LIGHT),
            hard_light_shadow=float(data.HARD_LIGHT_SHADOW),
            hard_light_gain=float(data.HARD_LIGHT_GAIN),
            prob_coarse_dropout=float(data.PROB_COARSE_DROPOUT),
            coarse_dropout_holes=int(data.COARSE_DROPOUT_HOLES),
            coarse_dropout_size=(float(data.COARSE_DROPOUT_SIZE[0]),
                                 float(data.COARSE_DROPOUT_SIZE[1])),
            prob_sun_flare=float(data.PROB_SUN_FLARE),
            sun_flare_radius=(float(data.SUN_FLARE_RADIUS[0]), float(data.SUN_FLARE_RADIUS[1])),
            sun_flare_jitter=float(data.SUN_FLARE_JITTER),
            prob_motion_blur=float(data.PROB_MOTION_BLUR),
            motion_blur_length=int(data.MOTION_BLUR_LENGTH),
            prob_median_blur=float(data.PROB_MEDIAN_BLUR),
            median_blur_size=int(data.MEDIAN_BLUR_SIZE),
            prob_iso_noise=float(data.PROB_ISO_NOISE),
            iso_noise_gain=float(data.ISO_NOISE_GAIN),
            iso_noise_speckle=float(data.ISO_NOISE_SPECKLE),
        )

    @property
    def _basic(self) -> bool:
        """Whether the first three steps are on (and so draw their gates, as they always did)."""
        return self.prob_brightness_contrast > 0 or self.prob_blur > 0 or self.prob_noise > 0

    @property
    def _domain_gap(self) -> bool:
        return (self.prob_style > 0 or self.prob_hard_light > 0 or self.prob_coarse_dropout > 0
                or self.prob_sun_flare > 0 or self.prob_motion_blur > 0
                or self.prob_median_blur > 0 or self.prob_iso_noise > 0)

    @property
    def photometric(self) -> bool:
        """Whether any photometric step can happen (and so draws random numbers)."""
        return self._basic or self._domain_gap

    def shift_crop(self, center: np.ndarray, scale: np.ndarray, pixel_std: float = PIXEL_STD
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Crop translation (two uniform draws): up to SHIFT_FACTOR of the crop size along
        each axis; the center comes back float32, the scale unchanged."""
        if self.shift_factor <= 0:
            return center, scale
        shift = np.random.uniform(-1.0, 1.0, 2) * self.shift_factor * np.asarray(scale)
        return (np.asarray(center) + shift * pixel_std).astype(np.float32), scale

    def adjust_pixels(self, crop: np.ndarray, joints: np.ndarray | None = None,
                      joints_vis: np.ndarray | None = None) -> np.ndarray:
        """The photometric steps on a uint8 crop (H x W or H x W x C), each with its own
        probability; ``joints`` / ``joints_vis`` (crop pixels, as the targets are made from)
        place the object's box, the whole crop without them. Returns uint8 of the same shape
        (``crop`` itself when every step is off); joints are only read."""
        if not self.photometric:
            return crop
        # The first three steps' draws, in their historical order and count.
        gain_offset = blur_sigma = noise = None
        if self._basic:
            if np.random.rand() < self.prob_brightness_contrast:
                gain = 1.0 + np.random.uniform(-self.contrast_factor, self.contrast_factor)
                offset = 255.0 * np.random.uniform(-self.brightness_factor,
                                                   self.brightness_factor)
                gain_offset = np.float32(gain), np.float32(offset)
            if np.random.rand() < self.prob_blur:
                blur_sigma = np.random.uniform(0.1, max(self.blur_sigma, 0.1))
            if np.random.rand() < self.prob_noise:
                sigma = np.random.uniform(0.0, self.noise_sigma)
                noise = (np.random.standard_normal(crop.shape).astype(np.float32)
                         * np.float32(sigma))
        box = (object_box(crop.shape, joints, joints_vis) if self._domain_gap
               else (0, 0, crop.shape[1], crop.shape[0]))

        out = crop.astype(np.float32)
        if _gate(self.prob_style):
            out = self._style(crop)
        if _gate(self.prob_hard_light):
            out = self._hard_light(out, box)
        if gain_offset is not None:
            out = out * gain_offset[0] + gain_offset[1]
        if _gate(self.prob_coarse_dropout):
            out = self._coarse_dropout(out, box)
        if _gate(self.prob_sun_flare):
            out = self._sun_flare(out, box)
        if blur_sigma is not None:
            out = cv2.GaussianBlur(out, (0, 0), blur_sigma)
        if _gate(self.prob_motion_blur):
            out = self._motion_blur(out)
        if _gate(self.prob_median_blur):
            size = 3 + 2 * np.random.randint((self.median_blur_size - 1) // 2)
            out = cv2.medianBlur(out, size)
        if noise is not None:
            out = out + noise
        if _gate(self.prob_iso_noise):
            out = self._iso_noise(out)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)

    # ---- the domain-gap steps: each draws its own numbers, then changes pixels ------------
    def _style(self, crop: np.ndarray) -> np.ndarray:
        """A cheap stand-in for neural style transfer: a random tone curve and random
        low-frequency shading with a finer texture multiplied in, over the whole crop (as the
        stylised images restyle everything). Confined to the object's box, a curve that lifts
        black drew a grey rectangle whose edges sit on the outermost landmarks: a cue the real
        images lack."""
        curve = _tone_curve()
        height, width = crop.shape[:2]
        shading = self._shading(width, height)
        if crop.ndim == 3:
            shading = shading[..., None]
        return cv2.LUT(crop, curve).reshape(crop.shape) * shading

    def _shading(self, width: int, height: int) -> np.ndarray:
        """height x width float32 multiplicative field around 1: a 2-5 cell smooth shading
        (amplitude up to STYLE_SHADING) times an 8-16 cell texture of half that amplitude."""
        amplitude = np.random.uniform(0.0, self.style_shading)
        coarse = 1.0 + amplitude * np.random.uniform(-1.0, 1.0, (np.random.randint(2, 6),) * 2)
        fine = 1.0 + 0.5 * amplitude * np.random.uniform(-1.0, 1.0,
                                                         (np.random.randint(8, 17),) * 2)
        field = cv2.resize(coarse.astype(np.float32), (width, height),
                           interpolation=cv2.INTER_CUBIC)
        field *= cv2.resize(fine.astype(np.float32), (width, height),
                            interpolation=cv2.INTER_LINEAR)
        return np.maximum(field, 0.0)

    def _hard_light(self, out: np.ndarray, box: Box) -> np.ndarray:
        """One hard light from a random side, as the sunlamp's arc lamp: beyond a sharp
        terminator through the object's box the body keeps a fraction of its brightness drawn
        up to HARD_LIGHT_SHADOW, the lit side gains up to HARD_LIGHT_GAIN (and saturates once
        clipped). A straight terminator is the cheap stand-in for the faces turned away."""
        x0, y0, x1, y1 = box
        angle = np.random.uniform(0.0, 2.0 * np.pi)
        through = np.random.uniform((x0, y0), (x1, y1))
        shadow = np.random.uniform(0.0, self.hard_light_shadow)
        gain = np.random.uniform(1.0, self.hard_light_gain)
        softness = np.random.uniform(0.5, 3.0)  # pixels: a lamp, not an extended source
        height, width = out.shape[:2]
        xs = np.arange(width, dtype=np.float32) - np.float32(through[0])
        ys = np.arange(height, dtype=np.float32) - np.float32(through[1])
        distance = ys[:, None] * np.float32(np.sin(angle)) + xs[None, :] * np.float32(np.cos(angle))
        lit = 0.5 * (1.0 + np.tanh(distance / np.float32(softness)))
        field = np.float32(shadow) + np.float32(gain - shadow) * lit
        return out * (field[..., None] if out.ndim == 3 else field)

    def _coarse_dropout(self, out: np.ndarray, box: Box) -> np.ndarray:
        """1..COARSE_DROPOUT_HOLES rectangles inside the box, each side a fraction in
        COARSE_DROPOUT_SIZE of the box's side, each filled with one random grey."""
        x0, y0, x1, y1 = box
        size = np.array([x1 - x0, y1 - y0], dtype=np.float64)
        count = np.random.randint(1, self.coarse_dropout_holes + 1)
        sides = np.random.uniform(*self.coarse_dropout_size, (count, 2)) * size
        sides = np.clip(np.rint(sides), 1, size).astype(np.int64)
        corners = np.floor(np.random.rand(count, 2) * (size - sides + 1)).astype(np.int64)
        greys = np.random.randint(0, 256, count)
        for (dx, dy), (w, h), grey in zip(corners, sides, greys, strict=True):
            out[y0 + dy:y0 + dy + h, x0 + dx:x0 + dx + w] = grey
        return out

    def _sun_flare(self, out: np.ndarray, box: Box) -> np.ndarray:
        """Glare of a sun near the box's center (jittered by SUN_FLARE_JITTER of its size): a
        saturated disc, a soft halo of radius SUN_FLARE_RADIUS times the box's longer side,
        thin rays fading outwards and a few faint ghost discs along a random axis,
        screen-blended (only brightens). The light is smooth, so it is made at half
        resolution and upsampled: a quarter of the work."""
        x0, y0, x1, y1 = box
        height, width = out.shape[:2]
        box_w, box_h = x1 - x0, y1 - y0
        jitter = np.random.uniform(-1.0, 1.0, 2) * self.sun_flare_jitter * (box_w, box_h)
        cx = float(np.clip((x0 + x1 - 1) / 2 + jitter[0], 0, width - 1))
        cy = float(np.clip((y0 + y1 - 1) / 2 + jitter[1], 0, height - 1))
        radius = max(1.0, np.random.uniform(*self.sun_flare_radius) * max(box_w, box_h))
        core = radius * np.random.uniform(0.25, 0.45)
        halo_level = np.random.uniform(0.35, 0.75)
        strength = np.random.uniform(0.7, 1.0)
        ray_count = np.random.randint(2, 6)
        ray_angles = np.random.uniform(0.0, np.pi, ray_count)
        ray_lengths = np.random.uniform(1.5, 3.0, ray_count) * radius
        ray_levels = np.random.uniform(0.35, 0.8, ray_count)
        ghost_count = np.random.randint(2, 6)
        ghost_angle = np.random.uniform(0.0, 2 * np.pi)
        ghost_offsets = np.random.uniform(0.3, 1.2, ghost_count) * max(width, height)
        ghost_radii = np.random.uniform(0.03, 0.1, ghost_count) * max(width, height)
        ghost_levels = np.random.uniform(0.06, 0.2, ghost_count)

        # Half-resolution grid: its pixel i is full-resolution 2 i + 0.5 (cv2.resize's map).
        small_w, small_h = (width + 1) // 2, (height + 1) // 2
        sx, sy, sr = (cx - 0.5) / 2, (cy - 0.5) / 2, radius / 2
        dx2 = np.square(np.arange(small_w, dtype=np.float32) - np.float32(sx))
        dy2 = np.square(np.arange(small_h, dtype=np.float32) - np.float32(sy))
        d2 = dy2[:, None] + dx2[None, :]
        # "dark" = 1 - light, multiplied term by term (screen blending of the parts).
        dark = d2 * np.float32(1.0 / sr**2)
        dark += 1.0
        np.reciprocal(dark, out=dark)
        dark *= np.float32(-halo_level)
        dark += 1.0
        # Flat disc of radius `core` with a soft edge out to 1.4 core (full strength: the
        # sun itself saturates; the rest is scaled by `strength` below).
        disc = np.float32((1.4 * core / 2) ** 2) - d2
        disc *= np.float32(1.0 / (0.96 * (core / 2) ** 2))
        np.clip(disc, 0.0, 1.0, out=disc)
        # Each ray: both halves in four segments, each dimmer, so the ray fades outwards;
        # endpoints in 1/16 pixel (cv2.line's shift 4).
        unit = np.stack([np.cos(ray_angles), np.sin(ray_angles)], axis=1) * ray_lengths[:, None]
        steps = np.array([-1.0, 1.0])[:, None, None] * np.linspace(0.0, 0.5, 5)[:, None]
        ends = np.rint(16.0 * (np.array([sx, sy]) + unit[:, None, None, :] * steps[None]))
        ends = ends.astype(np.int64).tolist()  # ray x half x 5 points x (x, y)
        values = (255 * ray_levels[:, None] * (1.0 - np.arange(4) / 4)).astype(int).tolist()
        rays = np.zeros((small_h, small_w), np.uint8)
        for points, levels in zip(ends, values, strict=True):
            for half in points:
                for piece, level in enumerate(levels):
                    cv2.line(rays, half[piece], half[piece + 1], level, 1, cv2.LINE_AA, 4)
        dark *= cv2.LUT(rays, _FADE)
        direction = (math.cos(ghost_angle), math.sin(ghost_angle))
        for offset, ghost_radius, level in zip(ghost_offsets, ghost_radii, ghost_levels,
                                               strict=True):
            _darken_by_disc(dark, sx + offset * direction[0] / 2, sy + offset * direction[1] / 2,
                            ghost_radius / 2, level)
        dark *= np.float32(strength)
        dark += np.float32(1.0 - strength)
        dark *= 1.0 - disc
        light = cv2.resize(dark, (width, height), interpolation=cv2.INTER_LINEAR)
        light *= -1.0
        light += 1.0
        if out.ndim == 3:
            light = light.reshape(height, width, 1)
        return out + (255.0 - out) * light

    def _motion_blur(self, out: np.ndarray) -> np.ndarray:
        """Blur along a line of random direction and length (3..MOTION_BLUR_LENGTH pixels),
        anti-aliased, as a camera or target moving during the exposure."""
        length = np.random.randint(3, self.motion_blur_length + 1)
        angle = np.random.uniform(0.0, np.pi)
        size = length | 1
        kernel = np.zeros((size, size), np.uint8)
        half = 16.0 * (length - 1) / 2.0 * np.array([math.cos(angle), math.sin(angle)])
        middle = 16.0 * (size - 1) / 2.0
        start = np.rint(middle - half).astype(int)
        end = np.rint(middle + half).astype(int)
        cv2.line(kernel, tuple(start.tolist()), tuple(end.tolist()), 255, 1, cv2.LINE_AA, 4)
        weights = kernel.astype(np.float32)
        return cv2.filter2D(out, -1, weights / weights.sum(), borderType=cv2.BORDER_REFLECT_101)

    def _iso_noise(self, out: np.ndarray) -> np.ndarray:
        """High-ISO sensor noise: shot noise whose variance grows with the signal (gain up to
        ISO_NOISE_GAIN grey levels per photo-electron), then a speckle of 2 x 2 pixel cells
        (per channel on colour crops: chroma blotches) with relative std up to
        ISO_NOISE_SPECKLE."""
        gain = np.random.uniform(0.0, self.iso_noise_gain)
        speckle = np.random.uniform(0.0, self.iso_noise_speckle)
        shot = _gaussian_field(out.shape)
        height, width = out.shape[:2]
        cells = _gaussian_field(((height + 1) // 2, (width + 1) // 2, *out.shape[2:]))
        cells = cv2.resize(cells, (width, height), interpolation=cv2.INTER_LINEAR)
        spread = np.maximum(out, 0.0)
        spread *= np.float32(gain)
        np.sqrt(spread, out=spread)
        spread *= shot
        out += spread
        cells *= np.float32(speckle)
        cells += 1.0
        out *= cells.reshape(out.shape)
        return out


def _gate(probability: float) -> bool:
    """One uniform draw against ``probability``; no draw at all when it is 0 (step off)."""
    return probability > 0 and np.random.rand() < probability


def _tone_curve() -> np.ndarray:
    """1 x 256 float32 random intensity map: a gamma in [0.4, 2.5], a piecewise-linear
    monotone curve (rising or falling, slopes within a factor 5), a non-monotone one (a ramp
    with a sine wiggle: tones fold over, but black and mid grey rarely meet, so the object
    stays visible), or a random histogram's cumulative curve (slope bounded, so faint noise
    is not blown up); stretched to a random output range at least 40 % of the scale wide,
    then (unless falling) blended with the identity by a random strength in [0.5, 1]."""
    values = np.arange(256, dtype=np.float64)
    kind = np.random.randint(4)
    falling = False
    if kind == 0:
        curve = (values / 255.0) ** math.exp(np.random.uniform(-0.92, 0.92))
    elif kind == 1:
        # Steps of bounded ratio: no plateau merges the object's tones with the background's.
        levels = np.cumsum(np.random.uniform(0.2, 1.0, np.random.randint(4, 8)))
        falling = np.random.rand() < 0.5
        if falling:
            levels = levels[::-1]
        curve = np.interp(values, np.linspace(0.0, 255.0, len(levels)), levels)
    elif kind == 2:
        amplitude, cycles, phase = np.random.uniform([0.08, 1.0, 0.0], [0.2, 3.0, 2 * np.pi])
        curve = values / 255.0 + amplitude * np.sin(2 * np.pi * cycles * values / 255.0 + phase)
    else:
        density = np.interp(values, np.linspace(0.0, 255.0, 8), np.random.uniform(0.15, 1.0, 8))
        curve = np.cumsum(density)
    low, high = 255.0 * np.random.uniform(0.0, 0.3), 255.0 * np.random.uniform(0.7, 1.0)
    spread = curve.max() - curve.min()
    curve = low + (high - low) * (curve - curve.min()) / (spread if spread > 0 else 1.0)
    strength = np.random.uniform(0.5, 1.0)
    if not falling:  # half a negative plus half the identity would be flat
        curve = values + strength * (curve - values)
    return curve.astype(np.float32)[None, :]


def _darken_by_disc(dark: np.ndarray, cx: float, cy: float, radius: float, level: float
                    ) -> None:
    """Screen a disc of light ``level`` with a soft rim (its outer 30 %) into ``dark`` (one
    minus the light) in place, computing only inside its bounding square."""
    height, width = dark.shape
    xa, xb = max(0, math.floor(cx - radius)), min(width, math.ceil(cx + radius) + 1)
    ya, yb = max(0, math.floor(cy - radius)), min(height, math.ceil(cy + radius) + 1)
    if xa >= xb or ya >= yb:
        return
    dx = np.arange(xa, xb, dtype=np.float32) - np.float32(cx)
    dy = np.arange(ya, yb, dtype=np.float32) - np.float32(cy)
    distance = np.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2) / np.float32(max(radius, 0.5))
    dark[ya:yb, xa:xb] *= 1.0 - np.float32(level) * np.clip((1.0 - distance) / 0.3, 0.0, 1.0)
