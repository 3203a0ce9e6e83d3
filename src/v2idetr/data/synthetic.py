"""Synthetic lesion videos: the dataset every CPU experiment trains and measures on.

Two presets: ``ultrasound`` (B-mode-like speckled tissue with hypoechoic lesions) and
``colonoscopy`` (pink mucosa with folds, lumen, vessels, vignetting and moving specular highlights,
category 1 "polyp"). Ultrasound lesions are drawn benign-like (wider than tall, smooth margin,
posterior enhancement) or malignant-like (taller than wide, spiculated ill-defined margin,
posterior shadowing), recorded as the annotation's ``subtype``. By default they share one
category, 1 "lesion": at 128 px many lesions span 15-25 pixels of speckle, where the subtype cues
are faint, and a second class would spend the few CPU minutes of training on classification
rather than on the detection gap this dataset exists to measure. ``two_classes=True`` makes the
subtypes categories 1 "benign" and 2 "malignant" (the BUV convention).

What the data is built to show (DESIGN section 4):
- Lesions move smoothly with the tissue under a panning/zooming camera, change size slowly, and
  may enter or leave the view, so a clip is temporally coherent.
- Each frame carries one degradation label (``DEGRADATIONS``). Degradations come in bursts of
  1-2 frames with clean frames around them, so a single frame can be ambiguous while its clip is
  clear. ``noise``/``blur``/``low_contrast``/``overexposed``/``occlusion`` keep a faint trace of
  the lesion (hard but not hopeless); ``distractor`` adds an unannotated one-frame look-alike
  with a faint cue of its own (``_look_alike``); ``hopeless`` (a small share) removes every trace
  of the lesion, which stays annotated.

Conventions
- Pixel ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``; its centre is ``col + 0.5``.
  Boxes are the lesion's true outline (the ``rho = 1`` contour, where the soft margin is half
  way) clipped to the frame, COCO ``[x, y, w, h]`` in pixels. A lesion with less than
  ``MIN_VISIBLE_FRACTION`` of its area inside the frame gets no box and is counted in the image's
  ``partial_lesions_dropped``; a kept box whose lesion is cut by the border has ``truncated``.
- ``lesion_visible`` is true when the frame has a box and is not ``hopeless``; ``occluded`` on an
  annotation marks the lesion a (partial) occluder covers, and every lesion of a hopeless frame.
- Every video draws from its own ``numpy.random.Generator`` seeded by ``(seed, video index)``, so
  the output does not depend on the number of worker processes.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from scipy.special import expit
from tqdm import tqdm

from v2idetr.errors import ConfigError, DatasetError, Problem

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1.1"
PRESETS = ("ultrasound", "colonoscopy")
DEGRADATIONS = (
    "none",
    "noise",
    "blur",
    "low_contrast",
    "overexposed",
    "occlusion",
    "distractor",
    "hopeless",
)
CATEGORIES = {
    "ultrasound": [{"id": 1, "name": "lesion"}],
    "colonoscopy": [{"id": 1, "name": "polyp"}],
}
TWO_CLASS_CATEGORIES = [{"id": 1, "name": "benign"}, {"id": 2, "name": "malignant"}]
MIN_VISIBLE_FRACTION = 0.3

# Share of each type among degraded frames. Hopeless is ~10% of them (~3% of all frames at the
# default rate 0.3); occlusion and hopeless need a lesion in view and fall back to a generic type.
_DEGRADATION_WEIGHTS = {
    "noise": 0.17,
    "blur": 0.17,
    "low_contrast": 0.15,
    "overexposed": 0.12,
    "occlusion": 0.14,
    "distractor": 0.15,
    "hopeless": 0.10,
}
_GENERIC = ("noise", "blur", "low_contrast", "overexposed", "distractor")
_NEEDS_LESION = ("occlusion", "hopeless")


@dataclass
class SynthResult:
    """Where the dataset went and what it holds (``stats[split]`` counts per split)."""

    out: Path
    train_json: Path
    val_json: Path
    stats: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Plans: everything random is drawn up front from the video's generator, then rendered.


@dataclass
class _Shape:
    """A lesion outline in its own frame: semi-axes ``a`` (along ``angle``) and ``b`` in pixels.

    The boundary in normalised polar coordinates ``(rho_e, phi)`` is ``rho_e = h(phi)`` with
    ``h = 1 + sum(amp * cos(k * phi + phase))``; the margin softness varies with ``phi`` so parts
    of the margin can be ill-defined.
    """

    a: float
    b: float
    angle: float
    k: np.ndarray
    amp: np.ndarray
    phase: np.ndarray
    soft: float
    soft_var: float
    soft_phase: float
    category: int
    depth: float  # ultrasound: darkening inside; colonoscopy: unused
    posterior: float  # ultrasound: >0 posterior enhancement, <0 shadowing
    tint: np.ndarray  # colonoscopy: RGB multiplier of the polyp surface
    subtype: str
    wall: float = 0.0  # ultrasound look-alikes only: brightening of a thin echogenic wall


@dataclass
class _Track:
    """One lesion over time: anchored in the tissue (canvas coordinates) plus its own motion."""

    shape: _Shape
    anchor: np.ndarray  # (2,) x, y on the canvas
    velocity: np.ndarray  # (2,) own drift per frame, canvas pixels (enter/leave)
    t_ref: float
    wobble: np.ndarray  # (2,) amplitude, canvas pixels
    wobble_freq: float
    wobble_phase: np.ndarray
    scale_amp: float
    scale_freq: float
    scale_phase: float
    rot_amp: float
    rot_freq: float
    morph: float  # phase drift of the outline harmonics per frame
    instance: int  # index within the video; made dataset-unique when the JSON is written


@dataclass
class _VideoSpec:
    index: int
    name: str
    split: str
    negative: bool
    preset: str
    frames: int
    size: int
    seed: int
    degradation_rate: float
    two_classes: bool
    out: Path


@dataclass
class _Camera:
    centre: np.ndarray  # [F, 2] x, y canvas coordinates seen at the frame centre
    zoom: np.ndarray  # [F] frame pixels per canvas pixel


def _smooth(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean unit-std random field with correlation length ~``sigma`` pixels.

    Drawn on a coarse grid and upsampled, which is far cheaper than a wide Gaussian filter.
    """
    step = max(1.0, sigma / 2.0)
    coarse = (int(math.ceil(shape[0] / step)) + 4, int(math.ceil(shape[1] / step)) + 4)
    field_ = ndimage.gaussian_filter(rng.standard_normal(coarse), 1.0, mode="wrap")
    up = ndimage.zoom(field_, step, order=3, mode="grid-wrap", grid_mode=True)[: shape[0], : shape[1]]
    up = up - up.mean()
    return up / (up.std() + 1e-8)


