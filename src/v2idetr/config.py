"""Typed configuration: the single source of defaults.

A run's configuration is these dataclasses, merged with a YAML file from ``configs/`` (which may
``include:`` other YAML files) and then with dotted ``key=value`` overrides from the command line.
An unknown key, a wrong type or a duplicated YAML key is an error that names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from v2idetr.errors import ConfigError


@dataclass
class DataConfig:
    """Where the data is and how clips and batches are made."""

    train: str | None = None  # annotation file (COCO-VID JSON) or dataset folder
    val: str | None = None
    test: str | None = None
    format: str = "auto"  # auto | coco-vid | buv | sun | sun-seg | images | video | videos
    images_root: str | None = None  # frame paths are relative to the JSON's folder unless set
    num_frames: int = 1  # T: frames per clip (1 for image models)
    clip_mode: str = "adjacent"  # adjacent | random | global | past
    # random mode (and distillation's random cross-view sampling): support frames within +-window
    # of the key frame. 4, not more: a teacher trained on adjacent 3-frame clips scored degraded-frame
    # AP50 0.81 with support frames drawn within +-4 frames but 0.71 within +-8 (docs/METHOD.md).
    window: int = 4
    stride: int = 1  # adjacent/past mode: gap between neighbouring clip frames
    train_sizes: list[int] = field(default_factory=lambda: [128])  # short side, one drawn per clip (batches pad)
    test_size: int = 128
    max_size: int = 224  # cap on the long side (0: no cap)
    hflip: float = 0.5
    crop: float = 0.0  # probability of a random crop that keeps every box
    photometric: float = 0.5  # probability of per-clip brightness/contrast jitter
    batch_size: int = 8
    workers: int = 0
    skip_invalid: bool = False
    exclude: str | None = None  # text file of video names to leave out (e.g. BUV errata)
    # videos nobody labelled, for distillation only (an archive): COCO-VID files whose frames are all
    # unlabelled, folders of per-video frame folders and/or video files, or video files. On the command
    # line `data.unlabelled=PATH` may be repeated (data/archive.py)
    unlabelled: list[str] = field(default_factory=list)


@dataclass
class ModelConfig:
    """The deformable DETR detector (student / baseline) and, for teachers, the temporal module."""

    num_classes: int = 0  # 0: taken from the training data
    backbone: str = "resnet18"  # resnet18 | resnet34 | resnet50 | efficientnet_lite0
    backbone_weights: str = "none"  # none | imagenet (Lite: the installed package's file) | <state dict path>
    backbone_stages: int = 4  # ResNet stages to run (3: stop after C4)
    freeze_backbone_bn: bool = True
    num_feature_levels: int = 4  # C3-C5 (+ extra stride-64 levels)
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    ffn_dim: int = 1024
    dropout: float = 0.0
    enc_points: int = 4
    dec_points: int = 4
    num_queries: int = 300
    two_stage: bool = True
    box_refine: bool = True
    dn_number: int = 100  # denoising queries (0 disables denoising training)
    dn_label_noise: float = 0.5
    dn_box_noise: float = 0.4
    temporal: str = "none"  # none | mean | msi  (teachers only)
    msi_layers: int = 2
    msi_points: int = 4
    # each MSI layer's change to the features through a zero-initialised projection: the teacher starts
    # as its image detector, what a teacher started from an image checkpoint (train.init_from) wants
    msi_gate: bool = False


@dataclass
class LossConfig:
    """Matching costs and loss weights (DETR family defaults)."""

    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    loss_class: float = 2.0
    loss_bbox: float = 5.0
    loss_giou: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    aux: bool = True


@dataclass
class DistillConfig:
    """Video-to-image distillation (TFD + CQD); weights of 0 switch a term off."""

    tfd: float = 1.0
    # CQD's loss is small beside the detection loss; 5 beat 1 on 9 of 10 paired seeds (docs/RESULTS.md).
    cqd: float = 5.0
    tfd_mask: str = "gaussian"  # gaussian | binary | full (every pixel: not target-guided)
    tfd_features: str = "memory"  # memory | backbone
    # teacher: its features; residual: the starting student's plus what the teacher's support frames add
    # (its clip's features minus its key frame's repeated; distill/tfd.py)
    tfd_target: str = "teacher"
    cqd_sampling: str = "random"  # random | fixed
    cqd_proposals: float = 2.0  # weight of CQD's dense two-stage proposal-score term (0: off; docs/METHOD.md)
    # CQD's class term: averaged over the queries, or per teacher detection (summed, divided by the teacher's
    # foreground mass; distill/cqd.py)
    cqd_class_norm: str = "queries"
    # weight of CQD's student-query term: the teacher's verdict on the student's own queries (0: off; docs/METHOD.md)
    cqd_student_queries: float = 0.0
    # share of training samples drawn in proportion to the teacher-student disagreement on the frame
    # (0: uniform; distill/hard_frames.py)
    hard_frames: float = 0.0
    # teacher: the frames the teacher detects a lesion in and the rest each keep their uniform share
    # of the samples, the choice acts within each; teacher-negatives: within the rest only;
    # none: one excess over all frames
    hard_frames_strata: str = "teacher"
    # probability that the student's key frame is degraded (blur, noise, contrast, exposure) while the
    # teacher sees the clean clip (0: off; distill/student_view.py)
    student_degrade: float = 0.0
    init_from_teacher: bool = True
    # share of each batch's key frames that are unlabelled frames (0: labelled frames only, the paper's, or
    # ARCHIVE_SHARE when data.unlabelled names an archive), on top of data.batch_size labelled ones; there
    # the student gets no detection loss, TFD masks from the teacher's detections, and CQD
    unlabelled: float = 0.0
    # the teacher's detections at or above this score make TFD's masks on unlabelled frames (and pseudo_boxes' targets)
    pseudo_score: float = 0.5
    # weight of the set loss of the student's own predictions on unlabelled frames towards the teacher's detections
    # (score >= pseudo_score), their scores as soft class targets (0: off; distill/objective.py)
    pseudo_boxes: float = 0.0
    # what the teacher sees: its clip, or its key frame T times (static: the control without temporal context)
    teacher_view: str = "clip"


@dataclass
class TrainConfig:
    """Optimisation schedule and bookkeeping."""

    steps: int = 2000
    lr: float = 2e-4
    backbone_lr: float = 2e-5
    temporal_lr: float = 0.0  # a teacher's temporal module (MSI); 0: train.lr
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    schedule: str = "cosine"  # cosine | step | constant
    step_milestones: list[float] = field(default_factory=lambda: [0.8])  # fractions of steps
    clip_grad: float = 0.1
    amp: str = "none"  # none | bf16 | fp16 (CUDA only)
    # recompute encoder, MSI and decoder layer activations in the backward pass instead of keeping
    # them: less memory for the same gradients, about a third more compute per step
    activation_checkpointing: bool = False
    ema: float = 0.0  # EMA decay, 0 disables
    eval_every: int = 500
    log_every: int = 20
    keep_last: int = 2
    # steps whose checkpoint is also written (without validation) and never pruned: a later run starts there
    save_steps: list[int] = field(default_factory=list)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch intra-op threads on CPU, 0: library default
    time_limit_min: float = 0.0  # stop (save, no validation; resume later) after this many minutes, 0: no limit
    # start from a checkpoint's weights (an image detector's or a teacher's; a new temporal module starts
    # fresh); not the optimiser or step: that is --resume. Ignored when resuming.
    init_from: str = ""
    max_bad_steps: int = 20  # non-finite losses in a row before the run stops
    best_metric: str = "AP50"  # validation metric that selects best.ckpt (higher is better)


@dataclass
class EvalConfig:
    """Evaluation protocol for image-level precision / recall / F1 (DESIGN section 5)."""

    protocol: str = "yona"  # yona | strict | stft
    score_thresh: float | None = None  # None: the protocol's default
    nms_iou: float | None = None  # None: the protocol default (yona/strict 0.3, stft none); 1.0 disables NMS
    num_select: int = 100


@dataclass
class Config:
    """A complete run configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


