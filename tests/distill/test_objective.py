"""Teacher training and distillation end to end on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from v2idetr import api
from v2idetr.config import config_from_dict
from v2idetr.engine.checkpoint import load_checkpoint
from v2idetr.errors import ConfigError
from v2idetr.models.detector import build_detector

ROOT = Path(__file__).resolve().parents[2]


def test_teacher_checkpoint_knows_it_is_a_teacher_and_evaluates_on_clips(teacher_ckpt, tiny_synth, tmp_path):
    ckpt = load_checkpoint(teacher_ckpt)
    assert ckpt.kind == "teacher"
    assert any(k.startswith("temporal.") for k in ckpt.model)
    metrics = api.evaluate(teacher_ckpt, tiny_synth.val_json, out_dir=tmp_path / "e", progress=False)
    assert 0.0 <= metrics["AP50"] <= 1.0


def test_distilled_student_is_a_plain_image_detector(teacher_ckpt, tiny_synth, tiny_model, tmp_path):
    out = tmp_path / "student"
    api.distill(
        teacher_ckpt,
        str(ROOT / "configs" / "student-tiny.yaml"),
        [*tiny_model, f"data.train={tiny_synth.train_json}", f"data.val={tiny_synth.val_json}", "train.steps=3",
         "train.eval_every=0", "distill.tfd=1.0", "distill.cqd=1.0"],
        out,
        progress=False,
    )
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in logged if r["type"] == "train"]
    assert all("loss_tfd" in r and "loss_cqd" in r and "loss_det" in r for r in train_rows)
    for name in ("best.ckpt", "last.ckpt"):
        ckpt = load_checkpoint(out / name)
        assert ckpt.kind == "detector"
        assert not any(k.startswith(("temporal.", "detector.")) for k in ckpt.model)
        student = build_detector(config_from_dict(ckpt.config).model, ckpt.meta["num_classes"])
        result = student.load_state_dict(ckpt.model, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
        assert ckpt.config["data"]["num_frames"] == 1
    # the student's forward pass is the image detector's: same outputs as a plain Detector
    model, _, _ = api.load_model(out / "best.ckpt")
    assert type(model).__name__ == "Detector"
    x = torch.randn(1, 3, 64, 64)
    m = torch.zeros(1, 64, 64, dtype=torch.bool)
    assert model(x, m)["pred_boxes"].shape[-1] == 4


def test_student_starts_at_the_teachers_detector_weights(teacher_ckpt, tiny_synth, tiny_model, tmp_path,
                                                         starting_weights):
    """distill.init_from_teacher: step 0 of the student is the teacher's shared detector; a student of
    another architecture is refused, with the switch that allows it, instead of silently starting fresh."""
    overrides = [*tiny_model, f"data.train={tiny_synth.train_json}", "train.eval_every=0"]
    student_cfg = str(ROOT / "configs" / "student-tiny.yaml")
    teacher = load_checkpoint(teacher_ckpt).model
    with starting_weights() as seen:
        api.distill(teacher_ckpt, student_cfg, overrides, tmp_path / "s", progress=False)
    student = seen[0]
    assert student.keys() == {k.removeprefix("detector.") for k in teacher if k.startswith("detector.")}
    assert all(torch.equal(v, teacher[f"detector.{k}"]) for k, v in student.items())
    with pytest.raises(ConfigError, match=r"distill.init_from_teacher.*shapes differ.*init_from_teacher=false"):
        api.distill(teacher_ckpt, student_cfg, [*overrides, "model.hidden_dim=16"], tmp_path / "other",
                    progress=False)
    with starting_weights() as seen:
        api.distill(teacher_ckpt, student_cfg, [*overrides, "model.hidden_dim=16", "distill.init_from_teacher=false"],
                    tmp_path / "other", progress=False)
    assert {v.shape[0] for k, v in seen[0].items() if "input_proj" in k and k.endswith("0.weight")} == {16}


def test_student_can_start_from_an_image_checkpoint_instead(teacher_ckpt, tiny_synth, tiny_model, tmp_path,
                                                             starting_weights):
    """train.init_from with distill.init_from_teacher=false starts the student at an image model's weights
    (bench's student-from-baseline); asking for both starts is refused, not silently resolved."""
    overrides = [*tiny_model, f"data.train={tiny_synth.train_json}", "train.eval_every=0"]
    student_cfg = str(ROOT / "configs" / "student-tiny.yaml")
    image = tmp_path / "image"
    api.train(student_cfg, [*overrides, "train.steps=1"], image, progress=False)
    start = [f"train.init_from={image / 'last.ckpt'}"]
    with starting_weights() as seen:
        api.distill(teacher_ckpt, student_cfg, [*overrides, *start, "distill.init_from_teacher=false"],
                    tmp_path / "s", progress=False)
    student = seen[0]
    image_weights = load_checkpoint(image / "last.ckpt").model
    teacher = load_checkpoint(teacher_ckpt).model
    assert all(torch.equal(v, image_weights[k]) for k, v in student.items())
    assert not all(torch.equal(v, teacher[f"detector.{k}"]) for k, v in student.items())
    with pytest.raises(ConfigError, match=r"distill.init_from_teacher.*train.init_from"):
        api.distill(teacher_ckpt, student_cfg, [*overrides, *start], tmp_path / "both", progress=False)


def test_an_image_model_can_teach_self_training(tiny_synth, tiny_model, tmp_path, monkeypatch):
    """distill --teacher image.ckpt: the same losses from a single-frame teacher (clips of one frame);
    a teacher config for the student is still refused."""
    from v2idetr.distill import objective as objective_module
    from v2idetr.models.teacher import FrameTeacher

    image = tmp_path / "image"
    overrides = [*tiny_model, f"data.train={tiny_synth.train_json}", "train.steps=1", "train.eval_every=0"]
    api.train(str(ROOT / "configs" / "student-tiny.yaml"), overrides, image, progress=False)
    teachers = []
    original = objective_module.DistillationObjective.__init__

    def spy(self, student, teacher, *args, **kwargs):
        teachers.append(teacher)
        original(self, student, teacher, *args, **kwargs)

    monkeypatch.setattr(objective_module.DistillationObjective, "__init__", spy)
    api.distill(image / "best.ckpt", str(ROOT / "configs" / "student-tiny.yaml"), [*overrides, "train.steps=2"],
                tmp_path / "s", progress=False)
    assert isinstance(teachers[0], FrameTeacher)
    logged = [json.loads(line) for line in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_tfd"] >= 0 and "loss_cqd" in r for r in logged if r["type"] == "train")
    with pytest.raises(ConfigError, match="num_frames"):
        api.distill(image / "best.ckpt", str(ROOT / "configs" / "teacher-tiny.yaml"), overrides, tmp_path / "t",
                    progress=False)


def _student_equal_to_its_one_frame_teacher():
    """A one-frame mean teacher, a student with its detector's weights (so TFD = CQD = 0) and one
    labelled 64 px frame."""
    from v2idetr.config import ModelConfig
    from v2idetr.data.collate import Batch
    from v2idetr.models.teacher import VideoTeacher

    cfg = ModelConfig(backbone_stages=3, num_feature_levels=3, hidden_dim=32, nheads=4, enc_layers=1,
                      dec_layers=2, ffn_dim=64, num_queries=8, dn_number=4, temporal="mean")
    torch.manual_seed(0)
    teacher = VideoTeacher(cfg, num_classes=1, num_frames=1)
    student = build_detector(cfg, 1)
    student.load_state_dict(teacher.detector.state_dict())
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.3, 0.3]]), "labels": torch.tensor([0]),
                "image_id": torch.tensor(1), "orig_size": torch.tensor([64, 64]), "size": torch.tensor([64, 64])}]
    batch = Batch(images=torch.randn(1, 1, 3, 64, 64), masks=torch.zeros(1, 64, 64, dtype=torch.bool),
                  targets=targets, frame_targets=None, frame_offsets=torch.zeros(1, 1, dtype=torch.long))
    return cfg, teacher, student, batch