def _speckle(rng: np.random.Generator, shape: tuple[int, int], grain: float) -> np.ndarray:
    """Fully developed speckle intensity: |correlated complex Gaussian|^2, mean 1 (exponential)."""
    re = ndimage.gaussian_filter(rng.standard_normal(shape), grain)
    im = ndimage.gaussian_filter(rng.standard_normal(shape), grain)
    s = re * re + im * im
    return s / s.mean()


def _make_camera(rng: np.random.Generator, spec: _VideoSpec, canvas: int) -> _Camera:
    """Smooth sinusoidal sweep (a probe sliding / an endoscope drifting) plus a slow zoom."""
    size, n = spec.size, spec.frames
    t = np.arange(n, dtype=np.float64)
    us = spec.preset == "ultrasound"
    zoom_amp = rng.uniform(0.0, 0.05 if us else 0.1)
    zoom = rng.uniform(0.95, 1.05) * (
        1.0 + zoom_amp * np.sin(rng.uniform(0.02, 0.08) * t + rng.uniform(0, 2 * np.pi))
    )
    margin = canvas / 2 - size / (2 * zoom.min()) - 2
    centre = np.empty((n, 2))
    for axis in range(2):
        amp_frac = rng.uniform(0.05, 0.22) if (axis == 0 or not us) else rng.uniform(0.0, 0.03)
        amp = min(margin, amp_frac * size)
        speed = rng.uniform(0.15, 0.7) * size / 128
        omega = speed / max(amp, 1e-6)
        centre[:, axis] = canvas / 2 + amp * np.sin(omega * t + rng.uniform(0, 2 * np.pi))
    return _Camera(centre=centre, zoom=zoom)


def _make_shape(
    rng: np.random.Generator, preset: str, size: int, two_classes: bool, scale: float = 1.0
) -> _Shape:
    """Random lesion outline; box sides land roughly in 10-35% of the frame side."""
    r0 = math.exp(rng.uniform(math.log(0.055), math.log(0.15))) * size * scale
    if preset == "ultrasound":
        malignant = rng.random() < 0.45
        category = 2 if two_classes and malignant else 1
        subtype = "malignant" if malignant else "benign"
        if malignant:
            # Taller than wide, spiculated, ill-defined, darker, posterior shadowing.
            aspect = rng.uniform(0.62, 0.85)
            angle = rng.normal(0.0, 0.15)
            k = np.array([2, 3, rng.integers(7, 10), rng.integers(11, 15)])
            amp = np.array(
                [
                    rng.uniform(0.03, 0.08),
                    rng.uniform(0.03, 0.07),
                    rng.uniform(0.06, 0.1),
                    rng.uniform(0.04, 0.08),
                ]
            )
            soft, soft_var = rng.uniform(0.08, 0.14), rng.uniform(0.3, 0.7)
            depth, posterior = rng.uniform(0.7, 0.85), -rng.uniform(0.25, 0.45)
        else:
            # Wider than tall ("parallel"), smooth circumscribed margin, posterior enhancement.
            aspect = rng.uniform(1.25, 1.7)
            angle = rng.normal(0.0, 0.2)
            k = np.array([2, 3, 4])
            amp = np.array([rng.uniform(0.0, 0.06), rng.uniform(0.0, 0.05), rng.uniform(0.0, 0.03)])
            soft, soft_var = rng.uniform(0.04, 0.08), rng.uniform(0.0, 0.4)
            depth, posterior = rng.uniform(0.65, 0.82), rng.uniform(0.2, 0.4)
        tint = np.ones(3)
    else:
        category, subtype = 1, "polyp"
        aspect = rng.uniform(0.8, 1.3)
        angle = rng.uniform(0, np.pi)
        k = np.array([2, 3, 5])
        amp = np.array([rng.uniform(0.0, 0.08), rng.uniform(0.0, 0.06), rng.uniform(0.0, 0.04)])
        soft, soft_var = rng.uniform(0.05, 0.1), rng.uniform(0.0, 0.5)
        depth, posterior = 0.0, 0.0
        # Polyps are paler/whiter or redder than the mucosa around them.
        tint = np.array([1.0, 1.0, 1.0]) + (
            rng.uniform([0.0, 0.08, 0.1], [0.1, 0.22, 0.25])
            if rng.random() < 0.6
            else rng.uniform([0.02, -0.3, -0.3], [0.12, -0.15, -0.15])
        )
    a, b = r0 * math.sqrt(aspect), r0 / math.sqrt(aspect)
    return _Shape(
        a=a,
        b=b,
        angle=angle,
        k=k.astype(np.float64),
        amp=amp,
        phase=rng.uniform(0, 2 * np.pi, len(k)),
        soft=soft,
        soft_var=soft_var,
        soft_phase=rng.uniform(0, 2 * np.pi),
        category=category,
        depth=depth,
        posterior=posterior,
        tint=tint,
        subtype=subtype,
    )


