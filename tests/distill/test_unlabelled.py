"""Distillation on unlabelled key frames: no detection loss there, TFD masks from the teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from v2idetr.config import DistillConfig, LossConfig, ModelConfig
from v2idetr.data.collate import Batch
from v2idetr.distill.objective import DistillationObjective
from v2idetr.engine.checkpoint import load_checkpoint
from v2idetr.errors import ConfigError
from v2idetr.models.criterion import build_criterion
from v2idetr.models.detector import build_detector
from v2idetr.models.teacher import VideoTeacher

ROOT = Path(__file__).resolve().parents[2]
CFG = ModelConfig(backbone_stages=3, num_feature_levels=3, hidden_dim=32, nheads=4, enc_layers=1, dec_layers=2,
                  ffn_dim=64, num_queries=8, dn_number=0, temporal="mean")


def _target(boxes: list[list[float]], labelled: bool = True, image_id: int = 1) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.zeros(len(boxes), dtype=torch.int64), "image_id": torch.tensor(image_id),
            "orig_size": torch.tensor([64, 64]), "size": torch.tensor([64, 64]), "labelled": torch.tensor(labelled)}


def _batch(images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> Batch:
    b, t = images.shape[:2]
    return Batch(images=images, masks=torch.zeros(b, 64, 64, dtype=torch.bool), targets=targets,
                 frame_targets=None, frame_offsets=torch.zeros(b, t, dtype=torch.long))


def _objective(cfg: DistillConfig, seed: int = 0) -> DistillationObjective:
    torch.manual_seed(seed)
    teacher = VideoTeacher(CFG, num_classes=1, num_frames=2)
    student = build_detector(CFG, 1)
    student.train()
    return DistillationObjective(student, teacher, build_criterion(LossConfig(), 1), cfg)


def test_no_detection_loss_on_unlabelled_frames() -> None:
    """The detection loss of a batch [labelled A, unlabelled B] is A's alone, whatever B's targets say;
    the distillation terms still see B."""
    objective = _objective(DistillConfig(tfd=1.0, cqd=1.0, pseudo_score=0.0))
    torch.manual_seed(1)
    images = torch.randn(2, 2, 3, 64, 64)
    a = _target([[0.5, 0.5, 0.3, 0.3]])
    with_b = objective(_batch(images, [a, _target([], labelled=False, image_id=2)]))
    alone = objective(_batch(images[:1], [a]))
    assert with_b["loss_det"].item() == pytest.approx(alone["loss_det"].item(), rel=1e-5)
    # boxes wrongly left on an unlabelled target still never reach the detection loss
    stray = objective(_batch(images, [a, _target([[0.2, 0.2, 0.1, 0.1]], labelled=False, image_id=2)]))
    assert stray["loss_det"].item() == pytest.approx(alone["loss_det"].item(), rel=1e-5)
    # ...while B's distillation terms count: a labelled B changes the detection loss
    labelled_b = objective(_batch(images, [a, _target([[0.2, 0.2, 0.1, 0.1]], image_id=2)]))
    assert labelled_b["loss_det"].item() != pytest.approx(alone["loss_det"].item(), rel=1e-3)
    assert with_b["loss_cqd"].item() != pytest.approx(alone["loss_cqd"].item(), rel=1e-4)


def test_a_batch_without_labelled_frames_is_refused() -> None:
    objective = _objective(DistillConfig())
    batch = _batch(torch.randn(1, 2, 3, 64, 64), [_target([], labelled=False)])
    with pytest.raises(ValueError, match="labelled"):
        objective(batch)


def test_tfd_masks_follow_the_teachers_detections_on_unlabelled_frames() -> None:
    objective = _objective(DistillConfig(pseudo_score=0.5))
    gt = _target([[0.5, 0.5, 0.3, 0.3]])
    batch = _batch(torch.randn(2, 2, 3, 64, 64), [gt, _target([], labelled=False, image_id=2)])
    logits = torch.full((2, 3, 1), -5.0)
    logits[1, 0, 0], logits[1, 2, 0] = 2.0, 0.1  # probability 0.88 and 0.52 pass 0.5; -5 (0.007) does not
    boxes = torch.rand(2, 3, 4) * 0.5 + 0.25
    masks = objective.mask_targets(batch, {"pred_logits": logits, "pred_boxes": boxes})
    assert torch.equal(masks[0]["boxes"], gt["boxes"])  # a labelled frame keeps its ground truth
    assert torch.equal(masks[1]["boxes"], boxes[1, [0, 2]])
    objective.cfg.pseudo_score = 0.6
    assert torch.equal(objective.mask_targets(batch, {"pred_logits": logits, "pred_boxes": boxes})[1]["boxes"],
                       boxes[1, [0]])


def test_the_unlabelled_tfd_term_is_masked_by_the_teachers_boxes() -> None:
    """With every teacher detection below pseudo_score an unlabelled frame has an empty mask: its TFD is 0."""
    objective = _objective(DistillConfig(tfd=1.0, cqd=0.0, pseudo_score=1.0))
    labelled = _batch(torch.randn(1, 2, 3, 64, 64), [_target([[0.5, 0.5, 0.3, 0.3]])])
    assert objective(labelled)["loss_tfd"] > 0
    mixed = _batch(torch.randn(2, 2, 3, 64, 64), [_target([], image_id=1), _target([], labelled=False, image_id=2)])
    assert objective(mixed)["loss_tfd"].item() == 0.0
    objective.cfg.pseudo_score = 0.0  # every teacher query counts: the unlabelled frame is distilled everywhere
    assert objective(mixed)["loss_tfd"].item() > 0.0


def test_static_teacher_sees_its_key_frame_only() -> None:
    """teacher_view=static: the teacher's outputs do not depend on the support frames."""
    objective = _objective(DistillConfig(teacher_view="static"))
    torch.manual_seed(2)
    clip = torch.randn(1, 2, 3, 64, 64)
    other = clip.clone()
    other[:, 1] = torch.randn(3, 64, 64)
    batch = _batch(clip, [_target([[0.5, 0.5, 0.3, 0.3]])])
    static_a = objective._teacher(batch)[1]["pred_logits"]
    static_b = objective._teacher(_batch(other, batch.targets))[1]["pred_logits"]
    assert torch.equal(static_a, static_b)
    objective.cfg.teacher_view = "clip"
    assert not torch.allclose(objective._teacher(batch)[1]["pred_logits"],
                              objective._teacher(_batch(other, batch.targets))[1]["pred_logits"])


