"""`v2idetr pseudo-label`: a teacher's detections as labels on the frames nobody labelled
(`data.pseudo_labels`). A command of its own, above the API, because it runs a model, as `eval` does."""

from __future__ import annotations

import argparse
import logging

from v2idetr import api
from v2idetr.argtypes import add_threads_option, non_negative_int, out_file, unit_interval
from v2idetr.data.commands import add_source_options, write_coco_vid
from v2idetr.data.detection_fusion import fuse_detections
from v2idetr.data.load import load_index
from v2idetr.data.pseudo_labels import DEFAULT_AMBIGUOUS, DEFAULT_SCORE, pseudo_label
from v2idetr.engine.coco_results import read_coco_results
from v2idetr.errors import DatasetError, Problem

log = logging.getLogger(__name__)


def _pseudo_label(args: argparse.Namespace) -> int:
    index = load_index(args.labels, format=args.format, images_root=args.images_root, split=args.split)
    if not index.num_unlabelled_frames:
        raise DatasetError(Problem(str(args.labels), "", "images", "no frame is unlabelled ('labelled': false): "
                                   "nothing to pseudo-label"), header="cannot pseudo-label")
    if args.checkpoint:
        api.set_threads(args.threads)
        n = api.pseudo_label(args.checkpoint, index, args.out, score=args.score, ambiguous=args.ambiguous,
                             device=args.device, progress=not args.no_progress, temporal=args.temporal,
                             interpolate=args.interpolate)
    else:
        per_file = [read_coco_results(path, index) for path in args.detections]
        for path, predictions in zip(args.detections, per_file, strict=True):
            lowest = min((float(p["scores"].min()) for p in predictions.values() if len(p["scores"])), default=0.0)
            if lowest > args.ambiguous:
                log.warning("%s: its lowest score is %.3f, above --ambiguous %s: frames with a faint detection "
                            "cannot be told from sure ones; write the detections with `predict --score-thresh %s` "
                            "or lower", path, lowest, args.ambiguous, args.ambiguous)
        labelled, n = pseudo_label(index, fuse_detections(per_file), score=args.score, ambiguous=args.ambiguous,
                                  source=", ".join(args.detections), temporal=args.temporal,
                                  interpolate=args.interpolate)
        write_coco_vid(labelled, args.labels, args.out)
    print(f"pseudo-labelled {n.labelled} of {n.labelled + n.ambiguous} unlabelled frames with {n.boxes} boxes "
          f"({n.negatives} of them negatives); {n.ambiguous} left unlabelled (a detection scored in "
          f"[{args.ambiguous}, {args.score})); {n.human} human-labelled frames unchanged"
          + (f"; {n.confirmed} boxes below --score kept, confirmed by a frame at most {args.temporal} away"
             if args.temporal else "")
          + (f"; {n.interpolated} boxes interpolated between sure boxes at most {args.interpolate} frames before "
             "and after" if args.interpolate else ""))
    print(f"wrote {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    pl = sub.add_parser(
        "pseudo-label",
        help="a teacher's detections as labels on the unlabelled frames: a training file for the student",
        description=(
            "Each unlabelled frame whose detections are all >= --score or all < --ambiguous becomes labelled, "
            "the confident detections as its boxes (none: a negative); a frame with a detection in between "
            "stays unlabelled. Human labels are kept. Pseudo-labels are marked ('pseudo_labelled' on the image, "
            "'pseudo_label' and 'score', or 'interpolated', on the box) and refused as validation or test data. "
            "With --detections (from `v2idetr predict LABELS --checkpoint TEACHER --score-thresh 0.05`) keep the "
            "faint detections, or every frame looks sure. OUT is COCO-VID, frame paths relative to its folder, "
            "written atomically."
        ),
    )
    pl.add_argument("labels", metavar="LABELS", help="dataset with unlabelled frames (any supported layout)")
    source = pl.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", nargs="+", help="the teacher (or any model) to run on LABELS' unlabelled "
                        "frames; a video teacher sees each frame's clip, as in eval. Several (teachers trained from "
                        "different seeds, say): their detections are fused and label by agreement (a lesion one "
                        "of three found keeps a third of its score)")
    source.add_argument("--detections", nargs="+", help="COCO results JSON for LABELS instead (predict's "
                        "detections.json); several are fused as several checkpoints are")
    pl.add_argument("--out", type=out_file, required=True, help="COCO-VID JSON to write")
    pl.add_argument("--score", type=unit_interval, default=DEFAULT_SCORE,
                    help=f"detections at or above become boxes (default {DEFAULT_SCORE})")
    pl.add_argument("--ambiguous", type=unit_interval, default=DEFAULT_AMBIGUOUS,
                    help=f"a detection in [ambiguous, score) keeps its frame unlabelled (default {DEFAULT_AMBIGUOUS})")
    pl.add_argument("--temporal", type=non_negative_int, default=0, metavar="R",
                    help="a detection in [ambiguous, score) that a confident box (a human's, or a detection >= "
                    "score) of the same class on a frame at most R frames away overlaps (IoU >= 0.5) counts as "
                    "confident: boxes the frames the teacher is unsure of (default 0: off)")
    pl.add_argument("--interpolate", type=non_negative_int, default=0, metavar="G",
                    help="a lesion that sure boxes (a human's, or detections >= score; same class, overlapping) show "
                    "on the nearest sure frame before and after, each at most G frames away, gets the interpolated "
                    "box on the frames between, even where the teacher missed it; a human's negative frame stops "
                    "it (default 0: off)")
    pl.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (with --checkpoint)")
    add_threads_option(pl)
    pl.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_source_options(pl)
    pl.set_defaults(func=_pseudo_label)