def test_distillation_terms_vanish_when_the_student_is_the_teacher() -> None:
    """A one-frame mean teacher is exactly its detector: a student with the same weights sees the
    same features and decodes the teacher's queries to the teacher's outputs, so TFD = CQD = 0."""
    from v2idetr.config import DistillConfig, LossConfig
    from v2idetr.distill.objective import DistillationObjective
    from v2idetr.models.criterion import build_criterion

    cfg, teacher, student, batch = _student_equal_to_its_one_frame_teacher()
    objective = DistillationObjective(student, teacher, build_criterion(LossConfig(), 1),
                                      DistillConfig(tfd=1.0, cqd=1.0, cqd_proposals=2.0, cqd_student_queries=1.0))
    losses = objective(batch)
    assert losses["loss_tfd"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["loss_cqd"].item() == pytest.approx(0.0, abs=1e-4)
    assert losses["loss"].item() == pytest.approx(losses["loss_det"].item(), rel=1e-5)
    # a different student is pulled towards the teacher, and only the student gets gradients
    torch.manual_seed(1)
    other = build_detector(cfg, 1)
    objective = DistillationObjective(other, teacher, build_criterion(LossConfig(), 1), DistillConfig())
    losses = objective(batch)
    assert losses["loss_tfd"] > 0 and losses["loss_cqd"] > 0
    losses["loss"].backward()
    # CQD's proposal term reaches the student's two-stage scoring head, which the cross-view
    # decoding alone (the teacher's queries, the student's decoder) never touches
    head = other.query_selector.enc_class_embed.weight
    for weight, reaches in ((0.0, False), (2.0, True)):
        other.zero_grad(set_to_none=True)
        cqd_only = DistillConfig(tfd=0.0, cqd=1.0, cqd_proposals=weight)
        DistillationObjective(other, teacher, build_criterion(LossConfig(), 1), cqd_only)(batch)["loss_cqd"].backward()
        assert (head.grad is not None and head.grad.abs().sum() > 0) == reaches
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in other.parameters())