def test_without_unlabelled_frames_the_losses_are_the_papers() -> None:
    """An all-labelled batch: detection loss on every frame + w_TFD * TFD (ground-truth masks) + w_CQD * CQD,
    recomputed here from the pieces."""
    cfg = DistillConfig(tfd=2.0, cqd=3.0, cqd_proposals=0.0)
    objective = _objective(cfg)
    torch.manual_seed(3)
    batch = _batch(torch.randn(2, 2, 3, 64, 64), [_target([[0.5, 0.5, 0.3, 0.3]]), _target([], image_id=2)])
    losses = objective(batch)
    student, teacher = objective.student, objective.teacher
    with torch.no_grad():
        t_features = teacher.extract_features(batch.images, batch.masks)
        t_out = teacher.detector.forward_features(t_features, return_intermediates=True)
    s_features = student.extract_features(batch.images[:, 0], batch.masks)
    s_out = student.forward_features(s_features, batch.targets, return_intermediates=True)
    det = objective.criterion(s_out, batch.targets)["loss"]
    tfd = objective.tfd(s_out["memory"].levels(), t_out["memory"].levels(), batch.targets, s_out["memory"].valid_ratios)
    cross = student.decode(s_out["memory"], t_out["query_content"], t_out["query_ref_boxes"])
    cqd = objective.cqd(cross, t_out)
    assert losses["loss_det"].item() == pytest.approx(det.item(), rel=1e-5)
    assert losses["loss_tfd"].item() == pytest.approx(tfd.item(), rel=1e-5)
    assert losses["loss_cqd"].item() == pytest.approx(cqd.item(), rel=1e-5)
    assert losses["loss"].item() == pytest.approx((det + 2.0 * tfd + 3.0 * cqd).item(), rel=1e-5)


