"""SPEED+'s hardware-in-the-loop test domains, ``lightbox`` and ``sunlamp``, as imaging physics.

SPEED+ trains on synthetic renders and tests on lab pictures of a Tango mock-up; the gap between
the two is what a pose model must survive. The embedded renderer (lib.spacecraft.renderer)
supplies the geometry: which surface every pixel of its pinhole canvas sees
(:class:`SurfaceBuffers`, with a shadow query) and where the lamp lies in the picture. This
module supplies the rest, from the physics of the lab rather than a filter over a finished
synthetic picture:

- the mock-up's materials: crinkled MLI foil (a metal film whose facets reflect the lights in
  bright high-frequency patches), glass-covered solar cells (a mirror at grazing angles),
  painted frame, metal rods, paint markings; a fixed surface texture, the same in every image;
- the lighting: ``lightbox``, several broad diffuser plates (soft Earth albedo) in a dark lab;
  ``sunlamp``, one small metal-halide lamp (hard light and shadows, almost no fill light);
- the optics: defocus, a wide glare tail of the point-spread function, a diffraction star and
  ghost images of the aperture along the line through the image centre, stray light;
- the sensor: exposure in electrons, full well, blooming (overflow charge spills into the
  neighbours), shot and read noise, gamma and 8-bit quantisation.

Both domains are pictures of the same mock-up by the same camera: materials, lens and sensor
are shared; lighting, exposure and focus differ.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from lib.spacecraft.files import SUBMISSION_CATEGORIES

__all__ = [
    "DOMAINS",
    "SurfaceBuffers",
    "Light",
    "Lamp",
    "LampView",
    "Scene",
    "draw_scene",
    "shade",
    "develop",
]

DOMAINS: tuple[str, ...] = SUBMISSION_CATEGORIES  # SPEC2021's test domains, named as it names them

# The kinds of surface the renderer tells apart (SurfaceBuffers.kind), rows of _MATERIALS.
FOIL, CELL, FRAME, ROD, PAINT, GRID = range(6)

# Per kind: Lambertian albedo, Fresnel reflectance at normal incidence (Schlick), rms slope of
# the microfacets (rad), gain of the crinkle texture's slopes on the normal, depth of the
# low-frequency albedo variation (stains, blanket seams). Paint multiplies its albedo by the
# marking's own (SurfaceBuffers.albedo).
_MATERIALS = np.array([
    [0.06, 0.80, 0.06, 1.00, 0.25],  # foil: a metal film over a dull backing, crinkled
    [0.05, 0.05, 0.010, 0.05, 0.20],  # cells: dark, behind a cover glass, slightly wavy
    [0.42, 0.25, 0.20, 0.00, 0.30],  # frame: painted aluminium
    [0.30, 0.90, 0.08, 0.00, 0.10],  # rods: polished metal
    [0.90, 0.04, 0.30, 0.00, 0.25],  # paint: the markings
    [0.55, 0.50, 0.25, 0.00, 0.10],  # grid: metal interconnects between the cells
])

# The mock-up's surface texture: one period covers _TILE metres with _TEXELS texels, drawn once
# from a fixed seed (the same object in every picture).
_TILE, _TEXELS, _TEXTURE_SEED = 0.64, 256, 2021

# The lens (same in both domains), sizes in pixels of the full 1920-pixel-wide sensor.
_GLARE = 0.02  # fraction of the light in the wide tail of the point-spread function
_GLARE_WIDTH = 40.0  # sigma of that tail
_HALO = 0.01  # fraction of a point source's light in its veiling glare ...
_HALO_WIDTH = 25.0  # ... whose profile is 1 / (1 + (d / width)^2), out to the frame's far side
_BLADES = 6  # aperture blades: a hexagonal aperture, six diffraction spikes
_BLADE_ANGLE = 0.35  # orientation of the aperture, rad
_SPIKE = 0.003  # fraction of a point source's light in all its spikes together
_SPIKE_WIDTH, _SPIKE_LENGTH = 1.2, 30.0  # across (sigma) and along (see _star_kernel)
# Ghosts: images of the aperture at centre + m * (source - centre): (m, radius as a fraction of
# the image diagonal, fraction of the source's light). Two reflections off coated glass each.
_GHOSTS = ((-0.45, 0.018, 1e-5), (-0.9, 0.04, 3e-5), (-1.35, 0.07, 3e-5), (0.55, 0.025, 1e-5),
           (1.5, 0.09, 2e-5))
# The camera (same in both domains): its exposure meter reads this percentile of the spacecraft,
_METERED_PERCENTILE = 90.0
# and its sensor's pixels beyond the full well bloom:
_BLOOM = 0.3  # fraction of the overflow charge that spills into the neighbours ...
_BLOOM_WIDTH = 6.0  # ... over this sigma


@dataclass(frozen=True)
class SurfaceBuffers:
    """What the camera's pinhole canvas sees of the spacecraft: one entry per covered pixel.

    Vectors are in the camera frame (metres); ``uv`` are texture coordinates in metres attached
    to the surface (each face its own origin), along ``tangent_u`` / ``tangent_v``.
    ``occlusion(direction, radius)`` is each pixel's visibility, in [0, 1], of a distant light of
    that angular radius (rad) in that direction (unit vector towards the light); it is 1 where
    no other part of the spacecraft stands in between, whichever way the pixel's face turns.
    ``footprint`` is the size of a pixel on the spacecraft (metres).
    """

    shape: tuple[int, int]
    rows: np.ndarray
    cols: np.ndarray
    kind: np.ndarray
    albedo: np.ndarray
    points: np.ndarray
    normals: np.ndarray
    tangent_u: np.ndarray
    tangent_v: np.ndarray
    uv: np.ndarray
    footprint: float
    occlusion: Callable[[np.ndarray, float], np.ndarray]


@dataclass(frozen=True)
class Light:
    """A distant light seen from the spacecraft: unit ``direction`` towards it (camera frame),
    angular ``radius`` (rad), ``irradiance`` on a surface facing it (1: the scene's reference)."""

    direction: np.ndarray
    radius: float
    irradiance: float


@dataclass(frozen=True)
class Lamp:
    """The sun lamp as an object: its centre relative to the spacecraft (camera frame, m) and
    the radius of its bright reflector (m)."""

    offset: np.ndarray
    radius: float


@dataclass(frozen=True)
class LampView:
    """Where the lamp is in the picture: centre (x, y) in pixels, possibly outside the frame,
    and the radius of its disc in pixels. The renderer gives none when the lamp is behind the
    camera or hidden by the spacecraft."""

    pixel: np.ndarray
    radius: float


@dataclass(frozen=True)
class Scene:
    """One picture's lighting, optics and sensor settings (see :func:`draw_scene`)."""

    domain: str
    lights: tuple[Light, ...]
    lamp: Lamp | None
    ambient: float  # irradiance from the lab's walls, the same from every direction
    brightness: float  # the exposure: full wells that ...
    metered: bool  # ... the metered spacecraft makes (else a white card facing the light)
    full_well: float  # electrons
    read_noise: float  # electrons, rms
    gamma: float  # the camera's tone curve: value = (charge / full well)^(1 / gamma)
    defocus: float  # sigma of the point-spread function's core, pixels at 1920 wide
    stray: float  # stray light veil, fraction of the full well
    stray_direction: np.ndarray  # image-plane direction the veil brightens towards


def _unit_vector(rng: np.random.Generator, z_low: float, z_high: float) -> np.ndarray:
    """Uniform on the sphere's band z_low <= z <= z_high (camera frame: z along the view)."""
    z = rng.uniform(z_low, z_high)
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    ring = np.sqrt(max(0.0, 1.0 - z * z))
    return np.array([ring * np.cos(azimuth), ring * np.sin(azimuth), z])


def _towards(direction: np.ndarray) -> np.ndarray:
    """The image-plane direction (x, y) in which a camera-frame direction lies (any if none)."""
    planar = np.asarray(direction[:2], dtype=np.float64)
    norm = np.linalg.norm(planar)
    return planar / norm if norm > 1e-9 else np.array([1.0, 0.0])


def draw_scene(domain: str, rng: np.random.Generator) -> Scene:
    """The lab's lights and the camera's state for one picture of ``domain``.

    ``lightbox``: 3 or 4 diffuser plates 15-30 degrees in radius, mostly on the camera's side and
    the flanks, sharing the light unevenly; 2-6 % more from the walls; metered so that the
    spacecraft's brightest tenth sits at 70-95 % of the full well (foil mirroring a plate may
    still overflow); mildly out of focus.
    ``sunlamp``: one lamp 4-8 m away whose 12 cm reflector is the only real source (the walls
    add 0.4-1.5 % of its light: shadows are nearly black); from the flanks or the camera's
    side, one time in six from behind the spacecraft towards the camera; exposed for the lamp
    (a white card facing it would take 3.5-6 full wells), so lit paint, frame, rods and foil
    glints overflow and bloom, as in the real lab.
    """
    full_well = rng.uniform(2500.0, 4500.0)
    read_noise = rng.uniform(3.0, 8.0)
    gamma = rng.uniform(1.3, 1.7)
    if domain == "lightbox":
        count = int(rng.integers(3, 5))
        shares = rng.uniform(0.4, 1.6, count)
        shares /= shares.sum()
        lights = tuple(Light(_unit_vector(rng, -0.95, 0.35), rng.uniform(0.26, 0.52), float(share))
                       for share in shares)
        strongest = max(lights, key=lambda light: light.irradiance).direction
        return Scene(domain, lights, None, ambient=rng.uniform(0.02, 0.06),
                     brightness=rng.uniform(0.7, 0.95), metered=True, full_well=full_well,
                     read_noise=read_noise, gamma=gamma, defocus=rng.uniform(2.6, 4.2),
                     stray=rng.uniform(0.0005, 0.003), stray_direction=_towards(strongest))
    if domain == "sunlamp":
        behind = rng.random() < 1.0 / 6.0
        direction = _unit_vector(rng, 0.5, 0.85) if behind else _unit_vector(rng, -0.9, 0.5)
        distance, radius = rng.uniform(4.0, 8.0), 0.12
        return Scene(domain, (Light(direction, radius / distance, 1.0),),
                     Lamp(direction * distance, radius), ambient=rng.uniform(0.004, 0.015),
                     brightness=rng.uniform(5.0, 9.0), metered=False, full_well=full_well,
                     read_noise=read_noise, gamma=gamma, defocus=rng.uniform(1.4, 2.6),
                     stray=rng.uniform(0.0005, 0.004), stray_direction=_towards(direction))
    raise ValueError(f"unknown test domain {domain!r}: choose from {', '.join(DOMAINS)}")


# ------------------------------------------------------------------------------------ materials
def _periodic_field(rng: np.random.Generator, frequency: np.ndarray, centre: float,
                    width: float) -> np.ndarray:
    """A periodic Gaussian random field of unit variance whose power lies in a ring of spatial
    frequencies around ``centre`` (cycles per metre, ``width`` wide)."""
    spectrum = np.fft.fft2(rng.standard_normal(frequency.shape))
    spectrum *= np.exp(-0.5 * ((frequency - centre) / width) ** 2)
    field = np.fft.ifft2(spectrum).real
    return (field - field.mean()) / max(float(field.std()), 1e-12)


@functools.cache
def _mockup_texture(level: int) -> tuple[np.ndarray, float]:
    """The mock-up's surface texture low-passed for pixels of about ``2**level`` texels.

    Returns texels x texels x 3 float32 (the crinkle height's slopes along u and v, and the
    albedo variation in about [-1, 1]) and the slope variance the low-pass removed: what a
    pixel no longer resolves, it sees as rougher foil (added to the microfacet roughness).
    The height is crumpled foil: creases where a random field crosses zero (2-3 cm apart,
    under a millimetre deep) over slow wrinkles (15 cm, 2 mm deep).
    """
    rng = np.random.default_rng(_TEXTURE_SEED)
    spacing = _TILE / _TEXELS
    frequencies = np.fft.fftfreq(_TEXELS, d=spacing)
    fu, fv = np.meshgrid(frequencies, frequencies)  # u along the columns, v along the rows
    radial = np.hypot(fu, fv)
    crinkle = -np.abs(_periodic_field(rng, radial, 40.0, 20.0))
    wrinkle = _periodic_field(rng, radial, 6.0, 3.0)
    stain = np.tanh(_periodic_field(rng, radial, 2.0, 2.0))
    height = np.fft.fft2(0.0008 * (crinkle - crinkle.mean()) + 0.002 * wrinkle)
    sigma = 0.5 * 2.0**level * spacing if level > 0 else 0.0  # metres
    low_pass = np.exp(-2.0 * (np.pi * sigma * radial) ** 2)
    slopes = [np.fft.ifft2(height * 2j * np.pi * f).real for f in (fu, fv)]
    blurred = [np.fft.ifft2(height * low_pass * 2j * np.pi * f).real for f in (fu, fv)]
    removed = float(np.mean([s.var() - b.var() for s, b in zip(slopes, blurred, strict=True)]))
    stain = np.fft.ifft2(np.fft.fft2(stain) * low_pass).real
    texture = np.stack([blurred[0], blurred[1], stain], axis=-1).astype(np.float32)
    return texture, max(removed, 0.0)


def _sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear samples (N x channels) of a periodic texture at ``uv`` (N x 2, metres)."""
    texel = np.mod(uv * (_TEXELS / _TILE), _TEXELS).astype(np.float32)
    count = len(texel)
    columns = 1024  # OpenCV's remap takes maps narrower than 32767
    rows = max(1, -(-count // columns))
    padded = np.zeros((rows * columns, 2), np.float32)
    padded[:count] = texel
    maps = padded.reshape(rows, columns, 2)
    sampled = cv2.remap(texture, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_WRAP)
    return sampled.reshape(rows * columns, -1)[:count]


def _soft_cosine(cosine: np.ndarray, sin_radius: float) -> np.ndarray:
    """The cosine law for a disc source of angular radius asin(sin_radius): a plane partly
    below the disc's horizon receives a quadratic share of its light instead of a hard cut."""
    s = np.float32(max(sin_radius, 1e-4))
    blend = np.clip(cosine + s, 0.0, None) ** 2 / (4.0 * s)
    return np.where(cosine >= s, cosine, blend)


def shade(surface: SurfaceBuffers, scene: Scene) -> np.ndarray:
    """Radiance leaving each surface pixel towards the camera (N; unit: the reference irradiance
    reflected by a white matte surface facing it is 1 / pi).

    Lambertian diffuse light and a microfacet specular lobe per light: Schlick's Fresnel term
    and, around the mirror direction, a Gaussian lobe as wide as the light's disc and the
    surface's roughness together, whose peak is the light's own radiance when both match (a
    mirror shows the light box). The crinkle texture tilts the normal pixel by pixel, so foil
    reflects some lights in bright patches and the dark lab elsewhere. The walls add a dim
    uniform light seen diffusely and in every reflection.
    """
    table = _MATERIALS.astype(np.float32)[surface.kind]
    diffuse_albedo, f0, roughness, crinkle, stain = table.T
    level = int(np.clip(np.floor(np.log2(max(surface.footprint * _TEXELS / _TILE, 1.0))), 0, 5))
    texture, removed = _mockup_texture(level)
    sample = _sample_texture(texture, surface.uv)
    normals = surface.normals + crinkle[:, None] * (sample[:, :1] * surface.tangent_u
                                                    + sample[:, 1:2] * surface.tangent_v)
    normals /= np.sqrt(np.einsum("ij,ij->i", normals, normals))[:, None]
    albedo = diffuse_albedo * np.where(surface.kind == PAINT, surface.albedo, np.float32(1.0))
    albedo *= np.clip(1.0 + stain * sample[:, 2], 0.2, 2.0)
    roughness2 = roughness**2 + crinkle**2 * np.float32(removed)

    view = -surface.points / np.sqrt(np.einsum("ij,ij->i", surface.points,
                                               surface.points))[:, None]
    facing_view = np.clip(np.einsum("ij,ij->i", normals, view), 1e-3, 1.0)
    fresnel = f0 + (1.0 - f0) * (1.0 - facing_view) ** 5
    matte = albedo * (1.0 - (fresnel - f0))  # what the grazing reflection takes
    mirror = 2.0 * facing_view[:, None] * normals - view

    radiance = (matte + fresnel) * np.float32(scene.ambient / np.pi)
    directions = np.array([light.direction for light in scene.lights], np.float32).T
    geometric, tilted, reflected = (surface.normals @ directions, normals @ directions,
                                    mirror @ directions)
    for k, light in enumerate(scene.lights):
        sin_radius = float(np.sin(light.radius))
        facing = np.clip((geometric[:, k] + sin_radius) / (2 * sin_radius), 0.0, 1.0)
        visible = facing * surface.occlusion(light.direction, light.radius)
        diffuse = matte * np.float32(light.irradiance / np.pi) * _soft_cosine(tilted[:, k],
                                                                              sin_radius)
        width2 = np.float32(light.radius**2) + 4.0 * roughness2
        angle2 = 2.0 * np.maximum(1.0 - reflected[:, k], 0.0)
        peak = np.float32(light.irradiance / (np.pi * sin_radius**2) * light.radius**2)
        specular = fresnel * peak / width2 * np.exp(-angle2 / width2)
        radiance += visible * (diffuse + specular)
    return radiance


# ---------------------------------------------------------------------------- optics and sensor
def _smooth_field(shape: tuple[int, int], rng: np.random.Generator, cells: int) -> np.ndarray:
    """Low-frequency random field in [0, 1] over ``shape`` (a bicubically enlarged grid)."""
    grid = rng.random((cells + 1, cells + 2)).astype(np.float32)
    field = cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return np.clip(field, 0.0, 1.0)


def _wide_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a large ``sigma`` computed at a quarter of the size (it is smooth)."""
    height, width = image.shape
    small = cv2.resize(image, (max(1, width // 4), max(1, height // 4)),
                       interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(sigma / 4.0, 0.5))
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


@functools.cache
def _star_kernel(px: float) -> np.ndarray:
    """The diffraction star of the hexagonal aperture as a point-spread-function component: six
    thin spikes falling as exp(-x / 6 length) / (1 + x / length)^3 and summing to _SPIKE (the
    centre is left out: the core and the glare tail carry the rest)."""
    length = max(_SPIKE_LENGTH * px, 2.0)
    width = max(_SPIKE_WIDTH * px, 0.6)
    radius = int(np.ceil(6 * length))
    ys, xs = np.mgrid[-radius:radius + 1, -radius:radius + 1].astype(np.float64)
    kernel = np.zeros_like(xs)
    for angle in _BLADE_ANGLE + np.pi * np.arange(_BLADES // 2) / (_BLADES // 2):
        along = np.abs(xs * np.cos(angle) + ys * np.sin(angle))
        across = -xs * np.sin(angle) + ys * np.cos(angle)
        kernel += (np.exp(-0.5 * (across / width) ** 2 - along / (6.0 * length))
                   / (1.0 + along / length) ** 3)
    kernel[radius, radius] = 0.0
    return (kernel * (_SPIKE / kernel.sum())).astype(np.float32)


def _star(overflow: np.ndarray, px: float) -> np.ndarray:
    """The diffraction stars of the overflowing highlights: their excess light through the star
    component of the point-spread function (the rest of it is below the full well anyway),
    at half size (the spikes are smooth along their length)."""
    height, width = overflow.shape
    half = cv2.resize(overflow, (max(1, width // 2), max(1, height // 2)),
                      interpolation=cv2.INTER_AREA)
    kernel = _star_kernel(round(px / 2.0, 4))
    radius = kernel.shape[0] // 2
    out = np.zeros_like(half)
    left, top, box_width, box_height = cv2.boundingRect((half > 0).astype(np.uint8))
    if box_width:
        top, left = max(top - radius, 0), max(left - radius, 0)
        bottom, right = top + box_height + 2 * radius + 1, left + box_width + 2 * radius + 1
        out[top:bottom, left:right] = cv2.filter2D(half[top:bottom, left:right], -1, kernel,
                                                   borderType=cv2.BORDER_CONSTANT)
    return cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)


def _lamp_glare(x: float, y: float, power: float, shape: tuple[int, int], px: float
                ) -> np.ndarray:
    """The lamp's veiling glare and star (electrons) where its light lands, which may be outside
    the frame. The glare, smooth, is evaluated at a quarter of the size; the spikes are drawn as
    lines whose density falls as the star kernel's does, then blurred to their width."""
    height, width = shape
    small = (max(1, height // 4), max(1, width // 4))
    ys, xs = np.mgrid[0:small[0], 0:small[1]].astype(np.float32)
    dx = (xs + np.float32(0.5)) * np.float32(width / small[1]) - np.float32(x + 0.5)
    dy = (ys + np.float32(0.5)) * np.float32(height / small[0]) - np.float32(y + 0.5)
    halo_width = _HALO_WIDTH * px
    reach = float(np.hypot(width, height)) + float(np.hypot(x - width / 2, y - height / 2))
    norm = np.pi * halo_width**2 * np.log1p((reach / halo_width) ** 2)  # its integral to reach
    halo = (np.float32(power * _HALO / norm)
            / (1.0 + (dx * dx + dy * dy) / np.float32(halo_width**2)))
    out = cv2.resize(halo, (width, height), interpolation=cv2.INTER_LINEAR)

    length = max(_SPIKE_LENGTH * px, 2.0)
    ends = np.concatenate([[0.0], np.geomspace(0.5, reach, 48)])
    middles = 0.5 * (ends[1:] + ends[:-1])
    profile = np.exp(-middles / (6.0 * length)) / (1.0 + middles / length) ** 3
    density = power * _SPIKE / _BLADES * profile / np.sum(profile * np.diff(ends))
    spikes = np.zeros(shape, np.float32)
    for angle in _BLADE_ANGLE + 2.0 * np.pi * np.arange(_BLADES) / _BLADES:
        direction = np.array([np.cos(angle), np.sin(angle)])
        per_pixel = density / np.abs(direction).max()  # a drawn line has one pixel per step
        points = np.round((np.array([x, y]) + ends[:, None] * direction) * 16).astype(np.int64)
        for start, stop, value in zip(points[:-1], points[1:], per_pixel, strict=True):
            cv2.line(spikes, (int(start[0]), int(start[1])), (int(stop[0]), int(stop[1])),
                     float(value), 1, cv2.LINE_8, 4)
    out += cv2.GaussianBlur(spikes, (0, 0), max(_SPIKE_WIDTH * px, 0.7))
    return out


def _add_ghosts(charge: np.ndarray, sources: list[tuple[float, float, float]],
                centre: np.ndarray, faintest: float) -> None:
    """Add, in place, the ghost images of the hexagonal aperture (electrons) that bright sources
    (x, y, electrons) throw along the line through the principal point ``centre``: light
    reflected twice between lens surfaces, each ghost at centre + m * (source - centre).
    Ghosts fainter than ``faintest`` electrons per pixel, or off the frame, are left out."""
    height, width = charge.shape
    diagonal = float(np.hypot(width, height))
    ghosts = np.zeros(charge.shape, np.float32)
    corners = np.arange(_BLADES) * 2 * np.pi / _BLADES + _BLADE_ANGLE
    for x, y, power in sources:
        for magnification, radius, fraction in _GHOSTS:
            gx, gy = centre + magnification * (np.array([x, y]) - centre)
            radius_px = radius * diagonal
            level = power * fraction / (1.5 * np.sqrt(3.0) * radius_px**2)  # over its area
            if level < faintest or not (-radius_px < gx < width + radius_px
                                        and -radius_px < gy < height + radius_px):
                continue
            polygon = np.column_stack([gx + radius_px * np.cos(corners),
                                       gy + radius_px * np.sin(corners)])
            cv2.fillConvexPoly(ghosts, np.round(polygon * 16).astype(np.int32), float(level),
                               cv2.LINE_AA, 4)
    left, top, box_width, box_height = cv2.boundingRect((ghosts > 0).astype(np.uint8))
    if box_width:
        sigma = max(1.0, 0.004 * diagonal)
        pad = int(np.ceil(3 * sigma))
        top, left = max(top - pad, 0), max(left - pad, 0)
        window = (slice(top, top + box_height + 2 * pad), slice(left, left + box_width + 2 * pad))
        charge[window] += cv2.GaussianBlur(ghosts[window], (0, 0), sigma)


def develop(radiance: np.ndarray, scene: Scene, lamp: LampView | None, centre: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """The camera's H x W uint8 picture of the scene radiance reaching each pixel.

    ``radiance`` is the spacecraft's light (0 elsewhere) in the picture's frame; ``centre`` the
    principal point. In order: the exposure turns light into electrons (metered: the 90th
    percentile of the spacecraft's radiance makes ``scene.brightness`` full wells; else a
    white matte card facing the lights would); the lamp's disc; the lens (defocus core, wide
    glare tail, diffraction stars of the overflowing highlights, the lamp's glare and star,
    ghosts of the lamp and of the highlights, a stray light veil over the dark lab); the sensor
    (charge beyond the full well spills into the neighbours, then shot noise, Poisson as its
    normal limit N(n, n), and read noise; the tone curve; 8-bit rounding). JPEG compression
    follows in the writer.
    """
    height, width = radiance.shape
    px = width / 1920.0
    full = np.float32(scene.full_well)
    if scene.metered:  # on every other pixel, as a camera's metering grid would
        lit = radiance[::2, ::2]
        lit = lit[lit > 0]
        reference = float(np.percentile(lit, _METERED_PERCENTILE)) if lit.size else 1.0
    else:
        reference = sum(light.irradiance for light in scene.lights) / np.pi
    exposure = scene.brightness * scene.full_well / max(reference, 1e-9)
    charge = radiance.astype(np.float32) * np.float32(exposure)
    tail = _wide_blur(charge, _GLARE_WIDTH * px)
    sources = []
    if lamp is not None:
        source = scene.lights[0]
        lamp_charge = exposure * source.irradiance / (np.pi * np.sin(source.radius) ** 2)
        radius = max(lamp.radius, 0.5)
        x, y = (float(v) for v in lamp.pixel)
        if -radius < x < width + radius and -radius < y < height + radius:
            cv2.circle(charge, (int(round(x * 16)), int(round(y * 16))), int(round(radius * 16)),
                       float(lamp_charge), cv2.FILLED, cv2.LINE_AA, 4)
        sources.append((x, y, lamp_charge * np.pi * radius**2))
    charge = cv2.GaussianBlur(charge, (0, 0), max(scene.defocus * px, 0.3))
    cv2.addWeighted(charge, 1.0 - _GLARE, tail, _GLARE, 0.0, dst=charge)
    overflow = np.subtract(charge, full, out=tail)
    np.maximum(overflow, 0.0, out=overflow)
    moments = cv2.moments(overflow)
    total = float(moments["m00"])
    if total > 0.0:
        sources.append((moments["m10"] / total, moments["m01"] / total, total))
        if total * _SPIKE > 0.5 * scene.full_well:  # else the stars hide under the noise
            charge += _star(overflow, px)
    if lamp is not None:
        charge += _lamp_glare(*sources[0], (height, width), px)
    if sources:
        _add_ghosts(charge, sources, np.asarray(centre, dtype=np.float64),
                    0.001 * scene.full_well)
    charge += _veil((height, width), scene, rng)

    _bloom(charge, full, max(_BLOOM_WIDTH * px, 0.5))
    noise = rng.standard_normal(charge.shape, dtype=np.float32)
    spread = cv2.sqrt(charge + np.float32(scene.read_noise**2))
    charge += spread * noise
    # the tone curve and the 8-bit converter, through a table of 4096 charge levels
    steps = 4095
    curve = (np.linspace(0.0, 1.0, steps + 1) ** (1.0 / scene.gamma) * 255.0 + 0.5)
    charge *= np.float32(steps / scene.full_well)
    np.clip(charge, 0.0, steps, out=charge)
    return curve.astype(np.uint8).take(charge.astype(np.uint16))


def _veil(shape: tuple[int, int], scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Stray light over the whole picture (electrons): light from outside the field scattered
    by the lab and the lens barrel, brighter towards the lights, patchy at a large scale."""
    height, width = shape
    small = (max(2, height // 8), max(2, width // 8))
    ys, xs = np.mgrid[0:small[0], 0:small[1]].astype(np.float32)
    toward = (scene.stray_direction[0] * (xs - small[1] / 2)
              + scene.stray_direction[1] * (ys - small[0] / 2)) / np.float32(np.hypot(*small))
    veil = (0.3 + 0.7 * _smooth_field(small, rng, 3)) * np.exp(np.float32(2.0) * toward)
    veil = cv2.resize(veil.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.float32(scene.stray * scene.full_well) * veil


def _bloom(charge: np.ndarray, full_well: np.float32, sigma: float) -> None:
    """Blooming, in place: charge beyond the full well partly spills into the neighbouring
    pixels (the rest drains away), then every pixel holds at most a full well."""
    left, top, box_width, box_height = cv2.boundingRect((charge > full_well).astype(np.uint8))
    if box_width:
        pad = int(np.ceil(4 * sigma)) + 1
        top, left = max(top - pad, 0), max(left - pad, 0)
        window = charge[top:top + box_height + 2 * pad, left:left + box_width + 2 * pad]
        spill = cv2.GaussianBlur(np.maximum(window - full_well, 0.0), (0, 0), sigma)
        window += np.float32(_BLOOM) * spill
    np.minimum(charge, full_well, out=charge)
