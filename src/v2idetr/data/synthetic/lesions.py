"""The plan of one video: its spec, the camera's path, lesion shapes and tracks, per-frame geometry.

Everything random about a video's motion is drawn up front from the video's generator, then
rendered. ``_Lesion`` is one lesion as seen in one frame (outline, soft mask); ``_box_info`` turns
it into the annotated box and the share of it inside the frame. No pixels are drawn here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import expit


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
