"""`v2idetr bench speed`: baseline, distilled student and teacher timed in one process.

Why one process and ratios: machines are noisy, so absolute frames/s mean little across runs,
while the cost of the student relative to the baseline (should be 1: distillation adds nothing at
inference) and of the teacher relative to the student (about T: it runs the backbone on T frames)
are stable when measured side by side. Models are timed in interleaved rounds so that a slow
moment of the machine hits all of them alike.

Every model is timed as deployed: ``InferenceModel`` (padding mask, network with its input
normalisation, top-k), at each ``--precision`` (fp16/bf16 under autocast, CUDA only). The student is
also timed with the other engines (``torch.compile``, CUDA graphs: ``deploy.engines``) and in ONNX
Runtime (fp32). Weights do not change the cost
of this network (no data-dependent shapes), so models without a checkpoint get random weights.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from v2idetr.atomic import atomic_write_json
from v2idetr.config import Config, load_config
from v2idetr.deploy.engines import build_engine
from v2idetr.deploy.inference_model import InferenceModel
from v2idetr.devices import resolve_device
from v2idetr.engine.weights import load_model
from v2idetr.errors import CheckpointError, ConfigError
from v2idetr.models.build import build_model
from v2idetr.models.fold_norms import fold_backbone_norms
from v2idetr.precision import PRECISIONS

log = logging.getLogger(__name__)

BACKENDS = ("eager", "compile", "graph", "onnx")


@dataclass
class SpeedRow:
    """One model x backend x batch size. Latency is per batch; ``fps`` counts output (key) frames."""

    model: str
    backend: str
    precision: str
    batch: int
    frames_in: int  # input frames per output frame (T for the teacher)
    params_m: float
    gflops: float | None  # per output frame, from torch.utils.flop_counter (grid_sample not counted)
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    fps: float | None = None
    peak_mem_mb: float | None = None
    note: str | None = None  # e.g. the ONNX Runtime execution provider that ran
    error: str | None = None
    samples: list[float] = field(default_factory=list, repr=False)


@dataclass
class _Candidate:
    row: SpeedRow
    run: Callable[[], Any]


def speed_inputs(batch: int, frames: int, size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    if frames == 1:
        images = torch.rand((batch, 3, size, size), generator=gen).to(device)
    else:  # as eval and predict batch them: clips of consecutive key frames, which share frames
        video = torch.rand((batch + frames - 1, 3, size, size), generator=gen)
        images = torch.stack([video[b:b + frames] for b in range(batch)]).to(device)
    sizes = torch.full((batch, 2), size, dtype=torch.int64, device=device)
    return images, sizes, sizes.clone()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gflops(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> float | None:
    try:
        # With autograd on: the counter's module tracker hooks fail on no-grad outputs.
        with FlopCounterMode(display=False) as counter:
            model(*inputs)
        return counter.get_total_flops() / 1e9
    except Exception as exc:  # the counter is a diagnostic: a failure must not stop the benchmark
        log.warning("FLOP count failed: %s", exc)
        return None


def _params(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def _model(name: str, cfg: Config, checkpoint: str | None, num_classes: int) -> torch.nn.Module:
    """The checkpoint's model when given (its own architecture and classes), else ``cfg``'s with random weights."""
    if checkpoint is None:
        cfg = copy.deepcopy(cfg)
        cfg.model.backbone_weights = "none"  # random weights cost the same and need no download
        return build_model(cfg, num_classes)
    model, _, meta = load_model(checkpoint, device="cpu")
    if (meta.get("kind") == "teacher") != (name == "teacher"):
        raise CheckpointError(f"{checkpoint}: --{name} needs {'a teacher' if name == 'teacher' else 'an image model'} checkpoint")
    return model


def teacher_config(
    student: Config, frames: int, teacher_config_path: str | None, overrides: list[str] | None = None
) -> Config:
    """The teacher's config: given (with the student's ``overrides`` applied too), or the student's
    with MSI over ``frames``-frame clips."""
    if teacher_config_path:
        return load_config(teacher_config_path, overrides)
    cfg = copy.deepcopy(student)
    cfg.model.temporal, cfg.data.num_frames = "msi", frames
    return cfg


def benchmark_speed(
    config: str | Path,
    overrides: list[str] | None = None,
    size: int = 512,
    device: str = "cpu",
    batches: tuple[int, ...] = (1, 8),
    frames: int = 3,
    teacher_config_path: str | None = None,
    checkpoints: dict[str, str | None] | None = None,
    backends: tuple[str, ...] = BACKENDS,
    iters: int = 20,
    warmup: int = 3,
    rounds: int = 4,
    num_classes: int = 2,
    precisions: tuple[str, ...] = ("fp32",),
) -> dict[str, Any]:
    """Time the three models (and the student's backends) at each batch size; see the module docstring."""
    unknown = set(backends) - set(BACKENDS)
    if unknown or "eager" not in backends:
        raise ConfigError(f"backends: expected 'eager' plus any of {', '.join(BACKENDS)}, got {list(backends)}")
    if not precisions or set(precisions) - set(PRECISIONS):
        raise ConfigError(f"precisions: expected any of {', '.join(PRECISIONS)}, got {list(precisions)}")
    if min(batches) < 1 or iters < 1 or rounds < 1 or size < 32:
        raise ConfigError("batch sizes, iters and rounds must be >= 1 and size >= 32")
    dev = resolve_device(device)
    checkpoints = checkpoints or {}
    student_cfg = load_config(config, overrides)
    if student_cfg.model.temporal != "none":
        raise ConfigError(f"{config}: bench speed needs the image (student) config; give the teacher's with --teacher-config")
    t_cfg = teacher_config(student_cfg, frames, teacher_config_path, overrides)
    T = t_cfg.data.num_frames
    models = {
        name: (_model(name, cfg, checkpoints.get(name), num_classes), t)
        for name, cfg, t in (("baseline", student_cfg, 1), ("student", student_cfg, 1), ("teacher", t_cfg, T))
    }
    candidates: list[_Candidate] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (net, t) in models.items():
            params = _params(net)
            # as Detector / predict run it: the backbone's batch norms folded into its convolutions
            wrapped = InferenceModel(fold_backbone_norms(net), student_cfg.eval.num_select).to(dev).eval()
            flops = _gflops(wrapped, speed_inputs(1, t, size, dev))
            for batch, precision, backend in (
                (b, p, e) for b in batches for p in precisions for e in (backends if name == "student" else ("eager",))
                if not (e == "onnx" and p != "fp32")
            ):
                inputs = speed_inputs(batch, t, size, dev)
                row = SpeedRow(name, backend, precision, batch, t, round(params, 3),
                               None if flops is None else round(flops, 3))
                try:
                    run, row.note = _runner(backend, precision, wrapped, inputs, Path(tmp), dev)
                except Exception as exc:  # a backend that cannot run here is reported, not fatal
                    row.error = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
                    log.warning("%s %s %s batch %d: %s", name, backend, precision, batch, row.error)
                    run = None
                candidates.append(_Candidate(row, run))
        _time_interleaved([c for c in candidates if c.run is not None], dev, iters, warmup, rounds)
    rows = [c.row for c in candidates]
    return _summary(rows, student_cfg, t_cfg, size, dev, batches)


def _runner(
    backend: str, precision: str, model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], tmp: Path,
    dev: torch.device
) -> tuple[Callable[[], Any], str | None]:
    """The timed call of one backend at one precision, and a note on how it runs."""
    dtype = PRECISIONS[precision]
    if dtype is not None and dev.type != "cuda":
        raise ConfigError(f"precision {precision} needs a CUDA device (got {dev})")
    if backend in ("eager", "compile", "graph"):
        engine = build_engine(model, backend, dev)

        def run() -> Any:
            with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                return engine(*inputs)

        if backend != "eager":
            with torch.inference_mode():
                for _ in range(3):  # compile (and record the CUDA graph) now, outside the timed region
                    run()
        return run, {"eager": None, "compile": "inductor", "graph": "CUDA graphs"}[backend]
    import onnxruntime as ort

    from v2idetr.deploy.export import DEFAULT_OPSET, export_module
    from v2idetr.deploy.preprocess import PreparedBatch

    path = tmp / f"student-{inputs[0].shape[0]}.onnx"
    cpu_inputs = tuple(x.cpu() for x in inputs)
    export_module(model.cpu(), PreparedBatch(*cpu_inputs), path, DEFAULT_OPSET, {})
    model.to(dev)
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if dev.type == "cuda" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), providers=[p for p in providers if p in ort.get_available_providers()])
    feeds = {"images": cpu_inputs[0].numpy(), "image_sizes": cpu_inputs[1].numpy(), "orig_sizes": cpu_inputs[2].numpy()}
    ran_on = session.get_providers()[0]
    if dev.type == "cuda" and ran_on != "CUDAExecutionProvider":
        log.warning("ONNX Runtime has no CUDA provider here (install onnxruntime-gpu): the onnx row ran on the CPU")
    return (lambda: session.run(None, feeds)), ran_on


