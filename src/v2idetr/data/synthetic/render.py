"""One video: plan it, draw and write its frames, and return its per-frame records.

``_render_video`` is the unit of work ``generate`` hands to worker processes, so it stays a
module-level function (picklable) that depends only on its ``_VideoSpec``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

from v2idetr.data.synthetic.constants import MIN_VISIBLE_FRACTION
from v2idetr.data.synthetic.degradations import _occluder, _place_distractor, _schedule
from v2idetr.data.synthetic.lesions import (
    _box_info,
    _Lesion,
    _lesion_at,
    _make_camera,
    _make_tracks,
    _VideoSpec,
)
from v2idetr.data.synthetic.presets import _Colonoscopy, _Ultrasound


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
