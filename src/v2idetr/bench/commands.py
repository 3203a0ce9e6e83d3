"""`v2idetr bench speed` and `v2idetr bench accuracy`."""

from __future__ import annotations

import argparse

from v2idetr import api
from v2idetr.argtypes import (
    add_threads_option,
    non_negative_int,
    out_file,
    out_folder,
    positive_int,
)


def _bench_speed(args: argparse.Namespace) -> int:
    from v2idetr.bench.speed import benchmark_speed, format_speed_table, write_speed_json

    api.set_threads(args.threads)
    if args.train:
        return _bench_train_step(args)
    result = benchmark_speed(
        args.config,
        args.overrides,
        size=args.size,
        device=args.device,
        batches=tuple(args.batch),
        frames=args.frames,
        teacher_config_path=args.teacher_config,
        checkpoints={"baseline": args.baseline, "student": args.student, "teacher": args.teacher},
        backends=tuple(args.backends),
        precisions=tuple(args.precision),
        iters=args.iters,
        warmup=args.warmup,
        rounds=args.rounds,
    )
    print(format_speed_table(result))
    if args.out:
        print(f"wrote {write_speed_json(result, args.out)}")
    return 0


def _bench_train_step(args: argparse.Namespace) -> int:
    from v2idetr.atomic import atomic_write_json
    from v2idetr.bench.speed import teacher_config
    from v2idetr.bench.train_speed import benchmark_train_step, format_train_table
    from v2idetr.config import load_config
    from v2idetr.devices import resolve_device

    student = load_config(args.config, args.overrides)
    teacher = teacher_config(student, args.frames, args.teacher_config, args.overrides)
    device = resolve_device(args.device, "--device")
    rows = [row for batch in args.batch
            for row in benchmark_train_step(student, teacher, args.size, batch, device, steps=args.iters,
                                            warmup=args.warmup)]
    print(format_train_table(rows, str(device)))
    if args.out:
        print(f"wrote {atomic_write_json(args.out, {'device': str(device), 'train_rows': rows}, indent=2)}")
    return 0