def _time_interleaved(candidates: list[_Candidate], dev: torch.device, iters: int, warmup: int, rounds: int) -> None:
    per_round = max(1, math.ceil(iters / rounds))
    with torch.inference_mode():
        for c in candidates:
            for _ in range(warmup):
                c.run()
            _sync(dev)
        for _ in range(rounds):
            for c in candidates:
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(dev)
                for _ in range(per_round):
                    start = time.perf_counter()
                    c.run()
                    _sync(dev)
                    c.row.samples.append(time.perf_counter() - start)
                if dev.type == "cuda":
                    peak = torch.cuda.max_memory_allocated(dev) / 2**20
                    c.row.peak_mem_mb = round(max(c.row.peak_mem_mb or 0.0, peak), 1)
    for c in candidates:
        ms = np.array(c.row.samples) * 1000.0
        c.row.latency_ms_p50 = round(float(np.percentile(ms, 50)), 3)
        c.row.latency_ms_p95 = round(float(np.percentile(ms, 95)), 3)
        c.row.fps = round(c.row.batch * 1000.0 / float(ms.mean()), 2)


def _find(rows: list[SpeedRow], model: str, batch: int, backend: str = "eager") -> SpeedRow | None:
    for r in rows:
        if r.model == model and r.batch == batch and r.backend == backend and r.precision == "fp32" and r.error is None:
            return r
    return None