def _make_tracks(rng: np.random.Generator, spec: _VideoSpec, cam: _Camera) -> list[_Track]:
    """0 (negative video), 1 (most videos) or 2 lesions; each either stays in view or passes through."""
    if spec.negative:
        return []
    size, n = spec.size, spec.frames
    count = 2 if rng.random() < 0.2 else 1
    tracks: list[_Track] = []
    t = np.arange(n, dtype=np.float64)
    us = spec.preset == "ultrasound"
    for j in range(count):
        shape = _make_shape(rng, spec.preset, size, spec.two_classes, scale=0.85 if count == 2 else 1.0)
        transient = rng.random() < (0.35 if j == 0 else 0.6)
        track = None
        for _ in range(30):
            t_ref = float(rng.uniform(0, n - 1))
            lo_y, hi_y = (0.3, 0.72) if us else (0.22, 0.78)
            target = np.array([rng.uniform(0.22, 0.78), rng.uniform(lo_y, hi_y)]) * size
            if transient:
                direction = (
                    rng.uniform(0, 2 * np.pi) if not us else rng.choice([0.0, np.pi]) + rng.normal(0, 0.2)
                )
                speed = rng.uniform(0.7, 1.3) * size / max(n, 1)
                velocity = speed * np.array([math.cos(direction), math.sin(direction)])
            else:
                velocity = np.zeros(2)
            wobble = rng.uniform(0.0, 0.025, 2) * size
            track = _Track(
                shape=shape,
                anchor=np.zeros(2),
                velocity=velocity,
                t_ref=t_ref,
                wobble=wobble,
                wobble_freq=rng.uniform(0.05, 0.2),
                wobble_phase=rng.uniform(0, 2 * np.pi, 2),
                scale_amp=rng.uniform(0.0, 0.12),
                scale_freq=rng.uniform(0.01, 0.05),
                scale_phase=rng.uniform(0, 2 * np.pi),
                rot_amp=rng.uniform(0.0, 0.12),
                rot_freq=rng.uniform(0.01, 0.05),
                morph=rng.uniform(0.0, 0.01),
                instance=j,
            )
            k = int(round(t_ref))
            track.anchor = (
                (target - size / 2) / cam.zoom[k] + cam.centre[k] - _own_motion(track, np.array([t_ref]))[0]
            )
            centres = _track_centres(track, cam, t, size)
            inside = np.all((centres > 0.12 * size) & (centres < 0.88 * size), axis=1)
            apart = all(
                np.min(np.linalg.norm(centres - _track_centres(o, cam, t, size), axis=1))
                > 1.3 * (max(shape.a, shape.b) + max(o.shape.a, o.shape.b))
                for o in tracks
            )
            if apart and (transient or inside.all()):
                break
        assert track is not None
        tracks.append(track)
    return tracks


def _own_motion(track: _Track, t: np.ndarray) -> np.ndarray:
    """[len(t), 2] own displacement (canvas pixels): straight drift plus a small wobble."""
    drift = (t[:, None] - track.t_ref) * track.velocity[None, :]
    wob = track.wobble[None, :] * np.sin(track.wobble_freq * t[:, None] + track.wobble_phase[None, :])
    return drift + wob


def _track_centres(track: _Track, cam: _Camera, t: np.ndarray, size: int) -> np.ndarray:
    """[len(t), 2] lesion centre x, y in frame pixels: tissue point seen through the camera."""
    idx = t.astype(int)
    world = track.anchor[None, :] + _own_motion(track, t)
    return (world - cam.centre[idx]) * cam.zoom[idx][:, None] + size / 2


