import re
from pathlib import Path

import pytest

from v2idetr.config import Config, config_from_dict, config_to_dict, load_config
from v2idetr.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_then_yaml_then_overrides(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("model:\n  hidden_dim: 96\ntrain:\n  steps: 10\n")
    child = tmp_path / "child.yaml"
    child.write_text("include: base.yaml\ntrain:\n  steps: 20\n  lr: 0.001\n")
    cfg = load_config(child, ["train.steps=30", "data.train_sizes=[96,112]", "data.skip_invalid=false"])
    assert cfg.model.hidden_dim == 96  # from the include
    assert cfg.train.lr == pytest.approx(0.001)  # from the file
    assert cfg.train.steps == 30  # the command line wins
    assert cfg.data.train_sizes == [96, 112]
    assert cfg.model.enc_layers == Config().model.enc_layers  # untouched default


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.stepz=5", "train.stepz"),
        ("train.steps=abc", "train.steps"),
        ("model.hidden_dim=1.5", "model.hidden_dim"),
        ("train.amp=True", "train.amp"),
        ("eval.protocol=coco", "eval.protocol"),
        ("nokey", "key=value"),
        ("distill.tfd=-1", "distill.tfd"),
        ("distill.cqd_proposals=-0.5", "distill.cqd_proposals"),
        ("distill.hard_frames=1.5", "distill.hard_frames"),
        ("distill.hard_frames=-0.1", "distill.hard_frames"),
        ("distill.hard_frames_strata=labels", "distill.hard_frames_strata"),
        ("distill.student_degrade=2", "distill.student_degrade"),
    ],
)
def test_bad_overrides_name_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(None, [override])


def test_a_model_without_two_stage_queries_still_configures() -> None:
    """The proposal term is on by default but only distillation needs two-stage models (checked
    there, tests/distill/test_objective.py): training such an image model must not be refused."""
    cfg = load_config(None, ["model.two_stage=false"])
    assert not cfg.model.two_stage and cfg.distill.cqd_proposals > 0


def test_unknown_key_in_yaml_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  hiden_dim: 64\n")
    with pytest.raises(ConfigError, match="model.hiden_dim"):
        load_config(path)


def test_duplicated_yaml_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  steps: 1\n  steps: 2\n")
    with pytest.raises(ConfigError, match="steps"):
        load_config(path)


def test_include_cycle_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("include: b.yaml\n")
    (tmp_path / "b.yaml").write_text("include: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_round_trip_through_dict() -> None:
    cfg = load_config(None, ["train.steps=7", "model.temporal=msi"])
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_load(name: str) -> None:
    load_config(CONFIGS / name)


def test_unlabelled_frames_join_the_labelled_batch() -> None:
    """distill.unlabelled is the share of the batch; the labelled frames per batch stay data.batch_size."""
    from v2idetr.config import unlabelled_per_batch

    for share, batch, extra in ((0.0, 8, 0), (0.5, 8, 8), (0.2, 8, 2), (0.75, 4, 12)):
        assert unlabelled_per_batch(load_config(None, [f"distill.unlabelled={share}", f"data.batch_size={batch}"])) == extra


@pytest.mark.parametrize("override", [
    "data.batch_size=0", "train.lr=-1", "train.lr=0", "train.steps=-5", "train.steps=0", "train.eval_every=-1",
    "train.log_every=0", "train.keep_last=0", "data.hflip=1.5", "data.num_frames=0", "data.test_size=0",
    "data.train_sizes=[]", "data.train_sizes=[128,0]", "model.hidden_dim=0", "model.num_queries=0",
    "model.backbone_stages=5", "train.ema=1.0", "eval.score_thresh=-0.1", "eval.nms_iou=1.5", "train.seed=-1",
    "train.step_milestones=[0]", "loss.loss_giou=-1", "train.time_limit_min=-1", "data.workers=-2",
    "data.multiscale=frame",
])
def test_meaningless_numbers_are_refused_with_the_key(override: str) -> None:
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"config key '{re.escape(key)}' = .*: expected"):
        load_config(None, [override])


@pytest.mark.parametrize("override", ["train.eval_every=0", "train.clip_grad=0", "train.ema=0", "data.crop=1",
                                      "model.dn_number=0", "model.enc_layers=0", "eval.nms_iou=1.0"])
def test_zero_and_edge_values_that_mean_something_are_accepted(override: str) -> None:
    load_config(None, [override])