def _summary(
    rows: list[SpeedRow], student_cfg: Config, t_cfg: Config, size: int, dev: torch.device, batches: tuple[int, ...]
) -> dict[str, Any]:
    ratios: dict[str, Any] = {}
    for batch in batches:
        base, stud, teach = (_find(rows, m, batch) for m in ("baseline", "student", "teacher"))
        if base and stud:
            ratios[f"student/baseline latency, batch {batch}"] = round(stud.latency_ms_p50 / base.latency_ms_p50, 3)
        if teach and stud:
            ratios[f"teacher/student latency, batch {batch}"] = round(teach.latency_ms_p50 / stud.latency_ms_p50, 3)
    best = min((r for r in rows if r.model == "student" and r.batch == 1 and r.error is None),
               key=lambda r: r.latency_ms_p50, default=None)
    return {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "size": size,
        "teacher_frames": t_cfg.data.num_frames,
        "model": {k: getattr(student_cfg.model, k) for k in ("backbone", "hidden_dim", "enc_layers", "dec_layers", "num_queries")},
        "rows": [{k: v for k, v in asdict(r).items() if k != "samples"} for r in rows],
        "ratios": ratios,
        "best_student_batch1": None if best is None else {"backend": best.backend, "precision": best.precision,
                                                          "fps": best.fps, "latency_ms_p50": best.latency_ms_p50},
        "torch": torch.__version__,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def format_speed_table(result: dict[str, Any]) -> str:
    """The rows as a fixed-width table, then the ratios."""
    lines = [
        f"Speed at {result['size']}x{result['size']} on {result['device']} ({result['device_name']}, "
        f"{result['threads']} threads); teacher sees T={result['teacher_frames']} frames per output frame",
        f"{'model':<9} {'backend':<8} {'prec':<5} {'batch':>5} {'FPS':>9} {'p50 ms':>9} {'p95 ms':>9} {'params M':>9} "
        f"{'GFLOPs':>8} {'peak MB':>8}",
    ]

    def f(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    for r in result["rows"]:
        if r["error"]:
            lines.append(f"{r['model']:<9} {r['backend']:<8} {r['precision']:<5} {r['batch']:>5} failed: {r['error']}")
            continue
        lines.append(
            f"{r['model']:<9} {r['backend']:<8} {r['precision']:<5} {r['batch']:>5} {f(r['fps'], '9.1f')} {f(r['latency_ms_p50'], '9.2f')} "
            f"{f(r['latency_ms_p95'], '9.2f')} {f(r['params_m'], '9.2f')} {f(r['gflops'], '8.2f')} {f(r['peak_mem_mb'], '8.0f')}"
            + (f"  ({r['note']})" if r["note"] else "")
        )
    lines.append("Ratios (p50 latency, measured in this run):")
    lines += [f"  {k}: {v:.3f}" for k, v in result["ratios"].items()]
    best = result.get("best_student_batch1")
    if best:
        lines.append(f"Best student at batch 1: {best['fps']:.1f} FPS ({best['backend']}, {best['precision']})")
    return "\n".join(lines)


def write_speed_json(result: dict[str, Any], path: str | Path) -> Path:
    return atomic_write_json(path, result, indent=2)
