"""The demo report's pictures and HTML: training curves, PR curves, a contact sheet of degraded
frames where two models disagree, and an annotated video.

Everything here reads what training and evaluation already wrote (``metrics.jsonl``, checkpoints,
the dataset) and writes files atomically; nothing retrains or re-scores.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from v2idetr.atomic import atomic_write, atomic_write_text
from v2idetr.data.index import DatasetIndex, FrameRecord
from v2idetr.data.io import read_frame
from v2idetr.deploy.predict import predict
from v2idetr.deploy.runtime import Detections, Detector
from v2idetr.deploy.video import GROUND_TRUTH_COLOUR, draw_boxes
from v2idetr.engine.metrics import match_frame

MISSED_COLOUR = (255, 60, 60)
FOUND_COLOUR = (0, 230, 0)


def _records(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def plot_training_curves(runs: Mapping[str, Path], out_png: str | Path) -> Path:
    """Detection loss (``loss_det`` for distilled runs, else ``loss``) and validation AP50 per step."""
    fig = Figure(figsize=(10, 4), dpi=100)
    loss_ax, ap_ax = fig.subplots(1, 2)
    for name, run in runs.items():
        records = _records(run)
        train = [r for r in records if r["type"] == "train"]
        if train:
            key = "loss_det" if "loss_det" in train[0] else "loss"
            loss_ax.plot([r["step"] for r in train], [r[key] for r in train], label=name, linewidth=1)
        evals = [r for r in records if r["type"] == "eval" and r.get("AP50") is not None]
        if evals:
            ap_ax.plot([r["step"] for r in evals], [r["AP50"] for r in evals], marker="o", label=name)
    loss_ax.set(xlabel="step", ylabel="detection loss", title="Training loss", yscale="log")
    ap_ax.set(xlabel="step", ylabel="AP50", title="Validation AP50", ylim=(0.0, 1.0))
    for ax in (loss_ax, ap_ax):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    return atomic_write(out_png, lambda p: fig.savefig(p, format="png"))


def _tile(frame: FrameRecord, pixels: np.ndarray, det: Detections, name: str, hits: int, scale: int) -> Image.Image:
    drawn = draw_boxes(pixels, frame.boxes, GROUND_TRUTH_COLOUR, line_width=1)
    colour = FOUND_COLOUR if hits == len(frame.boxes) else MISSED_COLOUR
    drawn = draw_boxes(drawn, det.boxes, colour, line_width=1)
    tile = Image.fromarray(drawn).resize((pixels.shape[1] * scale, pixels.shape[0] * scale), Image.NEAREST)
    draw = ImageDraw.Draw(tile)
    draw.rectangle([0, 0, tile.width, 12], fill=(0, 0, 0))
    draw.text((2, 0), f"{name}: {hits}/{len(frame.boxes)} found, {len(det)} boxes", fill=(255, 255, 0),
              font=ImageFont.load_default())
    return tile


def disagreement_sheet(
    index: DatasetIndex,
    detectors: Mapping[str, Detector],
    out_png: str | Path,
    max_rows: int = 8,
) -> tuple[Path | None, int]:
    """Degraded frames (per the synthetic ``degradation`` field) where two image models find a
    different number of lesions: one row per frame, one column per model. Ground truth is white;
    a model's boxes are green when it found every lesion, red otherwise. Frames where the second
    model finds more come first. Returns the PNG (None if the models never disagree) and how many
    frames disagree."""
    (name_a, det_a), (name_b, det_b) = list(detectors.items())[:2]
    frames = [f for v in index.videos for f in v.frames if f.degradation not in (None, "none") and len(f.boxes)]
    rows: list[tuple[int, FrameRecord, np.ndarray, Detections, Detections, int, int]] = []
    for start in range(0, len(frames), 16):
        chunk = frames[start : start + 16]
        pixels = [read_frame(f) for f in chunk]
        for f, px, a, b in zip(chunk, pixels, det_a.predict_frames(pixels), det_b.predict_frames(pixels), strict=True):
            hits = [int(match_frame(f.image_id, d.boxes, d.scores, f.boxes, det_a.protocol).gt_hit.sum()) for d in (a, b)]
            if hits[0] != hits[1]:
                rows.append((hits[0] - hits[1], f, px, a, b, hits[0], hits[1]))
    if not rows:
        return None, 0
    rows.sort(key=lambda r: (r[0], r[1].image_id))
    shown = rows[:max_rows]
    h, w = max(r[2].shape[0] for r in shown), max(r[2].shape[1] for r in shown)
    scale = max(1, math.ceil(160 / max(h, w)))
    label_w = 150
    sheet = Image.new("RGB", (label_w + 2 * w * scale, len(shown) * h * scale), (30, 30, 30))
    draw = ImageDraw.Draw(sheet)
    for i, (_, frame, px, a, b, hits_a, hits_b) in enumerate(shown):
        y = i * h * scale
        draw.text((4, y + 4), f"video {frame.video_id}\nframe {frame.frame_id}\n{frame.degradation}",
                  fill=(255, 255, 255), font=ImageFont.load_default())
        sheet.paste(_tile(frame, px, a, name_a, hits_a, scale), (label_w, y))
        sheet.paste(_tile(frame, px, b, name_b, hits_b, scale), (label_w + w * scale, y))
    path = atomic_write(out_png, lambda p: sheet.save(p, format="PNG"))
    return path, len(rows)


def annotated_video(detector: Detector, index: DatasetIndex, out_dir: str | Path, fps: float = 10.0) -> Path:
    """The model's boxes drawn on ``index``'s video with the most degraded frames, as an mp4."""
    video = max(index.videos, key=lambda v: (sum(f.degradation not in (None, "none") for f in v.frames),
                                             sum(len(f.boxes) for f in v.frames)))
    one = replace(index, videos=[video])
    result = predict(detector, one, out_dir, save_video=True, fps=fps, progress=False)
    return result.videos[0]


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def markdown_tables_to_html(markdown: str) -> str:
    """The demo's markdown (paragraphs, pipe tables, ``![](img)`` images, ``# `` headings) as HTML."""
    out: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append([c.strip() for c in lines[i].strip("|").split("|")])
                i += 1
            out.append(_html_table(block[0], [r for r in block[1:] if not set("".join(r)) <= set("-: ")]))
            continue
        if line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            out.append(f'<p><img src="{html.escape(src.rstrip(")"))}" alt="{html.escape(alt)}"></p>')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
        i += 1
    return "\n".join(out)


def write_html(markdown: str, out_html: str | Path, title: str) -> Path:
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}th{background:#eee}img{max-width:100%}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n{markdown_tables_to_html(markdown)}\n</body></html>\n")
    return atomic_write_text(out_html, page)