@dataclass
class _Lesion:
    """One lesion as seen in one frame (frame pixels)."""

    track: _Track | None
    cx: float
    cy: float
    a: float
    b: float
    angle: float
    phase: np.ndarray
    shape: _Shape

    def boundary(self, n: int = 256) -> np.ndarray:
        """[n, 2] x, y points of the ``rho = 1`` outline."""
        phi = np.linspace(0, 2 * np.pi, n, endpoint=False)
        h = 1.0 + np.sum(
            self.shape.amp[:, None] * np.cos(self.shape.k[:, None] * phi + self.phase[:, None]), axis=0
        )
        u, v = h * np.cos(phi) * self.a, h * np.sin(phi) * self.b
        c, s = math.cos(self.angle), math.sin(self.angle)
        return np.stack([self.cx + c * u - s * v, self.cy + s * u + c * v], axis=1)

    def reach(self) -> float:
        return max(self.a, self.b) * (1.0 + float(np.abs(self.shape.amp).sum()))

    def field(
        self, size: int, reach_factor: float = 1.8
    ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
        """Normalised radius ``rho`` (1 on the outline) and angle ``phi`` over a window of the frame."""
        reach = self.reach() * reach_factor
        x0, x1 = max(0, int(math.floor(self.cx - reach))), min(size, int(math.ceil(self.cx + reach)) + 1)
        y0, y1 = max(0, int(math.floor(self.cy - reach))), min(size, int(math.ceil(self.cy + reach)) + 1)
        if x0 >= x1 or y0 >= y1:
            return None
        dx = (np.arange(x0, x1) + 0.5 - self.cx)[None, :]
        dy = (np.arange(y0, y1) + 0.5 - self.cy)[:, None]
        c, s = math.cos(self.angle), math.sin(self.angle)
        u = (c * dx + s * dy) / self.a
        v = (-s * dx + c * dy) / self.b
        phi = np.arctan2(v, u)
        h = 1.0 + np.sum(
            self.shape.amp[:, None, None]
            * np.cos(self.shape.k[:, None, None] * phi[None] + self.phase[:, None, None]),
            axis=0,
        )
        return (slice(y0, y1), slice(x0, x1)), np.hypot(u, v) / h, phi

    def mask(self, rho: np.ndarray, phi: np.ndarray) -> np.ndarray:
        """Soft mask in [0, 1], 0.5 on the outline; softer where the margin is ill-defined."""
        soft = self.shape.soft * (1.0 + self.shape.soft_var * np.cos(phi - self.shape.soft_phase))
        return expit(-(rho - 1.0) / np.maximum(soft, 1e-3))


def _lesion_at(track: _Track, cam: _Camera, t: int, size: int) -> _Lesion:
    centre = _track_centres(track, cam, np.array([float(t)]), size)[0]
    scale = cam.zoom[t] * (1.0 + track.scale_amp * math.sin(track.scale_freq * t + track.scale_phase))
    angle = track.shape.angle + track.rot_amp * math.sin(track.rot_freq * t)
    phase = track.shape.phase + track.morph * t
    return _Lesion(
        track,
        float(centre[0]),
        float(centre[1]),
        track.shape.a * scale,
        track.shape.b * scale,
        angle,
        phase,
        track.shape,
    )


def _box_info(lesion: _Lesion, size: int) -> tuple[np.ndarray, float, bool]:
    """(clipped x1,y1,x2,y2 box, fraction of the lesion's area inside the frame, truncated)."""
    pts = lesion.boundary()
    x1, y1 = pts.min(axis=0)
    x2, y2 = pts.max(axis=0)
    area = 0.5 * abs(
        float(np.dot(pts[:, 0], np.roll(pts[:, 1], 1)) - np.dot(pts[:, 1], np.roll(pts[:, 0], 1)))
    )
    truncated = bool(x1 < 0 or y1 < 0 or x2 > size or y2 > size)
    box = np.clip(np.array([x1, y1, x2, y2]), 0, size)
    if not truncated:
        return box, 1.0, False
    f = lesion.field(size, reach_factor=1.05)
    inside = 0.0 if f is None else float((f[1] < 1.0).sum())
    return box, min(1.0, inside / max(area, 1e-6)), True


# --------------------------------------------------------------------------------------------
# Degradation schedule


def _schedule(rng: np.random.Generator, n: int, rate: float, lesion_in_view: np.ndarray) -> list[str]:
    """One label per frame: bursts of 1-2 degraded frames separated by clean frames.

    The number of degraded frames is Binomial(n, rate); bursts are separated by at least one
    clean frame whenever there are enough clean frames for that.
    """
    labels = ["none"] * n
    n_deg = int(rng.binomial(n, rate)) if rate > 0 else 0
    if n_deg == 0:
        return labels
    lengths: list[int] = []
    while sum(lengths) < n_deg:
        lengths.append(min(int(rng.integers(1, 3)), n_deg - sum(lengths)))
    clean = n - n_deg
    separators = len(lengths) - 1 if clean >= len(lengths) - 1 else 0
    spare = clean - separators
    cuts = np.sort(rng.integers(0, spare + 1, size=len(lengths)))
    gaps = np.diff(np.concatenate([[0], cuts, [spare]]))
    gaps[1:-1] += 1 if separators else 0
    names = list(_DEGRADATION_WEIGHTS)
    weights = np.array([_DEGRADATION_WEIGHTS[k] for k in names])
    pos = int(gaps[0])
    for i, length in enumerate(lengths):
        kind = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        for j in range(length):
            frame_kind = kind
            if kind == "distractor" and j > 0:
                # A look-alike lasts one frame: draw from the generic types before "distractor" (last).
                frame_kind = _GENERIC[int(rng.integers(0, len(_GENERIC) - 1))]
            if frame_kind in _NEEDS_LESION and not lesion_in_view[pos + j]:
                frame_kind = _GENERIC[int(rng.integers(0, len(_GENERIC)))]
            labels[pos + j] = frame_kind
        pos += length + int(gaps[i + 1])
    return labels


def _motion_blur(img: np.ndarray, length: float, angle: float) -> np.ndarray:
    """Convolve [H, W, C] with a line kernel of ``length`` pixels at ``angle``."""
    k = int(math.ceil(length)) | 1
    kernel = np.zeros((k, k))
    c = (k - 1) / 2
    for s in np.linspace(-length / 2, length / 2, 4 * k):
        kernel[int(round(c + s * math.sin(angle))), int(round(c + s * math.cos(angle)))] += 1
    kernel /= kernel.sum()
    return np.stack(
        [ndimage.convolve(img[..., ch], kernel, mode="nearest") for ch in range(img.shape[2])], axis=2
    )


def _occluder(lesion: _Lesion, size: int, rng: np.random.Generator, column: bool) -> np.ndarray:
    """[H, W] soft mask covering ~35-65% of the lesion (the rest stays visible).

    ``column``: a vertical band through the whole frame (ultrasound contact-loss shadow); else a
    rod with a rounded tip coming in from the frame border (an instrument).
    """
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    f = lesion.field(size, reach_factor=1.0)
    target = rng.uniform(0.35, 0.65)
    if f is None:
        return np.zeros((size, size))
    sl, rho, _ = f
    inside = rho < 1.0
    width = 2 * lesion.reach()
    if column:
        side = rng.choice([-1.0, 1.0])
        band = rng.uniform(0.6, 1.0) * width
        candidates = np.linspace(-1.0, 1.0, 41) * width

        def region(off: float) -> np.ndarray:
            edge = lesion.cx + side * off
            return (side * (xx - edge) > 0) & (side * (xx - edge) < band)
    else:
        theta = rng.uniform(0, 2 * np.pi)
        n = np.array([math.cos(theta), math.sin(theta)])
        rod = rng.uniform(0.8, 1.2) * width
        along = (xx - lesion.cx) * n[0] + (yy - lesion.cy) * n[1]
        perp = -(xx - lesion.cx) * n[1] + (yy - lesion.cy) * n[0]
        candidates = np.linspace(-1.0, 1.0, 41) * width / 2

        def region(off: float) -> np.ndarray:
            tip = np.hypot(along - off, perp) < rod / 2
            return ((along > off) & (np.abs(perp) < rod / 2)) | tip

    best, best_err = None, 2.0
    for off in candidates:
        r = region(float(off))
        frac = float(r[sl][inside].mean()) if inside.any() else 0.0
        if abs(frac - target) < best_err:
            best, best_err = r, abs(frac - target)
    assert best is not None
    return ndimage.gaussian_filter(best.astype(np.float64), 0.8)


# --------------------------------------------------------------------------------------------
# Presets: textures, lesion appearance, degradations


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


def _add_spot(img: np.ndarray, centre: tuple[float, float], sigma: float, peak: float) -> None:
    """Add a small white Gaussian highlight to [H, W, C] in place."""
    size = img.shape[0]
    x, y = centre
    r = int(math.ceil(3 * sigma)) + 1
    x0, x1, y0, y1 = (
        max(0, int(x) - r),
        min(size, int(x) + r + 1),
        max(0, int(y) - r),
        min(size, int(y) + r + 1),
    )
    if x0 >= x1 or y0 >= y1:
        return
    dx = np.arange(x0, x1) + 0.5 - x
    dy = np.arange(y0, y1)[:, None] + 0.5 - y
    g = peak * np.exp(-(dx[None, :] ** 2 + dy**2) / (2 * sigma**2))
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] + g[..., None] * (1.0 - img[y0:y1, x0:x1])