def _bench_accuracy(args: argparse.Namespace) -> int:
    from v2idetr.bench.accuracy import benchmark_accuracy
    from v2idetr.bench.tables import format_table, parse_pair

    api.set_threads(args.threads)
    data = None
    if args.train or args.val:
        if not (args.train and args.val):
            raise SystemExit("v2idetr bench accuracy: give both --train and --val (and optionally --test)")
        data = (args.train, args.val, args.test)
    # `--rows a b key=value` hands the overrides to --rows or --compare (argparse cannot tell): no row has a "="
    rows = [r for r in args.rows or () if "=" not in r]
    compare = [parse_pair(p) for p in args.compare or () if "=" not in p]
    overrides = [*args.overrides, *(r for r in [*(args.rows or ()), *(args.compare or ())] if "=" in r)]
    result = benchmark_accuracy(
        args.out,
        rows=rows or None,
        seeds=args.seeds,
        steps=args.steps,
        size=args.size,
        preset=args.preset,
        data=data,
        synth=(args.videos, args.frames, args.frame_size),
        test_videos=args.test_videos,
        overrides=overrides,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        teacher_steps=args.teacher_steps,
        student_steps=args.student_steps,
        distill_steps=args.distill_steps,
        label_every=args.label_every,
        unlabelled_videos=args.unlabelled_videos,
        unlabelled=args.unlabelled,
        compare=compare,
    )
    print(format_table(result["rows"], result["header"], result["paired"]))
    print(f"wrote {args.out}/results.md and results.json")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="benchmarks: speed (cost) and accuracy (the paper's tables)")
    bsub = b.add_subparsers(dest="bench", metavar="BENCH", required=True)
    s = bsub.add_parser(
        "speed",
        help="baseline vs student vs teacher: FPS, latency, params, GFLOPs, memory",
        description="Times the three models in one process (interleaved) and prints their cost ratios.",
    )
    s.add_argument("--config", required=True, help="the image (student) config, e.g. configs/student-tiny.yaml")
    s.add_argument("--teacher-config", default=None, help="default: the student config with MSI over --frames")
    s.add_argument("--frames", type=positive_int, default=3, help="teacher clip length T when no --teacher-config")
    s.add_argument("--size", type=positive_int, default=512)
    s.add_argument("--device", default="cpu")
    s.add_argument("--batch", type=positive_int, nargs="+", default=[1, 8], help="batch sizes")
    s.add_argument("--backends", nargs="+", default=["eager", "compile", "onnx"],
                   help="student backends: eager, compile, graph (CUDA graphs, CUDA only), onnx")
    s.add_argument("--train", action="store_true",
                   help="time a training step (baseline, teacher, distillation) instead: steps/s and peak memory "
                        "at each --batch and --size, for sizing a run; --iters steps after --warmup")
    s.add_argument("--precision", nargs="+", default=["fp32"], choices=("fp32", "bf16", "fp16"),
                   help="precisions to time (bf16/fp16 under autocast, CUDA only)")
    s.add_argument("--iters", type=positive_int, default=20, help="timed iterations per row")
    s.add_argument("--warmup", type=non_negative_int, default=3)
    s.add_argument("--rounds", type=positive_int, default=4, help="interleaved rounds the iterations are split into")
    s.add_argument("--baseline", default=None, help="optional checkpoints (weights do not change the cost)")
    s.add_argument("--student", default=None)
    s.add_argument("--teacher", default=None)
    add_threads_option(s)
    s.add_argument("--out", type=out_file, default=None, help="JSON file for the results")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the student config")
    s.set_defaults(func=_bench_speed)

    a = bsub.add_parser(
        "accuracy",
        help="baseline, teachers and student ablations over seeds (resumable)",
        description="The paper's comparison and ablation rows with one schedule and several seeds; "
        "checkpoints chosen on val, numbers on test. Finished runs are kept and not re-run.",
    )
    a.add_argument("--out", type=out_folder, required=True, help="benchmark folder (runs/, results.json, results.md)")
    a.add_argument("--rows", nargs="+", default=None,
                   help="subset of rows (default: all; the archive rows only with an archive)")
    a.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1, 2])
    a.add_argument("--compare", nargs="+", default=None, metavar="ROW:CONTROL",
                   help="paired differences per seed (row - control) to add to the tables; each X-image-teacher "
                   "row is paired with X anyway. Both rows must be among --rows; finished runs are reused, so "
                   "rerunning a finished command with --compare only redoes the tables")
    a.add_argument("--steps", type=positive_int, default=800, help="training steps of every row")
    a.add_argument("--teacher-steps", type=positive_int, default=None,
                   help="with --student-steps, one lineage as in `v2idetr demo`: teachers start from the baseline "
                   "at step steps-N-K and train N, students K (default: every row trains --steps)")
    a.add_argument("--student-steps", type=positive_int, default=None, help="K: see --teacher-steps")
    a.add_argument("--distill-steps", type=positive_int, default=None, metavar="M",
                   help="train the student rows M steps from their teacher (validated every M/3 steps, the best "
                   "kept) instead of K or --steps: pseudo-label students need more than a lineage's tail")
    a.add_argument("--label-every", type=positive_int, default=1,
                   help="label budget: keep the labels of 1 training frame in K per video, the rest unlabelled "
                   "(`data sparsify`); the -all-labels rows keep them all (default 1: every frame labelled)")
    a.add_argument("--unlabelled-videos", type=non_negative_int, default=0, metavar="N",
                   help="an archive of N synthetic videos nobody labelled (other generator seeds), which the "
                   "student-archive rows distil on (default: 0, no archive and no archive rows)")
    a.add_argument("--unlabelled", default=None, metavar="PATH",
                   help="your own archive of unlabelled videos (with --train/--val): data.unlabelled of the "
                   "student-archive rows")
    a.add_argument("--size", default="tiny", choices=("tiny", "lite", "r50"),
                   help="tiny (CPU, 128 px, from scratch), lite (CPU, 256 px, pretrained EfficientNet-Lite0) or r50 (GPU)")
    a.add_argument("--preset", default="ultrasound", choices=("ultrasound", "colonoscopy"))
    a.add_argument("--videos", type=positive_int, default=40, help="synthetic train+val videos")
    a.add_argument("--frames", type=positive_int, default=48, help="frames per synthetic video")
    a.add_argument("--frame-size", type=positive_int, default=128, help="synthetic frame size in pixels")
    a.add_argument("--test-videos", type=positive_int, default=None,
                   help="synthetic test videos (default: a quarter of --videos, at least 4); more make the "
                   "degraded-frame numbers, which rest on a few lesions, steadier")
    a.add_argument("--train", default=None, help="your own COCO-VID train JSON (instead of a preset)")
    a.add_argument("--val", default=None, help="validation JSON: chooses the checkpoints")
    a.add_argument("--test", default=None, help="test JSON: the reported numbers (default: val, labelled so)")
    add_threads_option(a)
    a.add_argument("--overwrite", action="store_true",
                   help="delete an earlier benchmark in --out (runs, data, tables) first; without it a folder "
                   "keeps its runs, and only rows and seeds can be added")
    a.add_argument("--no-progress", action="store_true")
    a.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for every row")
    a.set_defaults(func=_bench_accuracy)