def _sparse_copy(src: Path, out: Path, keep_every: int) -> Path:
    """``src`` (COCO-VID) with every frame but one in ``keep_every`` per video unlabelled."""
    doc = json.loads(src.read_text())
    by_video: dict[int, list[dict]] = {}
    for image in doc["images"]:
        by_video.setdefault(image["video_id"], []).append(image)
    unlabelled = set()
    for images in by_video.values():
        for position, image in enumerate(sorted(images, key=lambda im: im["frame_id"])):
            if position % keep_every:
                image["labelled"] = False
                unlabelled.add(image["id"])
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] not in unlabelled]
    for image in doc["images"]:
        image["file_name"] = str((src.parent / image["file_name"]).resolve())
    out.write_text(json.dumps(doc))
    return out


def test_distill_mixes_unlabelled_frames_into_every_batch(teacher_ckpt, tiny_synth, tiny_model, tmp_path,
                                                          monkeypatch):
    """distill.unlabelled: that share of every batch is unlabelled key frames; an image model trained on
    the same file sees its labelled frames only; the teacher's clips keep the teacher's window."""
    from v2idetr import api
    from v2idetr.engine.trainer import Trainer

    train = _sparse_copy(Path(tiny_synth.train_json), tmp_path / "sparse.json", keep_every=2)
    overrides = [*tiny_model, f"data.train={train}", "train.eval_every=0", "data.batch_size=4"]
    seen: list[list[bool]] = []
    original = DistillationObjective.__call__

    def spy(self, batch):
        seen.append([bool(t["labelled"]) for t in batch.targets])
        return original(self, batch)

    monkeypatch.setattr(DistillationObjective, "__call__", spy)
    clips = []
    fit = Trainer.fit

    def record(self, resume=False):
        clips.append((self.train_clips, [f.labelled for f in self.training_clips().key_frames]))
        return fit(self, resume)

    monkeypatch.setattr(Trainer, "fit", record)
    student = str(ROOT / "configs" / "student-tiny.yaml")
    api.distill(teacher_ckpt, student, [*overrides, "train.steps=3", "distill.unlabelled=0.5", "data.window=7"],
                tmp_path / "s", progress=False)
    # the unlabelled frames come on top of data.batch_size labelled ones: half of a batch of 8
    assert len(seen) == 3 and all(flags.count(False) == 4 and flags.count(True) == 4 for flags in seen)
    teacher_window = load_checkpoint(teacher_ckpt).config["data"]["window"]
    assert clips[0][0].window == teacher_window != 7 and clips[0][0].num_frames == 3
    assert False in clips[0][1]  # the unlabelled frames are among the key frames
    seen.clear()
    api.distill(teacher_ckpt, student, [*overrides, "train.steps=2"], tmp_path / "paper", progress=False)
    assert seen and all(all(flags) for flags in seen)
    api.train(student, [*overrides, "train.steps=1"], tmp_path / "image", progress=False)
    assert all(clips[-1][1]) and len(clips[-1][1]) == sum(
        1 for im in json.loads(train.read_text())["images"] if im.get("labelled", True))
    for share in ("1.0", "0.05"):  # all of the batch; less than one frame of it
        with pytest.raises(ConfigError, match="distill.unlabelled"):
            api.distill(teacher_ckpt, student, [*overrides, f"distill.unlabelled={share}"], tmp_path / "x",
                        progress=False)