def test_student_query_term_judges_the_students_own_queries_with_the_teacher() -> None:
    """The teacher's verdict is its decoder on the student's reference boxes: a student that proposes
    elsewhere than the teacher gets a verdict on *its* boxes, and the term adds exactly its weight
    times the agreement between the student's own predictions and that verdict."""
    from v2idetr.config import DistillConfig, LossConfig, ModelConfig
    from v2idetr.data.collate import Batch
    from v2idetr.distill.objective import DistillationObjective
    from v2idetr.models.criterion import build_criterion
    from v2idetr.models.teacher import VideoTeacher

    cfg = ModelConfig(backbone_stages=3, num_feature_levels=3, hidden_dim=32, nheads=4, enc_layers=1,
                      dec_layers=2, ffn_dim=64, num_queries=8, dn_number=0, temporal="mean", dropout=0.0)
    torch.manual_seed(0)
    teacher = VideoTeacher(cfg, num_classes=1, num_frames=1)
    torch.manual_seed(1)
    student = build_detector(cfg, 1)
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.3, 0.3]]), "labels": torch.tensor([0]),
                "image_id": torch.tensor(1), "orig_size": torch.tensor([64, 64]), "size": torch.tensor([64, 64])}]
    batch = Batch(images=torch.randn(1, 1, 3, 64, 64), masks=torch.zeros(1, 64, 64, dtype=torch.bool),
                  targets=targets, frame_targets=None, frame_offsets=torch.zeros(1, 1, dtype=torch.long))
    criterion = build_criterion(LossConfig(), 1)
    losses = {}
    for weight in (0.0, 3.0):
        torch.manual_seed(2)
        objective = DistillationObjective(student, teacher, criterion,
                                          DistillConfig(tfd=0.0, cqd=1.0, cqd_student_queries=weight))
        losses[weight] = objective(batch)["loss_cqd"]
    t_outputs = objective._teacher(batch)[1]
    s_outputs = student(batch.images, batch.masks, return_intermediates=True)
    verdict = objective._teacher_on_student(t_outputs, s_outputs)
    assert not torch.allclose(s_outputs["query_ref_boxes"], t_outputs["query_ref_boxes"])
    expected = teacher.detector.decode(t_outputs["memory"], t_outputs["query_content"], s_outputs["query_ref_boxes"])
    assert torch.allclose(verdict["pred_logits"], expected["pred_logits"])
    assert torch.allclose(losses[3.0] - losses[0.0], 3.0 * objective.cqd.agreement(s_outputs, verdict), atol=1e-5)
    assert losses[3.0] > losses[0.0]
    # a student with more queries than the teacher has contents cannot be judged: refused up front
    more = build_detector(ModelConfig(**{**cfg.__dict__, "num_queries": 12}), 1)
    with pytest.raises(ConfigError, match=r"distill\.cqd_student_queries.*num_queries"):
        DistillationObjective(more, teacher, criterion, DistillConfig(cqd_student_queries=1.0))