def _warp(canvas: np.ndarray, cam: _Camera, t: int, size: int) -> np.ndarray:
    """The camera's view of the canvas at frame ``t``: [size, size(, C)], bilinear."""
    z = float(cam.zoom[t])
    cx, cy = cam.centre[t]
    off_y = cy - 0.5 + (0.5 - size / 2) / z
    off_x = cx - 0.5 + (0.5 - size / 2) / z
    if canvas.ndim == 2:
        return ndimage.affine_transform(
            canvas, [1 / z, 1 / z], offset=[off_y, off_x], output_shape=(size, size), order=1, mode="nearest"
        )
    return np.stack(
        [
            ndimage.affine_transform(
                canvas[..., c],
                [1 / z, 1 / z],
                offset=[off_y, off_x],
                output_shape=(size, size),
                order=1,
                mode="nearest",
            )
            for c in range(canvas.shape[2])
        ],
        axis=2,
    )


# --------------------------------------------------------------------------------------------
# One video


def _contrast(img: np.ndarray, lesion: _Lesion, size: int) -> float | None:
    """Lesion-vs-surround contrast: |mean inside - mean of ring| / pooled std (colour norm)."""
    f = lesion.field(size, reach_factor=2.0)
    if f is None:
        return None
    sl, rho, _ = f
    inner, ring = rho < 0.8, (rho > 1.25) & (rho < 1.9)
    if inner.sum() < 4 or ring.sum() < 8:
        return None
    patch = img[sl]
    diff = patch[inner].mean(axis=0) - patch[ring].mean(axis=0)
    std = math.sqrt(float((patch[inner].var(axis=0) + patch[ring].var(axis=0)).mean() / 2))
    return float(np.linalg.norm(diff) / (std + 0.02))  # the floor keeps flat frames from scoring high


