"""Where degradations go: the per-frame schedule, the occluder's mask, look-alike distractors.

The schedule decides each frame's ``DEGRADATIONS`` label (bursts with clean frames around them);
occluders and distractors are placed relative to the frame's real lesions. How a degradation looks
in the pixels is the preset's (``presets``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from v2idetr.data.synthetic.constants import _DEGRADATION_WEIGHTS, _GENERIC, _NEEDS_LESION
from v2idetr.data.synthetic.lesions import _box_info, _Lesion, _make_shape, _Shape, _VideoSpec


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