_CHOICES: dict[str, tuple[str, ...]] = {
    "data.format": ("auto", "coco-vid", "buv", "sun", "sun-seg", "images", "video", "videos"),
    "data.clip_mode": ("adjacent", "random", "global", "past"),
    "model.backbone": ("resnet18", "resnet34", "resnet50", "efficientnet_lite0"),
    "model.temporal": ("none", "mean", "msi"),
    "distill.tfd_mask": ("gaussian", "binary", "full"),
    "distill.tfd_features": ("memory", "backbone"),
    "distill.tfd_target": ("teacher", "residual"),
    "distill.cqd_sampling": ("random", "fixed"),
    "distill.hard_frames_strata": ("teacher", "teacher-negatives", "none"),
    "distill.teacher_view": ("clip", "static"),
    "distill.cqd_class_norm": ("queries", "teacher"),
    "train.schedule": ("cosine", "step", "constant"),
    "train.amp": ("none", "bf16", "fp16"),
    "eval.protocol": ("yona", "strict", "stft"),
}


def _describe(exc: OmegaConfBaseException, what: str) -> str:
    """OmegaConf's message without its multi-line object dump, led by the dotted key."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{what} '{getattr(exc, 'full_key', None) or '?'}': {first_line}"


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML file, resolving ``include:`` (a path or list of paths, relative to the file)."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: include cycle through {' -> '.join(str(p) for p in seen)}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        # OmegaConf's loader rejects duplicated keys, which plain yaml.safe_load silently merges.
        data = OmegaConf.to_container(OmegaConf.load(path))
    except (OmegaConfBaseException, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    data.pop("run_id", None)  # a run folder's config.json (engine/run_folder.py) is a config plus its run id
    includes = data.pop("include", [])
    includes = [includes] if isinstance(includes, str) else list(includes)
    merged: DictConfig = OmegaConf.create({})
    for inc in includes:
        merged = OmegaConf.merge(merged, _read_yaml(path.parent / inc, (*seen, path)))
    return OmegaConf.to_container(OmegaConf.merge(merged, data))  # type: ignore[return-value]


# numeric keys and the values that mean something: (low, high, text); None leaves a side open, and a
# value that can be None (eval.score_thresh: the protocol's) is checked when set
_AT_LEAST_1 = (1, None, "an integer >= 1")
_AT_LEAST_0 = (0, None, ">= 0")
_SHARE = (0.0, 1.0, "a probability in 0..1")
_RANGES: dict[str, tuple[float | None, float | None, str]] = {
    "data.num_frames": _AT_LEAST_1, "data.window": _AT_LEAST_0, "data.stride": _AT_LEAST_1,
    "data.test_size": (16, None, "a size in pixels >= 16"), "data.max_size": (0, None, ">= 0 (0: no cap)"),
    "data.hflip": _SHARE, "data.crop": _SHARE, "data.photometric": _SHARE, "data.batch_size": _AT_LEAST_1,
    "data.workers": (0, None, ">= 0 (0: load in the training process)"),
    "model.num_classes": (0, None, ">= 0 (0: from the training data)"), "model.backbone_stages": (3, 4, "3 or 4"),
    "model.num_feature_levels": (1, None, "an integer >= 1"), "model.hidden_dim": _AT_LEAST_1,
    "model.nheads": _AT_LEAST_1, "model.enc_layers": _AT_LEAST_0, "model.dec_layers": _AT_LEAST_1,
    "model.ffn_dim": _AT_LEAST_1, "model.dropout": (0.0, 0.99, "a probability in 0..0.99"),
    "model.enc_points": _AT_LEAST_1, "model.dec_points": _AT_LEAST_1, "model.num_queries": _AT_LEAST_1,
    "model.dn_number": (0, None, ">= 0 (0: no denoising queries)"), "model.dn_label_noise": _SHARE,
    "model.dn_box_noise": _AT_LEAST_0, "model.msi_layers": _AT_LEAST_1, "model.msi_points": _AT_LEAST_1,
    "loss.cost_class": _AT_LEAST_0, "loss.cost_bbox": _AT_LEAST_0, "loss.cost_giou": _AT_LEAST_0,
    "loss.loss_class": _AT_LEAST_0, "loss.loss_bbox": _AT_LEAST_0, "loss.loss_giou": _AT_LEAST_0,
    "loss.focal_alpha": _SHARE, "loss.focal_gamma": _AT_LEAST_0,
    "train.steps": _AT_LEAST_1, "train.lr": (1e-12, None, "a learning rate > 0"),
    "train.backbone_lr": (0.0, None, ">= 0 (0: the backbone stays as it starts)"),
    "train.temporal_lr": (0.0, None, ">= 0 (0: train.lr)"), "train.weight_decay": _AT_LEAST_0,
    "train.warmup_steps": _AT_LEAST_0, "train.clip_grad": (0.0, None, ">= 0 (0: no clipping)"),
    "train.ema": (0.0, 0.99999, "a decay in 0..1, 1 excluded (0: no EMA)"),
    "train.eval_every": (0, None, ">= 0 steps (0: validate only at the end)"), "train.log_every": _AT_LEAST_1,
    "train.keep_last": _AT_LEAST_1, "train.seed": _AT_LEAST_0, "train.threads": (0, None, ">= 0 (0: the default)"),
    "train.time_limit_min": (0.0, None, ">= 0 minutes (0: no limit)"), "train.max_bad_steps": _AT_LEAST_1,
    "eval.score_thresh": _SHARE, "eval.nms_iou": (0.0, 1.0, "an IoU in 0..1 (1: no NMS)"),
    "eval.num_select": _AT_LEAST_1,
}


def _check_ranges(cfg: Config) -> None:
    for dotted, (low, high, text) in _RANGES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(cfg, section), key)
        if value is not None and ((low is not None and value < low) or (high is not None and value > high)):
            raise ConfigError(f"config key '{dotted}' = {value!r}: expected {text}")
    bad_sizes = [s for s in cfg.data.train_sizes if s < 16]
    if not cfg.data.train_sizes or bad_sizes:
        raise ConfigError(f"config key 'data.train_sizes' = {list(cfg.data.train_sizes)}: expected one or more sizes "
                          "in pixels >= 16")
    bad_milestones = [m for m in cfg.train.step_milestones if not 0.0 < m < 1.0]
    if bad_milestones:
        raise ConfigError(f"config key 'train.step_milestones' = {list(cfg.train.step_milestones)}: expected "
                          "fractions of train.steps in 0..1, both excluded")


def _check_choices(cfg: Config) -> None:
    for dotted, allowed in _CHOICES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ConfigError(f"config key '{dotted}' = {value!r}: expected one of {', '.join(allowed)}")
    _check_ranges(cfg)
    bad_saves = [step for step in cfg.train.save_steps if not 1 <= step <= cfg.train.steps]
    if bad_saves:
        raise ConfigError(
            f"config key 'train.save_steps' = {list(cfg.train.save_steps)}: {bad_saves} outside 1..train.steps "
            f"= {cfg.train.steps}"
        )
    for key in ("tfd", "cqd", "cqd_proposals", "cqd_student_queries", "pseudo_boxes"):
        if getattr(cfg.distill, key) < 0:
            raise ConfigError(
                f"config key 'distill.{key}' = {getattr(cfg.distill, key)}: expected a weight >= 0 (0: off)"
            )
    for key in ("hard_frames", "student_degrade", "pseudo_score"):
        if not 0.0 <= getattr(cfg.distill, key) <= 1.0:
            raise ConfigError(
                f"config key 'distill.{key}' = {getattr(cfg.distill, key)}: expected a value in 0..1"
            )
    share = unlabelled_share(cfg)
    if share and not (0.0 < share < 1.0 and unlabelled_per_batch(cfg) >= 1):
        raise ConfigError(
            f"config key 'distill.unlabelled' = {share}: expected a share of the batch in 0..1, 1 excluded, that "
            f"adds at least one unlabelled frame to data.batch_size={cfg.data.batch_size} labelled ones (0: off)"
        )


# the share of each batch that an archive (data.unlabelled) fills when distill.unlabelled is left at 0
ARCHIVE_SHARE = 0.5


def unlabelled_share(cfg: Config) -> float:
    """The share of each distillation batch that is unlabelled frames: ``distill.unlabelled``, or
    ``ARCHIVE_SHARE`` when it is 0 and ``data.unlabelled`` names an archive (which is there to be used)."""
    return cfg.distill.unlabelled or (ARCHIVE_SHARE if cfg.data.unlabelled else 0.0)


def unlabelled_per_batch(cfg: Config) -> int:
    """How many unlabelled key frames each training batch holds besides its ``data.batch_size`` labelled
    ones, so that they are ``unlabelled_share`` of the batch (the labelled frames per batch, and so the
    detection loss, stay what they are without them)."""
    share = unlabelled_share(cfg)
    return round(share / (1.0 - share) * cfg.data.batch_size) if 0.0 < share < 1.0 else 0


# list keys whose plain `key=value` overrides add up (`data.unlabelled=a data.unlabelled=b`: both)
REPEATABLE = ("data.unlabelled",)


def _repeated_overrides(overrides: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The overrides that merge one by one, and the values of each ``REPEATABLE`` key given plainly
    (not as a ``[a, b]`` list), which together replace the key's list; an empty value adds nothing."""
    single: list[str] = []
    repeated: dict[str, list[str]] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. train.steps=100)")
        key, value = (part.strip() for part in item.split("=", 1))
        if key in REPEATABLE and not value.startswith("["):
            repeated.setdefault(key, [])
            if value:
                repeated[key].append(value)
        else:
            single.append(item)
    return single, repeated


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file (with includes) <- ``key=value`` overrides, validated.

    Raises ``ConfigError`` naming the offending key on unknown keys, wrong types or bad choices.
    """
    schema = OmegaConf.structured(Config)
    overrides, repeated = _repeated_overrides(overrides or [])
    try:
        if path is not None:
            schema = OmegaConf.merge(schema, _read_yaml(Path(path)))
        for item in overrides:
            schema = OmegaConf.merge(schema, OmegaConf.from_dotlist([item]))
        for key, values in repeated.items():
            section, name = key.split(".")
            schema = OmegaConf.merge(schema, {section: {name: values}})
    except OmegaConfBaseException as exc:
        raise ConfigError(_describe(exc, "config key")) from exc
    cfg: Config = OmegaConf.to_object(schema)  # type: ignore[assignment]
    _check_choices(cfg)
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[return-value]


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a config saved in a checkpoint (validated like a YAML file)."""
    try:
        cfg: Config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), data))  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        raise ConfigError(_describe(exc, "saved config key")) from exc
    _check_choices(cfg)
    return cfg


def config_to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def shipped_configs() -> Path:
    """The ``configs/`` folder of the source checkout (the demo and the benchmarks start from it)."""
    folder = Path(__file__).resolve().parents[2] / "configs"
    if not (folder / "student-tiny.yaml").is_file():
        raise ConfigError(f"configs not found next to the package ({folder}); run from a source checkout")
    return folder