def _render_video(spec: _VideoSpec) -> dict[str, Any]:
    """Draw and write one video's frames; return its per-frame records (ids assigned later)."""
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(spec.index,)))
    size, n = spec.size, spec.frames
    canvas = int(math.ceil(2 * (0.22 * size + size / (2 * 0.85) + 4)))
    preset = (
        _Ultrasound(rng, size, canvas) if spec.preset == "ultrasound" else _Colonoscopy(rng, size, canvas)
    )
    cam = _make_camera(rng, spec, canvas)
    tracks = _make_tracks(rng, spec, cam)

    # Geometry first: which lesions are in view decides where occlusion/hopeless can go.
    per_frame: list[list[tuple[_Lesion, np.ndarray, float, bool]]] = []
    for t in range(n):
        views = []
        for track in tracks:
            lesion = _lesion_at(track, cam, t, size)
            box, frac, truncated = _box_info(lesion, size)
            views.append((lesion, box, frac, truncated))
        per_frame.append(views)
    in_view = np.array([any(v[2] >= MIN_VISIBLE_FRACTION for v in views) for views in per_frame])
    labels = _schedule(rng, n, spec.degradation_rate, in_view)

    folder = spec.out / "frames" / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for t in range(n):
        kind = labels[t]
        base, speckle = preset.base(cam, t, rng)
        kept = [v for v in per_frame[t] if v[2] >= MIN_VISIBLE_FRACTION]
        dropped = [v for v in per_frame[t] if 0 < v[2] < MIN_VISIBLE_FRACTION]
        for lesion, *_ in per_frame[t]:
            if isinstance(preset, _Ultrasound):
                preset.add_lesion(base, lesion)
            else:
                preset.add_lesion(base, lesion, rng)
        distractor_box = None
        if kind == "distractor":
            distractor = _place_distractor(rng, spec, per_frame[t])
            if distractor is None:
                kind = "noise"
            else:
                if isinstance(preset, _Ultrasound):
                    preset.add_lesion(base, distractor)
                else:
                    preset.add_lesion(base, distractor, rng)
                distractor_box = _box_info(distractor, size)[0]
        if isinstance(preset, _Ultrasound):
            img = preset.render(base, speckle)
        else:
            img = preset.render(base, cam, t, rng)
        occluded_instance = None
        occluder = None
        if kind == "occlusion":
            target = max(kept, key=lambda v: v[2] * v[0].a * v[0].b)
            occluder = _occluder(target[0], size, rng, column=isinstance(preset, _Ultrasound))
            occluded_instance = target[0].track.instance if target[0].track is not None else None
        img = preset.degrade(img, kind, rng, occluder)
        if img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
        pixels = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
        file_name = f"frames/{spec.name}/{t:06d}.png"
        Image.fromarray(pixels).save(spec.out / file_name, compress_level=6)
        annotations = []
        for lesion, box, frac, truncated in kept:
            assert lesion.track is not None
            x1, y1, x2, y2 = (round(float(v), 2) for v in box)
            annotations.append(
                {
                    "category_id": int(lesion.shape.category),
                    "subtype": lesion.shape.subtype,
                    "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
                    "area": round((x2 - x1) * (y2 - y1), 2),
                    "iscrowd": 0,
                    "track": lesion.track.instance,
                    "occluded": kind == "hopeless" or lesion.track.instance == occluded_instance,
                    "truncated": truncated,
                    "visible_fraction": round(frac, 3),
                }
            )
        contrasts = [
            c
            for v in kept
            if not v[3]
            for c in [_contrast(pixels.astype(np.float64) / 255, v[0], size)]
            if c is not None
        ]
        record: dict[str, Any] = {
            "file_name": file_name,
            "frame_id": t,
            "width": size,
            "height": size,
            "degradation": kind,
            "lesion_visible": bool(kept) and kind != "hopeless",
            "partial_lesions_dropped": len(dropped),
            "annotations": annotations,
            "contrast": contrasts,
        }
        if distractor_box is not None:
            x1, y1, x2, y2 = (round(float(v), 2) for v in distractor_box)
            record["distractor_bbox"] = [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)]
            record["distractor_cue"] = True  # it carries ``_look_alike``'s cue: one frame can reject it
        records.append(record)
    return {
        "name": spec.name,
        "split": spec.split,
        "negative": spec.negative,
        "tracks": len(tracks),
        "frames": records,
    }


def _look_alike(rng: np.random.Generator, shape: _Shape, preset: str) -> None:
    """Give a lesion-shaped blob the faint cue that tells a look-alike from a lesion in one frame.

    DESIGN section 4 asks for look-alikes that are hard but not hopeless: a blob drawn exactly as
    a lesion could only be rejected by its one-frame life, which no single-frame student can
    learn, however it is distilled. The cues are what such structures show in the clinic.
    Ultrasound: a fluid-filled duct or vessel in cross-section, anechoic (darker than almost
    every lesion), a thin echogenic wall, sharp margin and no posterior enhancement or shadowing.
    Colonoscopy: debris, yellow-brown where polyps are paler or redder than the mucosa.
    """
    if preset == "ultrasound":
        shape.depth = float(rng.uniform(0.84, 0.93))
        shape.posterior = 0.0
        shape.wall = float(rng.uniform(0.5, 0.9))
        shape.soft, shape.soft_var = float(rng.uniform(0.03, 0.05)), 0.0
    else:
        shape.tint = np.array([1.0, 1.0, 1.0]) + rng.uniform([0.0, -0.05, -0.38], [0.1, 0.05, -0.22])


def _place_distractor(rng: np.random.Generator, spec: _VideoSpec, views: list) -> _Lesion | None:
    """A one-frame look-alike, fully in view, clear of every real lesion (``_look_alike``)."""
    size = spec.size
    shape = _make_shape(rng, spec.preset, size, spec.two_classes)
    _look_alike(rng, shape, spec.preset)
    if views:
        # As large as the real lesion in this frame, give or take 30%.
        factor = math.sqrt(views[0][0].a * views[0][0].b / (shape.a * shape.b)) * rng.uniform(0.7, 1.3)
        shape.a, shape.b = shape.a * factor, shape.b * factor
    for _ in range(40):
        lo_y, hi_y = (0.25, 0.8) if spec.preset == "ultrasound" else (0.15, 0.85)
        lesion = _Lesion(
            None,
            float(rng.uniform(0.15, 0.85) * size),
            float(rng.uniform(lo_y, hi_y) * size),
            shape.a,
            shape.b,
            shape.angle,
            shape.phase,
            shape,
        )
        box, frac, truncated = _box_info(lesion, size)
        if truncated:
            continue
        clear = all(
            box[0] > other[1][2] + 3
            or box[2] < other[1][0] - 3
            or box[1] > other[1][3] + 3
            or box[3] < other[1][1] - 3
            for other in views
            if other[2] > 0
        )
        if clear:
            return lesion
    return None


# --------------------------------------------------------------------------------------------
# The dataset


def _check_args(
    preset: str,
    videos: int,
    frames: int,
    size: int,
    val_fraction: float,
    negative_video_fraction: float,
    degradation_rate: float,
    workers: int,
) -> None:
    checks = [
        (preset in PRESETS, "preset", f"{preset!r}: expected one of {', '.join(PRESETS)}"),
        (videos >= 1, "videos", f"{videos}: expected >= 1"),
        (frames >= 1, "frames", f"{frames}: expected >= 1"),
        (size >= 32, "size", f"{size}: expected >= 32 pixels"),
        (0.0 <= val_fraction < 1.0, "val_fraction", f"{val_fraction}: expected 0 <= value < 1"),
        (
            0.0 <= negative_video_fraction <= 1.0,
            "negative_video_fraction",
            f"{negative_video_fraction}: expected 0..1",
        ),
        (0.0 <= degradation_rate <= 1.0, "degradation_rate", f"{degradation_rate}: expected 0..1"),
        (workers >= 1, "workers", f"{workers}: expected >= 1"),
    ]
    for ok, name, message in checks:
        if not ok:
            raise ConfigError(f"synthetic generator option '{name}' = {message}")