def test_residual_tfd_is_zero_when_the_support_frames_add_nothing() -> None:
    """tfd_target=residual with a start equal to the student: the clip of one repeated frame gives the
    static view, so TFD is 0 though the student and the teacher differ; real support frames do not."""
    import copy

    cfg = DistillConfig(tfd=1.0, cqd=0.0, tfd_target="residual")
    with pytest.raises(ConfigError, match="residual"):
        _objective(cfg)
    plain = _objective(DistillConfig())
    objective = DistillationObjective(plain.student, plain.teacher, plain.criterion, cfg,
                                      start=copy.deepcopy(plain.student))
    torch.manual_seed(4)
    key = torch.randn(1, 1, 3, 64, 64)
    target = [_target([[0.5, 0.5, 0.4, 0.4]])]
    assert objective(_batch(key.expand(1, 2, 3, 64, 64).clone(), target))["loss_tfd"].item() < 1e-8
    clip = torch.cat([key, torch.randn(1, 1, 3, 64, 64)], 1)
    assert objective(_batch(clip, target))["loss_tfd"].item() > 0
    objective.cfg.tfd_target = "teacher"
    assert objective(_batch(key.expand(1, 2, 3, 64, 64).clone(), target))["loss_tfd"].item() > 1e-4


def test_residual_tfd_runs_from_a_checkpoint_and_needs_one(teacher_ckpt, tiny_synth, tiny_model, tmp_path):
    from v2idetr import api

    student = str(ROOT / "configs" / "student-tiny.yaml")
    overrides = [*tiny_model, f"data.train={tiny_synth.train_json}", "train.eval_every=0", "train.steps=2",
                 "distill.tfd_target=residual"]
    api.distill(teacher_ckpt, student, overrides, tmp_path / "r", progress=False)
    logged = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_tfd"] > 0 for r in logged if r["type"] == "train")
    with pytest.raises(ConfigError, match="needs a start"):
        api.distill(teacher_ckpt, student, [*overrides, "distill.init_from_teacher=false"], tmp_path / "x",
                    progress=False)


def test_pseudo_boxes_train_the_students_own_predictions_towards_the_teachers_detections() -> None:
    """distill.pseudo_boxes: a set loss on unlabelled frames only, with the teacher's scores as soft targets."""
    objective = _objective(DistillConfig(tfd=0.0, cqd=0.0, pseudo_boxes=1.0, pseudo_score=0.5))
    logits = torch.full((2, 4, 1), -5.0)
    logits[1, 0, 0], logits[1, 1, 0], logits[1, 3, 0] = 2.0, 1.9, 0.5  # two overlapping, one elsewhere
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.51, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1], [0.8, 0.8, 0.2, 0.2]])
    targets = objective.pseudo_targets({"pred_logits": logits, "pred_boxes": boxes.expand(2, 4, 4)}, [1])
    assert len(targets) == 1 and torch.equal(targets[0]["boxes"], boxes[[0, 3]])  # the duplicate is dropped
    assert targets[0]["scores"] == pytest.approx(torch.sigmoid(torch.tensor([2.0, 0.5])))
    torch.manual_seed(5)
    images = torch.randn(2, 2, 3, 64, 64)
    a = _target([[0.5, 0.5, 0.3, 0.3]])
    mixed = objective(_batch(images, [a, _target([], labelled=False, image_id=2)]))
    assert mixed["loss_pseudo"] > 0
    assert objective(_batch(images, [a, _target([], image_id=2)]))["loss_pseudo"].item() == 0.0  # all labelled
    assert mixed["loss"].item() == pytest.approx((mixed["loss_det"] + mixed["loss_pseudo"]).item(), rel=1e-5)


def test_soft_targets_in_the_criterion() -> None:
    """A target's score replaces the 1 of a labelled box in the class loss; 1.0 scores change nothing."""
    criterion = build_criterion(LossConfig(), 1)
    outputs = {"pred_logits": torch.tensor([[[1.0], [-2.0]]]), "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2],
                                                                                           [0.2, 0.2, 0.1, 0.1]]])}
    hard = {"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]), "labels": torch.tensor([0])}
    ones = criterion(outputs, [{**hard, "scores": torch.tensor([1.0])}])["loss_class"]
    assert ones.item() == pytest.approx(criterion(outputs, [hard])["loss_class"].item())
    soft = criterion(outputs, [{**hard, "scores": torch.tensor([0.6])}])["loss_class"]
    assert soft.item() != pytest.approx(ones.item(), rel=1e-3)
