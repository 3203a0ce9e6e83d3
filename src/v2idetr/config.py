"""Typed configuration: loading, merging and checking.

A run's configuration is the dataclasses of `v2idetr.config_schema` (re-exported here, where callers
import them), merged with a YAML file from ``configs/`` (which may ``include:`` other YAML files) and
then with dotted ``key=value`` overrides from the command line. An unknown key, a wrong type, a
duplicated YAML key or a value out of its range is an error that names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from v2idetr.config_schema import (
    Config,
    DataConfig,
    DistillConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
)
from v2idetr.errors import ConfigError

__all__ = [  # the schema's classes are imported from here
    "Config", "DataConfig", "DistillConfig", "EvalConfig", "LossConfig", "ModelConfig", "TrainConfig",
    "config_from_dict", "config_to_dict", "config_to_yaml", "load_config", "shipped_configs", "unlabelled_per_batch",
    "unlabelled_share",
]


_CHOICES: dict[str, tuple[str, ...]] = {
    "data.format": ("auto", "coco-vid", "buv", "sun", "sun-seg", "images", "video", "videos"),
    "data.clip_mode": ("adjacent", "random", "global", "past"),
    "data.multiscale": ("clip", "batch"),
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
