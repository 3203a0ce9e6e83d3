"""A contact sheet of a written dataset's frames with their boxes, for a person to look at.

It reads only the COCO-VID JSON and the frames, so it previews any dataset in that layout.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from v2idetr.data.synthetic.constants import DEGRADATIONS
from v2idetr.errors import DatasetError, Problem


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