@pytest.mark.parametrize("proposals", [0.0, 2.0])
def test_proposal_term_needs_two_stage_models(proposals: float) -> None:
    from v2idetr.config import DistillConfig, LossConfig, ModelConfig
    from v2idetr.distill.objective import DistillationObjective
    from v2idetr.models.criterion import build_criterion
    from v2idetr.models.teacher import VideoTeacher

    cfg = ModelConfig(backbone_stages=3, num_feature_levels=3, hidden_dim=32, nheads=4, enc_layers=1,
                      dec_layers=1, ffn_dim=64, num_queries=8, dn_number=0, temporal="mean", two_stage=False)
    teacher = VideoTeacher(cfg, num_classes=1, num_frames=1)
    args = (build_detector(cfg, 1), teacher, build_criterion(LossConfig(), 1),
            DistillConfig(tfd=1.0, cqd=1.0, cqd_proposals=proposals))
    if proposals > 0:
        with pytest.raises(ConfigError, match=r"distill\.cqd_proposals.*two_stage=false"):
            DistillationObjective(*args)
    else:
        assert DistillationObjective(*args).cqd is not None


def test_only_the_student_sees_the_degraded_key_frame_and_only_in_training() -> None:
    """distill.student_degrade: with a student equal to its one-frame teacher, TFD is 0 on clean frames
    and > 0 once the student's key frame is degraded; an evaluating student sees the clean frame."""
    from v2idetr.config import DistillConfig, LossConfig
    from v2idetr.distill.objective import DistillationObjective
    from v2idetr.models.criterion import build_criterion

    cfg, teacher, student, batch = _student_equal_to_its_one_frame_teacher()
    objective = DistillationObjective(student, teacher, build_criterion(LossConfig(), 1),
                                      DistillConfig(tfd=1.0, cqd=0.0, student_degrade=1.0))
    student.eval()
    assert objective(batch)["loss_tfd"].item() == pytest.approx(0.0, abs=1e-6)
    student.train()
    assert objective(batch)["loss_tfd"].item() > 1e-4


def test_without_teacher_fed_terms_the_teacher_is_not_run(monkeypatch) -> None:
    """TFD, CQD and pseudo-boxes off (the student-init-only control): the loss is the detection loss
    alone, so the teacher's pass over the clip is skipped; with any of them on it runs."""
    from v2idetr.config import DistillConfig, LossConfig
    from v2idetr.distill.objective import DistillationObjective
    from v2idetr.models.criterion import build_criterion

    _, teacher, student, batch = _student_equal_to_its_one_frame_teacher()
    calls = []
    run_teacher = DistillationObjective._teacher
    monkeypatch.setattr(DistillationObjective, "_teacher", lambda self, b: calls.append(1) or run_teacher(self, b))
    criterion = build_criterion(LossConfig(), 1)
    torch.manual_seed(1)  # the same denoising queries for both losses
    losses = DistillationObjective(student, teacher, criterion, DistillConfig(tfd=0.0, cqd=0.0))(batch)
    assert calls == [] and "loss_tfd" not in losses and "loss_cqd" not in losses
    torch.manual_seed(1)
    alone = criterion(student(batch.images[:, 0], batch.masks, batch.targets), batch.targets)["loss"]
    assert losses["loss"].item() == pytest.approx(alone.item(), rel=1e-6)
    DistillationObjective(student, teacher, criterion, DistillConfig(tfd=0.0, cqd=1.0))(batch)
    assert calls == [1]
