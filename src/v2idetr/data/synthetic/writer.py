"""The dataset: checks the options, splits videos, renders them (in worker processes or not) and
writes the COCO-VID ``train.json``/``val.json`` with ids unique across both, plus their counts.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from v2idetr.data.synthetic.constants import (
    CATEGORIES,
    DEGRADATIONS,
    GENERATOR_VERSION,
    PRESETS,
    TWO_CLASS_CATEGORIES,
)
from v2idetr.data.synthetic.lesions import _VideoSpec
from v2idetr.data.synthetic.render import _render_video
from v2idetr.errors import ConfigError


@dataclass
class SynthResult:
    """Where the dataset went and what it holds (``stats[split]`` counts per split)."""

    out: Path
    train_json: Path
    val_json: Path
    stats: dict[str, Any] = field(default_factory=dict)


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
