"""`v2idetr train`, `v2idetr distill` and `v2idetr eval`."""

from __future__ import annotations

import argparse
import json

from v2idetr import api
from v2idetr.argtypes import add_threads_option, out_folder, positive_int, unit_interval
from v2idetr.errors import ConfigError
from v2idetr.models.teacher import TEACHER_VIEWS


def _train(args: argparse.Namespace) -> int:
    result = api.train(
        args.config, args.overrides, args.out, resume=args.resume, progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    print(json.dumps(_result_summary(result)))
    return 0


def _result_summary(result: api.TrainResult) -> dict:
    return {
        "out": str(result.out_dir),
        "steps": result.step,
        "best_metric_value": result.best_value,
        "best_step": result.best_step,
        "stopped_early": result.stopped_early,
    }


def _distill(args: argparse.Namespace) -> int:
    result = api.distill(
        args.teacher, args.config, args.overrides, args.out, resume=args.resume, progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    print(json.dumps(_result_summary(result)))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from v2idetr.engine.evaluator import format_metrics_table

    api.set_threads(args.threads)
    if args.checkpoint:
        metrics = api.evaluate(
            args.checkpoint,
            args.data,
            out_dir=args.out,
            protocol=args.protocol,
            score_thresh=args.score_thresh,
            nms_iou=args.nms_iou,
            device=args.device,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            teacher_view=args.teacher_view,
        )
    else:
        if args.teacher_view != "clip":
            raise ConfigError(f"--teacher-view {args.teacher_view}: needs --checkpoint (a video teacher), not a "
                              "detections file")
        metrics = api.evaluate_detections(
            args.predictions,
            args.data,
            out_dir=args.out,
            protocol=args.protocol or "yona",
            score_thresh=args.score_thresh,
            nms_iou=args.nms_iou,
        )
    print(format_metrics_table(metrics))
    if args.out:
        print(f"wrote {args.out}/metrics.json")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train an image detector or a video teacher",
        description="Train from a YAML config; any config key can be overridden as key=value.",
    )
    p.add_argument("--config", required=True, help="YAML file under configs/ (or your own)")
    p.add_argument("--out", type=out_folder, required=True, help="run folder: last.ckpt, best.ckpt, metrics.jsonl")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the run already in --out (checkpoints, val/, logs) and start a new one")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.steps=500")
    p.set_defaults(func=_train)

    d = sub.add_parser(
        "distill",
        help="distil a video teacher into an image student (TFD + CQD)",
        description="Train an image student from a frozen teacher; e.g. distill.tfd=1.0 distill.cqd=5.0.",
    )
    d.add_argument("--teacher", required=True, help="teacher checkpoint (v2idetr train with a teacher config)")
    d.add_argument("--config", required=True, help="the student's YAML config, e.g. configs/student-tiny.yaml")
    d.add_argument("--out", type=out_folder, required=True)
    d.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    d.add_argument("--overwrite", action="store_true",
                   help="delete the run already in --out (checkpoints, val/, logs) and start a new one")
    d.add_argument("--no-progress", action="store_true")
    d.add_argument("overrides", nargs="*", metavar="key=value")
    d.set_defaults(func=_distill)

    e = sub.add_parser("eval", help="evaluate a checkpoint or a detections file (COCO AP + image-level P/R/F1)")
    what = e.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", help="a model checkpoint: its top-k detections are scored")
    what.add_argument(
        "--predictions", help="a COCO result JSON (e.g. from v2idetr predict), scored as given"
    )
    e.add_argument("--data", required=True, help="COCO-VID JSON or dataset folder")
    e.add_argument("--out", type=out_folder, default=None, help="folder for metrics.json and pr_curve.png")
    e.add_argument(
        "--protocol",
        choices=("yona", "strict", "stft"),
        default=None,
        help="image-level protocol (default: the checkpoint config's, normally yona)",
    )
    e.add_argument("--score-thresh", type=unit_interval, default=None, help="override the protocol's score threshold")
    e.add_argument("--nms-iou", type=unit_interval, default=None, help="override the protocol's NMS IoU (1.0 disables NMS)")
    e.add_argument("--teacher-view", choices=TEACHER_VIEWS, default="clip",
                   help="a video teacher on its clips; on its key frame repeated (static: no temporal context); or "
                   "its image detector alone (key-frame: where a distilled student starts)")
    e.add_argument("--device", default="auto")
    e.add_argument("--batch-size", type=positive_int, default=None)
    add_threads_option(e)
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=_eval)
