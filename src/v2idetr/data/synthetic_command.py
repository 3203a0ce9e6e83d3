"""`v2idetr synth`: write a synthetic lesion-video dataset (COCO-VID) and optionally a preview."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from v2idetr.argtypes import non_negative_int, out_folder, positive_int
from v2idetr.data.archive import (
    ARCHIVE_FILE,
    ARCHIVE_FRAMES,
    ARCHIVE_SEED_OFFSET,
    remove_archive,
    synthetic_archive,
)
from v2idetr.data.synthetic import DEGRADATIONS, PRESETS, generate, save_preview
from v2idetr.data.unlabelled import all_labels_path, write_label_budget

log = logging.getLogger(__name__)


def _synth(args: argparse.Namespace) -> int:
    result = generate(
        Path(args.out),
        preset=args.preset,
        videos=args.videos,
        frames=args.frames,
        size=args.size,
        seed=args.seed,
        val_fraction=args.val_fraction,
        negative_video_fraction=args.negative_video_fraction,
        degradation_rate=args.degradation_rate,
        workers=args.workers,
        two_classes=args.two_classes,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    for split in ("train", "val"):
        s = result.stats[split]
        degradations = ", ".join(f"{k}={s['degradations'][k]}" for k in DEGRADATIONS)
        log.info(
            "%s: %d videos (%d negative), %d frames, %d boxes, %d negative frames, %d truncated boxes; "
            "degradations: %s",
            split,
            s["videos"],
            s["negative_videos"],
            s["frames"],
            s["boxes"],
            s["negative_frames"],
            s["truncated_boxes"],
            degradations,
        )
    log.info("median lesion contrast per degradation: %s", result.stats["lesion_contrast_median"])
    log.info("wrote %s and %s in %.1f s", result.train_json, result.val_json, result.stats["seconds"])
    if args.preview:
        path = save_preview(result.train_json, Path(args.out) / "preview.png")
        log.info("wrote %s", path)
    # train.json was just written with every label: full labels left by an earlier run are stale.
    all_labels_path(result.train_json).unlink(missing_ok=True)
    remove_archive(args.out)  # an archive left by an earlier run belongs to the data just replaced
    if args.unlabelled_videos:
        archive = synthetic_archive(
            args.out, args.preset, args.unlabelled_videos, args.frames, args.size, args.seed, overwrite=True,
            progress=not args.no_progress, negative_video_fraction=args.negative_video_fraction,
            degradation_rate=args.degradation_rate, workers=args.workers, two_classes=args.two_classes,
        )
        log.info("archive: %d unlabelled videos in %s (generator seed %d; distil with data.unlabelled=%s)",
                 args.unlabelled_videos, archive, args.seed + ARCHIVE_SEED_OFFSET, archive)
    if args.label_every > 1:
        full = write_label_budget(result.train_json, args.label_every)
        log.info(
            "label budget: %s keeps the labels of 1 frame in %d (every frame's: %s); %s stays fully labelled",
            result.train_json,
            args.label_every,
            full,
            result.val_json,
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="generate a synthetic lesion-video dataset (COCO-VID)",
        description=(
            "Write OUT/frames/<video>/<frame>.png, OUT/train.json and OUT/val.json (split by video): "
            "temporally coherent lesions under camera motion, negative videos and frames, and per-frame "
            "degradations (noise, blur, low contrast, over-exposure, partial occlusion, one-frame "
            "distractors, a few hopeless frames). Same arguments -> identical output."
        ),
    )
    p.add_argument(
        "--preset", choices=PRESETS, default="ultrasound", help="image family (default: ultrasound)"
    )
    p.add_argument("--videos", type=positive_int, default=40, help="number of videos (default: 40)")
    p.add_argument("--frames", type=positive_int, default=48, help="frames per video (default: 48)")
    p.add_argument("--size", type=positive_int, default=128, help="frame side in pixels (default: 128)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    p.add_argument("--out", type=out_folder, required=True, help="output folder (must not already hold a dataset)")
    p.add_argument(
        "--val-fraction", type=float, default=0.25, help="share of videos in val.json (default: 0.25)"
    )
    p.add_argument(
        "--negative-video-fraction",
        type=float,
        default=0.15,
        help="share of videos without any lesion, per split (default: 0.15)",
    )
    p.add_argument(
        "--degradation-rate", type=float, default=0.3, help="share of degraded frames (default: 0.3)"
    )
    p.add_argument("--workers", type=positive_int, default=1, help="processes; the output does not depend on it")
    p.add_argument(
        "--two-classes",
        action="store_true",
        help="ultrasound only: categories 1 benign / 2 malignant instead of one 'lesion' category",
    )
    p.add_argument(
        "--label-every",
        type=positive_int,
        default=1,
        metavar="K",
        help=(
            "label budget: train.json keeps the labels of 1 frame in K per video (the middle of each run of K), "
            "the others are unlabelled; every label stays in train-all-labels.json. val.json stays fully "
            "labelled, because it chooses checkpoints (default: 1, every frame labelled)"
        ),
    )
    p.add_argument(
        "--unlabelled-videos",
        type=non_negative_int,
        default=0,
        metavar="N",
        help=(
            f"also write N videos nobody labelled (an archive: OUT/{ARCHIVE_FILE}, every frame 'labelled': false, "
            f"frames in OUT/{ARCHIVE_FRAMES}/) from generator seed --seed + {ARCHIVE_SEED_OFFSET}, for "
            "`v2idetr distill ... data.unlabelled=OUT/unlabelled.json` (default: 0)"
        ),
    )
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    p.add_argument("--preview", action="store_true", help="also write OUT/preview.png (contact sheet)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    p.set_defaults(func=_synth)
