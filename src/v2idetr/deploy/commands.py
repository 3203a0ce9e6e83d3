"""`v2idetr predict` and `v2idetr export`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from v2idetr.argtypes import (
    add_threads_option,
    out_file,
    out_folder,
    positive_float,
    positive_int,
    unit_interval,
)
from v2idetr.errors import ConfigError


def _load_runtime(args: argparse.Namespace):  # -> FrameDetector
    """A ``.onnx`` file runs under ONNX Runtime, anything else is a PyTorch checkpoint: an image
    model (``Detector``) or a video teacher (``ClipDetector``, on eval's clips)."""
    if Path(args.checkpoint).suffix.lower() == ".onnx":
        from v2idetr.deploy.export import OnnxDetector

        if args.engine != "eager":
            raise ConfigError(f"--engine {args.engine}: engines run PyTorch checkpoints; "
                              f"{args.checkpoint} runs in ONNX Runtime")

        return OnnxDetector(args.checkpoint, score_thresh=args.score_thresh, nms_iou=args.nms_iou,
                            threads=args.threads)
    from v2idetr.deploy.runtime import load_detector

    return load_detector(
        args.checkpoint, device=args.device, precision=args.precision,
        score_thresh=args.score_thresh, nms_iou=args.nms_iou, engine=args.engine,
    )


def _predict(args: argparse.Namespace) -> int:
    from v2idetr.api import set_threads
    from v2idetr.deploy.predict import predict

    set_threads(args.threads)
    detector = _load_runtime(args)
    result = predict(
        detector,
        args.source,
        args.out,
        batch_size=args.batch_size,
        save_video=args.save_video,
        save_images=args.save_images,
        fps=args.fps,
        progress=not args.no_progress,
        skip_invalid=args.skip_invalid,
        input_format=args.input_format,
        max_frames=args.max_frames,
        stream_buffer=args.stream_buffer,
    )
    print(json.dumps({
        "model": result.model,
        "detections": str(result.detections_json),
        "videos": [str(p) for p in result.videos],
        "images": len(result.images),
        "frames": result.frames,
        **({"dropped_frames": result.dropped} if result.dropped else {}),
        "num_detections": result.detections,
        "score_thresh": detector.score_thresh,
        "fps_end_to_end": round(result.fps, 2),
    }))
    return 0


def _export(args: argparse.Namespace) -> int:
    from v2idetr.deploy.export import export_onnx

    result = export_onnx(args.checkpoint, args.out, size=args.size, opset=args.opset)
    print(json.dumps({
        "onnx": str(result.path),
        "size": result.size,
        "frames_compared": result.frames_compared,
        "max_abs_diff_scores": result.max_abs_diff_scores,
        "max_abs_diff_boxes_px": result.max_abs_diff_boxes,
    }))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="detect lesions in an image, an image folder, a video file, a dataset or a live stream",
        description="Writes detections.json (COCO results), an annotated mp4 per video and, on request, PNGs. "
                    "A live source (rtsp://, udp://, http(s)://, ... or a device with --input-format) runs until "
                    "it ends, --max-frames or Ctrl-C, which finishes the outputs normally.",
    )
    p.add_argument("source", help="image, folder of images, video file (mp4/avi/mov/mkv), dataset (COCO-VID JSON, "
                                  "...), or a live stream URL (rtsp, rtmp, http(s), udp, tcp, srt, file)")
    p.add_argument("--checkpoint", required=True,
                   help="an image model (.ckpt or exported .onnx) or a video teacher (.ckpt, run on eval's clips)")
    p.add_argument("--out", type=out_folder, required=True, help="output folder")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (PyTorch checkpoints)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"), help="fp16/bf16 need CUDA")
    p.add_argument("--engine", default="eager", choices=("eager", "compile", "graph"),
                   help="eager; compile (torch.compile, one graph per input shape); graph (CUDA graphs, CUDA only)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="frames (clips for a teacher) per forward pass")
    p.add_argument("--score-thresh", type=unit_interval, default=None, help="default: the checkpoint's protocol threshold")
    p.add_argument("--nms-iou", type=unit_interval, default=None, help="default: the checkpoint's protocol (1.0 disables)")
    p.add_argument("--save-video", action=argparse.BooleanOptionalAction, default=None,
                   help="annotated mp4 per video (default: only for a video file)")
    p.add_argument("--save-images", action="store_true", help="one annotated PNG per frame")
    p.add_argument("--fps", type=positive_float, default=None, help="frame rate of written videos (default: the source's, else 25)")
    p.add_argument("--skip-invalid", action="store_true",
                   help="leave frames or records that cannot be read out instead of stopping")
    p.add_argument("--input-format", default=None,
                   help="read SOURCE live through this FFmpeg input format (v4l2 /dev/video0, avfoundation, dshow, "
                        "lavfi), where the installed FFmpeg has it")
    p.add_argument("--max-frames", type=positive_int, default=None,
                   help="live sources: stop after this many frames (default: until the stream ends or Ctrl-C)")
    p.add_argument("--stream-buffer", action="store_true",
                   help="live sources: process every frame even when the model is slower than the source (it falls "
                        "behind); default: drop the frames there is no time for, always the newest")
    add_threads_option(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_predict)

    e = sub.add_parser(
        "export",
        help="export an image model to ONNX (pre/post-processing inside, dynamic batch)",
        description="Writes the .onnx and prints the largest ONNX Runtime vs PyTorch differences.",
    )
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--format", default="onnx", choices=("onnx",))
    e.add_argument("--size", type=positive_int, default=None, help="fixed input size x size (default: data.test_size)")
    e.add_argument("--out", type=out_file, default=None, help="default: the checkpoint path with .onnx")
    e.add_argument("--opset", type=positive_int, default=17)
    e.set_defaults(func=_export)