def _plan_split(
    rng: np.random.Generator, videos: int, val_fraction: float, negative_fraction: float
) -> tuple[list[str], list[bool]]:
    """Split by video; each split gets its share of negative videos (at least one if it has >= 2)."""
    n_val = int(math.floor(videos * val_fraction + 0.5))
    if val_fraction > 0 and videos >= 2:
        n_val = min(max(n_val, 1), videos - 1)
    order = rng.permutation(videos)
    splits = ["train"] * videos
    for i in order[:n_val]:
        splits[int(i)] = "val"
    negative = [False] * videos
    for split in ("train", "val"):
        members = [i for i in range(videos) if splits[i] == split]
        n_neg = int(math.floor(len(members) * negative_fraction + 0.5))
        if negative_fraction > 0 and len(members) >= 2:
            n_neg = max(n_neg, 1)
        n_neg = min(n_neg, len(members) - 1 if negative_fraction < 1 and len(members) >= 2 else len(members))
        for i in rng.permutation(members)[:n_neg]:
            negative[int(i)] = True
    return splits, negative


def generate(
    out: Path,
    preset: str = "ultrasound",
    videos: int = 40,
    frames: int = 48,
    size: int = 128,
    seed: int = 0,
    val_fraction: float = 0.25,
    negative_video_fraction: float = 0.15,
    degradation_rate: float = 0.3,
    workers: int = 1,
    *,
    two_classes: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> SynthResult:
    """Write ``OUT/frames/<video>/<frame:06d>.png``, ``OUT/train.json`` and ``OUT/val.json``.

    The JSONs are COCO-VID, split by video, with ids unique across both files. Images carry
    ``degradation``, ``lesion_visible``, ``partial_lesions_dropped`` (and ``distractor_bbox`` on
    distractor frames); annotations carry ``instance_id``, ``occluded``, ``truncated`` and
    ``visible_fraction``; videos carry ``negative`` and ``split``. ``two_classes`` gives the
    ultrasound preset categories 1 "benign" and 2 "malignant" instead of 1 "lesion".
    Same arguments -> byte-identical output, whatever ``workers`` is.
    """
    _check_args(
        preset, videos, frames, size, val_fraction, negative_video_fraction, degradation_rate, workers
    )
    if two_classes and preset != "ultrasound":
        raise ConfigError(
            f"synthetic generator option 'two_classes' applies to the ultrasound preset, not {preset!r}"
        )
    out = Path(out)
    existing = [p for p in (out / "train.json", out / "val.json", out / "frames") if p.exists()]
    if existing and not overwrite:
        raise ConfigError(
            f"{out}: already holds {', '.join(p.name for p in existing)}; choose another folder or overwrite"
        )
    if (out / "frames").exists():
        shutil.rmtree(out / "frames")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    plan_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**31,)))
    splits, negative = _plan_split(plan_rng, videos, val_fraction, negative_video_fraction)
    specs = [
        _VideoSpec(
            i,
            f"{preset}_{i:04d}",
            splits[i],
            negative[i],
            preset,
            frames,
            size,
            seed,
            degradation_rate,
            two_classes,
            out,
        )
        for i in range(videos)
    ]
    bar = tqdm(total=videos, desc=f"synth {preset}", unit="video", disable=not progress)
    try:
        if workers == 1:
            results = []
            for spec in specs:
                results.append(_render_video(spec))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = []
                for r in pool.map(_render_video, specs):
                    results.append(r)
                    bar.update()
    except BaseException:  # interrupted or failed: no half-rendered frame folder is left behind
        shutil.rmtree(out / "frames", ignore_errors=True)
        raise
    finally:
        bar.close()

    categories = TWO_CLASS_CATEGORIES if two_classes else CATEGORIES[preset]
    info = {
        "description": f"v2idetr synthetic {preset} lesion videos",
        "generator": "v2idetr.data.synthetic",
        "version": GENERATOR_VERSION,
        "preset": preset,
        "seed": seed,
        "videos": videos,
        "frames": frames,
        "size": size,
        "val_fraction": val_fraction,
        "negative_video_fraction": negative_video_fraction,
        "degradation_rate": degradation_rate,
        "two_classes": two_classes,
        "degradations": list(DEGRADATIONS),
    }
    docs = {
        s: {
            "info": {**info, "split": s},
            "videos": [],
            "images": [],
            "annotations": [],
            "categories": categories,
        }
        for s in ("train", "val")
    }
    image_id, ann_id, instance_base = 1, 1, 0
    contrast: dict[str, list[float]] = {}
    for vid, result in enumerate(results, start=1):
        doc = docs[result["split"]]
        doc["videos"].append(
            {"id": vid, "name": result["name"], "negative": result["negative"], "split": result["split"]}
        )
        for rec in result["frames"]:
            image = {k: v for k, v in rec.items() if k not in ("annotations", "contrast")}
            doc["images"].append({"id": image_id, "video_id": vid, **image})
            contrast.setdefault(rec["degradation"], []).extend(rec["contrast"])
            for ann in rec["annotations"]:
                a = {k: v for k, v in ann.items() if k != "track"}
                doc["annotations"].append(
                    {"id": ann_id, "image_id": image_id, **a, "instance_id": instance_base + ann["track"] + 1}
                )
                ann_id += 1
            image_id += 1
        instance_base += result["tracks"]
    paths = {}
    for split, doc in docs.items():
        paths[split] = out / f"{split}.json"
        paths[split].write_text(json.dumps(doc, indent=1) + "\n")
    stats = {split: split_stats(doc) for split, doc in docs.items()}
    stats["lesion_contrast_median"] = {
        k: round(float(np.median(v)), 3) for k, v in sorted(contrast.items()) if v
    }
    stats["seconds"] = round(time.perf_counter() - started, 2)
    return SynthResult(out=out, train_json=paths["train"], val_json=paths["val"], stats=stats)


