"""The Python API: the same features as the CLI, as plain functions.

>>> from v2idetr import api
>>> result = api.train("configs/student-tiny.yaml", ["data.train=s/train.json", "data.val=s/val.json"], "runs/a")
>>> metrics = api.evaluate("runs/a/best.ckpt", "s/val.json", out_dir="runs/a/eval")
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from v2idetr.config import Config, config_to_dict, load_config, unlabelled_per_batch
from v2idetr.data import pseudo_labels
from v2idetr.data.archive import load_archives
from v2idetr.data.clips import ClipSampling
from v2idetr.data.commands import check_coco_vid_writable, write_coco_vid
from v2idetr.data.detection_fusion import fuse_detections
from v2idetr.data.index import DatasetIndex
from v2idetr.data.load import load_index
from v2idetr.data.pseudo_labels import (
    DEFAULT_AMBIGUOUS,
    DEFAULT_SCORE,
    PseudoLabelCounts,
    reject_pseudo_labels,
)
from v2idetr.distill.hard_frames import teacher_chosen_weights
from v2idetr.distill.objective import DistillationObjective
from v2idetr.engine.checkpoint import Checkpoint, load_checkpoint
from v2idetr.engine.coco_results import read_coco_results
from v2idetr.engine.evaluator import evaluate as evaluate_predictions
from v2idetr.engine.inference import build_eval_loader, is_unlabelled, predict_loader
from v2idetr.engine.metrics import resolve_protocol, select_detections
from v2idetr.engine.objective import DetectionObjective
from v2idetr.engine.run_folder import claim_run_folder
from v2idetr.engine.trainer import Trainer, TrainResult, seed_everything
from v2idetr.engine.weights import check_frozen_trunk, init_weights_from, load_model
from v2idetr.errors import ConfigError, DatasetError
from v2idetr.models.build import build, build_model
from v2idetr.models.postprocess import PostProcess
from v2idetr.models.teacher import FrameTeacher, TeacherView, VideoTeacher

log = logging.getLogger(__name__)


def load_dataset(cfg: Config, path: str | Path | None, role: str, split: str = "train") -> DatasetIndex:
    """Read the dataset behind ``data.<role>`` with the config's format options."""
    if path is None:
        raise ConfigError(
            f"config key 'data.{role}' is not set: give data.{role}=PATH (a COCO-VID JSON or folder)"
        )
    index = load_index(
        path,
        format=cfg.data.format,
        images_root=cfg.data.images_root,
        skip_invalid=cfg.data.skip_invalid,
        exclude=cfg.data.exclude,
        split=split,
    )
    if role != "train":
        reject_pseudo_labels(index, f"data.{role}" if role != "eval" else "evaluation")
    return index


def _check_same_classes(train: DatasetIndex, other: DatasetIndex, role: str) -> None:
    if other.category_ids and other.category_ids != train.category_ids:
        raise DatasetError(
            [],
            header=(
                f"data.{role} has categories {list(zip(other.category_ids, other.class_names, strict=True))} but "
                f"data.train has {list(zip(train.category_ids, train.class_names, strict=True))}: "
                "both splits must use the same category ids"
            ),
        )


