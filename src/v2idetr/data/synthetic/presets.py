"""The two image families: ``_Ultrasound`` and ``_Colonoscopy`` (textures, lesion look, degradations).

Each draws its tissue once per video on a canvas larger than the frame, renders the camera's view
of it with the lesions of a frame, and applies a frame's degradation the way it looks in that
modality. Which frames are degraded, and where occluders and distractors go, ``degradations`` decides.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.special import expit

from v2idetr.data.synthetic.imaging import _add_spot, _motion_blur, _smooth, _speckle, _warp
from v2idetr.data.synthetic.lesions import _Camera, _Lesion


class _Ultrasound:
    """B-mode-like: tissue layers x multiplicative speckle, square-root log-like compression."""

    def __init__(self, rng: np.random.Generator, size: int, canvas: int):
        self.size = size
        s = size / 128
        yy = np.arange(canvas)[:, None] + 0.5
        top = canvas / 2 - size / 2
        wav = _smooth(rng, (1, canvas), 30 * s)[0]
        depth = (yy - top) / size + 0.03 * _smooth(rng, (canvas, canvas), 25 * s)
        bounds = np.sort(rng.uniform([0.12, 0.3, 0.78], [0.2, 0.42, 0.92]))
        fat, gland, deep = rng.uniform(0.25, 0.38), rng.uniform(0.8, 1.0), rng.uniform(0.3, 0.45)
        layer = np.where(
            depth < bounds[0] + 0.02 * wav, fat, np.where(depth < bounds[2] + 0.02 * wav, gland, deep)
        )
        layer = ndimage.gaussian_filter(layer, 2.0 * s)
        skin = 1.2 * np.exp(-(((depth - rng.uniform(0.03, 0.06)) / 0.012) ** 2))
        # Cooper ligaments / septa: thin bright curved streaks, thresholded ridges of a smooth field.
        ridge = np.exp(-((_smooth(rng, (canvas, canvas), 9 * s) / 0.08) ** 2)) * (depth < bounds[1]) * 0.5
        lobules = (
            1.0 + 0.18 * _smooth(rng, (canvas, canvas), 6 * s) + 0.15 * _smooth(rng, (canvas, canvas), 20 * s)
        )
        self.echo = np.clip(layer * lobules + skin + ridge, 0.05, None)
        self.grain = max(0.6, 0.9 * s)
        self.speckle = _speckle(rng, (canvas, canvas), self.grain)
        xs = (np.arange(size) + 0.5) / size
        ys = (np.arange(size) + 0.5) / size
        tgc = 1.0 - rng.uniform(0.1, 0.35) * ys[:, None]
        edges = np.clip(np.minimum(xs, 1 - xs) / 0.08, 0, 1)[None, :] ** 0.5
        self.frame_gain = tgc * edges
        self.gain = rng.uniform(0.5, 0.6)

    def base(self, cam: _Camera, t: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        echo = _warp(self.echo, cam, t, self.size)
        fresh = _speckle(rng, (self.size, self.size), self.grain)
        speckle = 0.65 * _warp(self.speckle, cam, t, self.size) + 0.35 * fresh
        return echo * self.frame_gain, speckle

    def add_lesion(self, echo: np.ndarray, lesion: _Lesion) -> np.ndarray | None:
        f = lesion.field(self.size)
        if f is None:
            return None
        sl, rho, phi = f
        m = lesion.mask(rho, phi)
        # Posterior enhancement/shadowing: the column below the lesion, fading with depth.
        xs = np.arange(self.size) + 0.5
        ys = np.arange(self.size)[:, None] + 0.5
        half_w = max(
            1.0, 0.8 * max(abs(lesion.a * math.cos(lesion.angle)), abs(lesion.b * math.sin(lesion.angle)))
        )
        col = np.exp(-(((xs - lesion.cx) / half_w) ** 4))[None, :]
        bottom = lesion.cy + 0.7 * max(
            abs(lesion.a * math.sin(lesion.angle)), abs(lesion.b * math.cos(lesion.angle))
        )
        below = expit((ys - bottom) / 1.5) * np.exp(-np.clip(ys - bottom, 0, None) / (0.35 * self.size))
        echo *= 1.0 + lesion.shape.posterior * col * below
        echo[sl] *= 1.0 - lesion.shape.depth * m
        if lesion.shape.wall:
            echo[sl] *= 1.0 + lesion.shape.wall * np.exp(-(((rho - 1.0) / 0.12) ** 2))
        return m

    def render(self, echo: np.ndarray, speckle: np.ndarray) -> np.ndarray:
        # Stronger compression of the speckle than of the echo level: a lesion reads as a region.
        return np.clip(self.gain * np.sqrt(echo) * speckle**0.4, 0, 1)[..., None]

    def degrade(
        self, img: np.ndarray, kind: str, rng: np.random.Generator, occluder: np.ndarray | None
    ) -> np.ndarray:
        size = self.size
        if kind == "noise":
            burst = _speckle(rng, (size, size), max(0.5, 1.3 * self.grain))
            noisy = img * np.sqrt(burst)[..., None] * rng.uniform(0.9, 1.1)
            return np.clip(noisy + rng.normal(0, rng.uniform(0.06, 0.11), img.shape), 0, 1)
        if kind == "blur":
            # Probe motion smears the lesion; fresh speckle keeps the frame as noisy as ever.
            blurred = _motion_blur(img, rng.uniform(0.12, 0.2) * size, rng.uniform(0, np.pi))
            fresh = np.sqrt(_speckle(rng, (size, size), self.grain)) / 0.886
            return np.clip(blurred * (0.5 + 0.5 * fresh)[..., None], 0, 1)
        if kind == "low_contrast":
            c = rng.uniform(0.15, 0.25)
            mean = img.mean()
            out = (
                mean
                + (img - mean) * c
                + rng.uniform(-0.05, 0.1)
                + rng.normal(0, rng.uniform(0.03, 0.05), img.shape)
            )
            return np.clip(out, 0, 1)
        if kind == "overexposed":
            # Gain far too high: a soft knee pushes tissue and lesion towards white.
            out = 1.0 - (1.0 - np.clip(img * rng.uniform(1.3, 1.6), 0, 1)) ** rng.uniform(4.0, 6.0)
            return np.clip(out + rng.normal(0, 0.03, img.shape), 0, 1)
        if kind == "occlusion":
            assert occluder is not None
            shadow = rng.uniform(0.06, 0.15) * np.sqrt(_speckle(rng, (size, size), self.grain))
            return img * (1 - occluder[..., None]) + (shadow * occluder)[..., None]
        if kind == "hopeless":
            # Probe lifted off the skin: no tissue, only faint noise and reverberation lines.
            ys = np.arange(size)[:, None] + 0.5
            rev = (
                0.12
                * np.exp(-ys / (0.15 * size))
                * (np.sin(2 * np.pi * ys / rng.uniform(6, 10) * size / 128) > 0.6)
            )
            noise = 0.03 * np.sqrt(_speckle(rng, (size, size), self.grain))
            return np.clip(rev + noise, 0, 1)[..., None] * np.ones((1, 1, img.shape[2]))
        return img


class _Colonoscopy:
    """Pink mucosa with folds, vessels and granularity; vignetting; moving specular highlights."""

    def __init__(self, rng: np.random.Generator, size: int, canvas: int):
        self.size = size
        s = size / 128
        pink = rng.uniform([0.82, 0.45, 0.4], [0.92, 0.56, 0.5])
        red = rng.uniform([0.62, 0.2, 0.18], [0.75, 0.3, 0.28])
        mix = expit(1.5 * _smooth(rng, (canvas, canvas), 30 * s))[..., None]
        col = pink * mix + red * (1 - mix)
        col *= (1.0 + 0.05 * _smooth(rng, (canvas, canvas), 1.2 * s))[..., None]
        vessels = np.exp(-((_smooth(rng, (canvas, canvas), 5 * s) / 0.07) ** 2)) * expit(
            2 * _smooth(rng, (canvas, canvas), 25 * s)
        )
        col *= 1.0 - vessels[..., None] * np.array([0.15, 0.45, 0.35])
        # Folds: ridges around a distant lumen; shaded by their slope.
        yy, xx = np.mgrid[0:canvas, 0:canvas] + 0.5
        lumen = canvas / 2 + rng.uniform(-0.45, 0.45, 2) * size
        dist = np.hypot(xx - lumen[0], yy - lumen[1])
        # Folds crowd together towards the lumen (perspective): phase grows with log-distance.
        d0 = rng.uniform(0.25, 0.4) * size
        phase = 2 * np.pi * rng.uniform(1.2, 1.8) * np.log1p(dist / d0)
        phase = (
            phase
            + 1.2 * _smooth(rng, (canvas, canvas), 35 * s)
            + 0.5 * np.cos(np.arctan2(yy - lumen[1], xx - lumen[0]) * 3)
        )
        height = np.sin(phase) ** 3
        gy, gx = np.gradient(height)
        light = rng.uniform(0, 2 * np.pi)
        wave = 2 * np.pi / (np.hypot(*np.gradient(phase)) + 1e-3)
        slope = (gx * math.cos(light) + gy * math.sin(light)) * wave / (2 * np.pi)
        self.shade_canvas = np.clip(1.0 + 0.5 * slope + 0.08 * height, 0.6, 1.35)
        # The lumen: a dark far-away hole at the folds' centre, moving with the view.
        dark = 1.0 - 0.85 * np.exp(-(dist**2) / (2 * (rng.uniform(0.1, 0.16) * size) ** 2))
        self.colour = col * (self.shade_canvas**0.7 * dark)[..., None]
        self.light = np.array([math.cos(light), math.sin(light)])
        n_spec = int(rng.integers(8, 18))
        self.spec_pos = rng.uniform(0, canvas, (n_spec, 2))
        self.spec_sigma = rng.uniform(0.5, 1.4, n_spec) * s
        fx = (np.arange(size) + 0.5) / size - 0.5
        r = np.hypot(fx[None, :], fx[:, None]) / math.sqrt(0.5)
        self.vignette = (1.0 - rng.uniform(0.45, 0.65) * r**2.2)[..., None]

    def base(self, cam: _Camera, t: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return _warp(self.colour, cam, t, self.size), np.zeros(0)

    def add_lesion(self, img: np.ndarray, lesion: _Lesion, rng: np.random.Generator) -> np.ndarray | None:
        """Raised dome: paler/redder surface, pit texture, shading from the light, base shadow."""
        f = lesion.field(self.size)
        if f is None:
            return None
        sl, rho, phi = f
        m = lesion.mask(rho, phi)
        if min(rho.shape) < 2:
            return m
        dome = np.clip(1.0 - rho**2, 0, 1) ** 0.6
        gy, gx = np.gradient(dome)
        r = max(lesion.a, lesion.b)
        slope = (gx * self.light[0] + gy * self.light[1]) * r
        shade = np.clip(0.85 + 0.3 * dome + 0.45 * slope, 0.4, 1.5)
        texture = 1.0 + 0.06 * rng.standard_normal(rho.shape)
        texture = ndimage.gaussian_filter(texture, 0.7)
        surface = img[sl] * lesion.shape.tint * (shade * texture)[..., None]
        # Base shadow on the side away from the light.
        away = -self.light * 0.18 * r
        shifted = _Lesion(
            None,
            lesion.cx + away[0],
            lesion.cy + away[1],
            lesion.a,
            lesion.b,
            lesion.angle,
            lesion.phase,
            lesion.shape,
        )
        f2 = shifted.field(self.size)
        if f2 is not None:
            sl2, rho2, phi2 = f2
            shadow = np.zeros((self.size, self.size))
            shadow[sl2] = shifted.mask(rho2, phi2)
            shadow[sl] = np.clip(shadow[sl] - m, 0, 1)
            img *= (1.0 - 0.45 * shadow)[..., None]
        img[sl] = img[sl] * (1 - m[..., None]) + surface * m[..., None]
        if rng.random() < 0.8:
            apex = (lesion.cx + self.light[0] * 0.3 * r, lesion.cy + self.light[1] * 0.3 * r)
            _add_spot(img, apex, 0.1 * r + 0.5, 0.8)
        return m

    def render(self, img: np.ndarray, cam: _Camera, t: int, rng: np.random.Generator) -> np.ndarray:
        out = img * self.vignette
        for p, sigma in zip(self.spec_pos, self.spec_sigma, strict=True):
            if rng.random() < 0.25:
                continue
            x, y = (p - cam.centre[t]) * cam.zoom[t] + self.size / 2 + rng.normal(0, 0.6, 2)
            _add_spot(out, (x, y), sigma, rng.uniform(0.6, 1.0))
        return np.clip(out, 0, 1)

    def degrade(
        self, img: np.ndarray, kind: str, rng: np.random.Generator, occluder: np.ndarray | None
    ) -> np.ndarray:
        size = self.size
        if kind == "noise":
            lum = rng.normal(0, rng.uniform(0.07, 0.11), img.shape[:2])[..., None]
            chroma = rng.normal(0, rng.uniform(0.05, 0.08), img.shape)
            return np.clip(img + lum + chroma, 0, 1)
        if kind == "blur":
            return _motion_blur(img, rng.uniform(0.09, 0.16) * size, rng.uniform(0, np.pi))
        if kind == "low_contrast":
            # Water / mucus haze over the lens.
            haze = rng.uniform([0.65, 0.45, 0.42], [0.8, 0.6, 0.55])
            alpha = rng.uniform(0.68, 0.8)
            return np.clip(img * (1 - alpha) + haze * alpha, 0, 1)
        if kind == "overexposed":
            return np.clip(img * rng.uniform(1.7, 2.1) + rng.uniform(0.2, 0.3), 0, 1)
        if kind == "occlusion":
            assert occluder is not None
            # A metal instrument: grey rod, brighter along its axis.
            metal = (
                np.array([0.55, 0.57, 0.6])
                * (0.75 + 0.35 * ndimage.gaussian_filter(occluder, 2.0 * size / 128))[..., None]
            )
            return img * (1 - occluder[..., None]) + metal * occluder[..., None]
        if kind == "hopeless":
            # Red-out: the lens touches the mucosa; a featureless blur of one colour.
            colour = rng.uniform([0.55, 0.1, 0.1], [0.75, 0.2, 0.18])
            flat = colour * (1.0 + 0.04 * _smooth(rng, (size, size), 20 * size / 128))[..., None]
            return np.clip(flat * self.vignette, 0, 1)
        return img