def split_stats(doc: dict[str, Any]) -> dict[str, Any]:
    """Counts for one COCO-VID dict: frames, boxes, negatives, degradations, visibility."""
    with_boxes = {a["image_id"] for a in doc["annotations"]}
    degradations = Counter(img.get("degradation", "none") for img in doc["images"])
    return {
        "videos": len(doc["videos"]),
        "negative_videos": sum(1 for v in doc["videos"] if v.get("negative")),
        "frames": len(doc["images"]),
        "boxes": len(doc["annotations"]),
        "negative_frames": sum(1 for img in doc["images"] if img["id"] not in with_boxes),
        "lesion_visible_frames": sum(1 for img in doc["images"] if img.get("lesion_visible")),
        "truncated_boxes": sum(1 for a in doc["annotations"] if a.get("truncated")),
        "degradations": {k: degradations.get(k, 0) for k in DEGRADATIONS},
    }


# --------------------------------------------------------------------------------------------
# Preview


def save_preview(json_path: Path, out_png: Path, max_frames: int = 32) -> Path:
    """Contact sheet of ``max_frames`` frames: boxes (green category 1, red category 2), the
    distractor (dashed yellow, not an annotation) and video, frame and degradation on each tile.

    The first row is consecutive frames of one positive video (motion, bursts); the rest covers
    every degradation type, then frames spread over the dataset.
    """
    json_path = Path(json_path)
    try:
        doc = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(Problem(str(json_path), "", "", f"cannot read a COCO-VID JSON: {exc}")) from exc
    images = sorted(doc["images"], key=lambda im: (im["video_id"], im["frame_id"]))
    if not images or max_frames < 1:
        raise DatasetError(Problem(str(json_path), "", "images", "no frames to preview"))
    boxes: dict[int, list[dict[str, Any]]] = {}
    for ann in doc["annotations"]:
        boxes.setdefault(ann["image_id"], []).append(ann)
    cols = 8
    chosen: list[dict[str, Any]] = []
    positive = [im for im in images if im["id"] in boxes]
    if positive:
        vid = positive[0]["video_id"]
        run = [im for im in images if im["video_id"] == vid]
        chosen.extend(run[: min(cols, max_frames)])
    for kind in DEGRADATIONS[1:]:
        picks = [im for im in images if im.get("degradation") == kind and im not in chosen]
        chosen.extend(
            picks[: 2 if kind in ("distractor", "occlusion") else 1][: max(0, max_frames - len(chosen))]
        )
    rest = [im for im in images if im not in chosen]
    need = max(0, max_frames - len(chosen))
    if need and rest:
        idx = np.linspace(0, len(rest) - 1, min(need, len(rest))).round().astype(int)
        chosen.extend(rest[i] for i in idx)
    chosen = chosen[:max_frames]
    w, h = max(im["width"] for im in chosen), max(im["height"] for im in chosen)
    scale = max(1, math.ceil(192 / max(w, h)))
    tw, th = w * scale, h * scale
    rows = math.ceil(len(chosen) / cols)
    sheet = Image.new("RGB", (cols * tw, rows * th), (30, 30, 30))
    font = ImageFont.load_default()
    colours = {1: (0, 230, 0), 2: (255, 60, 60)}
    for n, im in enumerate(chosen):
        tile = (
            Image.open(json_path.parent / im["file_name"])
            .convert("RGB")
            .resize((im["width"] * scale, im["height"] * scale), Image.NEAREST)
        )
        draw = ImageDraw.Draw(tile)
        for ann in boxes.get(im["id"], []):
            x, y, bw, bh = (v * scale for v in ann["bbox"])
            draw.rectangle(
                [x, y, x + bw, y + bh], outline=colours.get(ann["category_id"], (0, 200, 255)), width=2
            )
        if "distractor_bbox" in im:
            x, y, bw, bh = (v * scale for v in im["distractor_bbox"])
            _dashed_rectangle(draw, x, y, x + bw, y + bh, (255, 255, 0))
        label = f"v{im['video_id']} f{im['frame_id']} {im.get('degradation', '')}"
        draw.rectangle([0, 0, tw, 13], fill=(0, 0, 0))
        draw.text((2, 1), label, fill=(255, 255, 0), font=font)
        sheet.paste(tile, ((n % cols) * tw, (n // cols) * th))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return out_png


def _dashed_rectangle(
    draw: ImageDraw.ImageDraw, x1: float, y1: float, x2: float, y2: float, fill: tuple
) -> None:
    """Dashed outline, so the (unannotated) distractor is not mistaken for a box."""
    for (ax, ay), (bx, by) in (
        ((x1, y1), (x2, y1)),
        ((x2, y1), (x2, y2)),
        ((x2, y2), (x1, y2)),
        ((x1, y2), (x1, y1)),
    ):
        length = math.hypot(bx - ax, by - ay)
        for start in np.arange(0.0, length, 8.0):
            end = min(start + 4.0, length)
            f0, f1 = start / max(length, 1e-6), end / max(length, 1e-6)
            draw.line(
                (ax + (bx - ax) * f0, ay + (by - ay) * f0, ax + (bx - ax) * f1, ay + (by - ay) * f1),
                fill=fill,
                width=2,
            )