def train(
    config: str | Path | Config | None = None,
    overrides: list[str] | None = None,
    out_dir: str | Path = "runs/train",
    resume: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> TrainResult:
    """Train an image detector (or a video teacher, per ``model.temporal``) and write checkpoints.

    ``out_dir`` holding another run is refused unless ``resume`` (go on with it) or ``overwrite``
    (delete it first): ``engine/run_folder.py``."""
    cfg = config if isinstance(config, Config) else load_config(config, overrides)
    if cfg.data.unlabelled:
        raise ConfigError(
            f"config key 'data.unlabelled' = {list(cfg.data.unlabelled)}: videos nobody labelled teach a student "
            "through its teacher (`v2idetr distill`); an image detector or a teacher trains on labelled frames: "
            "drop the key from this run"
        )
    check_frozen_trunk(cfg, bool(cfg.train.init_from))
    claim = claim_run_folder(out_dir, config_to_dict(cfg), resume, overwrite)
    train_index = load_dataset(cfg, cfg.data.train, "train")
    val_index = load_dataset(cfg, cfg.data.val, "val", split="test") if cfg.data.val else None
    if val_index is not None:
        _check_same_classes(train_index, val_index, "val")
    else:
        log.warning("data.val is not set: no validation, best.ckpt will be the last weights")
    num_classes = cfg.model.num_classes or train_index.num_classes
    if cfg.model.num_classes and cfg.model.num_classes != train_index.num_classes:
        raise ConfigError(
            f"config key 'model.num_classes' = {cfg.model.num_classes}, but {cfg.data.train} has "
            f"{train_index.num_classes} categories {train_index.class_names}"
        )
    seed_everything(cfg.train.seed)  # the initial weights depend on the seed, not on what ran before
    built = build(cfg, num_classes)
    if cfg.train.init_from and not claim.resuming:
        init_weights_from(built.model, cfg.train.init_from, train_index)
    meta = {
        "kind": "teacher" if cfg.model.temporal != "none" else "detector",
        "num_classes": num_classes,
        "class_names": train_index.class_names,
        "category_ids": train_index.category_ids,
    }
    trainer = Trainer(
        cfg,
        built.model,
        DetectionObjective(built.model, built.criterion),
        built.postprocess,
        train_index,
        val_index,
        Path(out_dir),
        meta,
        progress=progress,
        run=claim,
    )
    return trainer.fit(resume=claim.resuming)


def distill(
    teacher: str | Path,
    config: str | Path | Config | None = None,
    overrides: list[str] | None = None,
    out_dir: str | Path = "runs/distill",
    resume: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> TrainResult:
    """Train an image student with detection loss + w_TFD * TFD + w_CQD * CQD from a frozen teacher.

    The student sees only the key frame; the teacher sees clips of its own length, whose support
    frames are drawn at random within the teacher's ``data.window`` (``distill.cqd_sampling=random``)
    or at its fixed offsets (``fixed``). The saved checkpoints hold only the student's weights.
    With ``distill.unlabelled`` > 0, that share of each batch is unlabelled frames, taught by the
    teacher alone (``distill/objective.py``): a label budget's, and an archive's (``data.unlabelled``:
    videos nobody labelled, ``data/archive.py``; half of each batch unless ``distill.unlabelled`` says).
    With ``distill.hard_frames`` > 0, that share of the samples is drawn where the teacher and the
    starting student disagree most (``distill/hard_frames.py``). ``teacher`` may be an image
    detector's checkpoint: the same losses from a single-frame teacher (self-training, the control
    for what temporal context adds).
    ``resume`` and ``overwrite`` as for `train`.
    """
    cfg = config if isinstance(config, Config) else load_config(config, overrides)
    if cfg.model.temporal != "none" or cfg.data.num_frames != 1:
        raise ConfigError(
            "distill trains an image student: its config needs model.temporal=none and data.num_frames=1 "
            f"(got {cfg.model.temporal!r}, {cfg.data.num_frames})"
        )
    check_frozen_trunk(cfg, bool(cfg.distill.init_from_teacher or cfg.train.init_from))
    claim = claim_run_folder(out_dir, config_to_dict(cfg), resume, overwrite)
    teacher_ckpt = load_checkpoint(Path(teacher))  # read once: it builds the teacher and starts the student
    teacher_model, teacher_cfg, teacher_meta = load_model(teacher_ckpt, device="cpu")
    if teacher_meta.get("kind") != "teacher":
        log.info("%s is an image detector: distilling from a single-frame teacher (self-training)", teacher)
        teacher_model = FrameTeacher(teacher_model)
    train_index = load_dataset(cfg, cfg.data.train, "train")
    val_index = load_dataset(cfg, cfg.data.val, "val", split="test") if cfg.data.val else None
    for role, index in (("train", train_index), ("val", val_index)):
        if index is not None and index.category_ids != teacher_meta["category_ids"]:
            raise DatasetError([], header=(
                f"data.{role} categories {index.category_ids} differ from the teacher's {teacher_meta['category_ids']}"
            ))
    if cfg.data.unlabelled:
        held_out = {"data.val": val_index} if val_index is not None else {}
        if cfg.data.test:
            held_out["data.test"] = load_dataset(cfg, cfg.data.test, "test", split="test")
        train_index = load_archives(cfg.data.unlabelled, train_index, held_out, cfg.data.skip_invalid, progress)
    num_classes = int(teacher_meta["num_classes"])
    seed_everything(cfg.train.seed)  # the initial weights depend on the seed, not on what ran before
    built = build(cfg, num_classes)
    student = built.model
    if cfg.distill.init_from_teacher and cfg.train.init_from:
        raise ConfigError(
            f"config keys 'distill.init_from_teacher' = true and 'train.init_from' = {cfg.train.init_from!r}: "
            "the student can start from one set of weights; set distill.init_from_teacher=false to start "
            "from train.init_from (e.g. an image detector's checkpoint), or drop train.init_from"
        )
    resuming = claim.resuming
    if not resuming:
        if cfg.distill.init_from_teacher:
            init_weights_from(student, teacher_ckpt, train_index, key="distill.init_from_teacher",
                              hint="; set distill.init_from_teacher=false to distil into another architecture")
        elif cfg.train.init_from:
            init_weights_from(student, cfg.train.init_from, train_index)
    start = _frozen_start(cfg, num_classes, teacher_ckpt, train_index) if cfg.distill.tfd_target == "residual" else None
    objective = DistillationObjective(student, teacher_model, built.criterion, cfg.distill, start=start)
    # the teacher's own clip length, window and stride: it was trained (and is evaluated) with them
    clip_mode = "random" if cfg.distill.cqd_sampling == "random" else teacher_cfg.data.clip_mode
    meta = {
        "kind": "detector",
        "num_classes": num_classes,
        "class_names": teacher_meta["class_names"],
        "category_ids": teacher_meta["category_ids"],
        "distilled_from": str(Path(teacher).resolve()),
    }
    trainer = Trainer(
        cfg,
        student,
        objective,
        built.postprocess,
        train_index,
        val_index,
        Path(out_dir),
        meta,
        extra_modules=objective.extra_modules,
        progress=progress,
        train_clips=ClipSampling.of(teacher_cfg.data, clip_mode),
        unlabelled_per_batch=unlabelled_per_batch(cfg),
        run=claim,
    )
    teacher_model.to(trainer.device)
    if start is not None:
        start.to(trainer.device)
    if cfg.distill.hard_frames > 0:
        claim.start(Path(out_dir))  # --overwrite: the old run goes before this run's frame-weights.json is written
        set_threads(cfg.train.threads)
        trainer.frame_weights = teacher_chosen_weights(
            Path(out_dir), resuming, cfg, teacher_model, teacher_cfg, student, train_index, trainer.device,
            progress=progress)
    return trainer.fit(resume=resuming)


def _frozen_start(cfg: Config, num_classes: int, teacher_ckpt: Checkpoint, train_index: DatasetIndex) -> nn.Module | None:
    """A copy of the student's starting weights, rebuilt from their source (so a resumed run gets the
    same): what ``distill.tfd_target=residual`` measures the student's move from."""
    if not (cfg.distill.init_from_teacher or cfg.train.init_from):
        return None
    start = build_model(cfg, num_classes)
    source = teacher_ckpt if cfg.distill.init_from_teacher else cfg.train.init_from
    init_weights_from(start, source, train_index, key="distill.tfd_target=residual")
    return start


def _check_checkpoint_classes(index: DatasetIndex, meta: dict[str, Any], data: str | Path) -> None:
    if index.category_ids and index.category_ids != meta["category_ids"]:
        raise DatasetError([], header=f"{data}: categories {index.category_ids} differ from the checkpoint's "
                                      f"{meta['category_ids']}")


def evaluate(
    checkpoint: str | Path,
    data: str | Path,
    out_dir: str | Path | None = None,
    protocol: str | None = None,
    score_thresh: float | None = None,
    nms_iou: float | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    progress: bool = True,
    teacher_view: str = "clip",
) -> dict[str, Any]:
    """COCO AP/AP50/AP75 and image-level P/R/F1 (named protocol) of a checkpoint on a dataset.

    A video teacher can be shown less than its clips (``teacher_view``: ``static``, ``key-frame``;
    `TeacherView`): what it leads those views by is what a single-frame student cannot simply copy."""
    model, cfg, meta = load_model(checkpoint, device=device)
    if teacher_view != "clip":
        if not isinstance(model, VideoTeacher):
            raise ConfigError(f"{checkpoint}: teacher view {teacher_view!r} needs a video teacher; this is an image "
                              "model, which sees one frame anyway")
        model = TeacherView(model, teacher_view)
    index = load_dataset(cfg, data, "eval", split="test")
    _check_checkpoint_classes(index, meta, data)
    dev = next(model.parameters()).device
    loader = build_eval_loader(cfg, index, batch_size=batch_size)
    predictions = predict_loader(model, PostProcess(cfg.eval.num_select), loader, dev, progress=progress)
    return evaluate_predictions(
        index,
        predictions,
        protocol=protocol or cfg.eval.protocol,
        score_thresh=score_thresh if score_thresh is not None else cfg.eval.score_thresh,
        nms_iou=nms_iou if nms_iou is not None else cfg.eval.nms_iou,
        out_dir=Path(out_dir) if out_dir else None,
        name=Path(checkpoint).stem + ("" if teacher_view == "clip" else f" ({teacher_view} view)"),
    )


def _detections_on_unlabelled(model: nn.Module, cfg: Config, index: DatasetIndex, batch_size: int | None,
                             progress: bool) -> dict[int, dict[str, Any]]:
    """A model's detections on ``index``'s unlabelled frames (a video teacher on each one's clip), duplicates
    gone by its protocol's NMS, as ``v2idetr predict``."""
    loader = build_eval_loader(cfg, index, batch_size=batch_size, keys=is_unlabelled)  # the frames it labels
    raw = predict_loader(model, PostProcess(cfg.eval.num_select), loader, next(model.parameters()).device,
                         progress=progress)
    nms_iou = resolve_protocol(cfg.eval.protocol, nms_iou=cfg.eval.nms_iou).nms_iou
    return {i: {k: v[select_detections(p["boxes"], p["scores"], 0.0, nms_iou)] for k, v in p.items()}
            for i, p in raw.items()}


def pseudo_label(
    checkpoint: str | Path | Sequence[str | Path],
    data: str | Path | DatasetIndex,
    out: str | Path,
    score: float = DEFAULT_SCORE,
    ambiguous: float = DEFAULT_AMBIGUOUS,
    device: str = "auto",
    batch_size: int | None = None,
    progress: bool = True,
    temporal: int = 0,
    interpolate: int = 0,
) -> PseudoLabelCounts:
    """Write ``data`` to ``out`` (COCO-VID, atomically) with ``checkpoint``'s detections as labels on its
    unlabelled frames (`data.pseudo_labels`). A video teacher sees each frame's clip, as in `evaluate`;
    duplicates go by its protocol's NMS first, as in ``v2idetr predict``. Several checkpoints (teachers
    from different seeds, say) label by agreement: their detections are fused (`data.detection_fusion`).
    ``data``: a path read with the first checkpoint's data options, or an index already read.
    ``temporal``: a confident box this many frames away confirms an in-between detection;
    ``interpolate``: a lesion sure boxes show at most this many frames before and after gets a box between
    them (both `data.pseudo_labels`)."""
    checkpoints = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    if not checkpoints:
        raise ConfigError("pseudo_label: no checkpoint given")
    models = [load_model(c, device=device) for c in checkpoints]
    index = data if isinstance(data, DatasetIndex) else load_dataset(models[0][1], data, "train")
    for _, _, meta in models:  # every model and the output checked before the first model's pass, not after it
        _check_checkpoint_classes(index, meta, index.source)
    check_coco_vid_writable(index, index.source, str(out))
    per_model = [_detections_on_unlabelled(model, cfg, index, batch_size, progress) for model, cfg, _ in models]
    labelled, counts = pseudo_labels.pseudo_label(index, fuse_detections(per_model), score=score, ambiguous=ambiguous,
                                                   source=", ".join(map(str, checkpoints)), temporal=temporal,
                                                   interpolate=interpolate)
    write_coco_vid(labelled, index.source, str(out))
    return counts


def evaluate_detections(
    predictions: str | Path,
    data: str | Path,
    out_dir: str | Path | None = None,
    protocol: str = "yona",
    score_thresh: float | None = None,
    nms_iou: float | None = None,
    format: str = "auto",
) -> dict[str, Any]:
    """Score a COCO result file (e.g. ``v2idetr predict``'s ``detections.json``) against a dataset.

    AP is computed from the records as given: a file already cut at a score threshold scores a
    lower AP than the model's full top-k (``v2idetr eval --checkpoint`` uses the top-k).
    """
    index = load_index(data, format=format, split="test")
    return evaluate_predictions(
        index,
        read_coco_results(predictions, index),
        protocol=protocol,
        score_thresh=score_thresh,
        nms_iou=nms_iou,
        out_dir=Path(out_dir) if out_dir else None,
        name=Path(predictions).stem,
    )


def set_threads(threads: int) -> None:
    """PyTorch's intra-op CPU threads (``train.threads``, the commands' ``--threads``); 0 keeps the default."""
    if threads > 0:
        torch.set_num_threads(threads)
