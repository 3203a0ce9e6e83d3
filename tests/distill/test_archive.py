"""Distillation on an archive of unlabelled videos (``data.unlabelled``): its frames fill half of
every batch, never reach a detection loss or a metric, and the run reports how many it reached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from v2idetr import api
from v2idetr.data.archive import synthetic_archive
from v2idetr.distill.objective import DistillationObjective
from v2idetr.engine.trainer import Trainer
from v2idetr.errors import ConfigError, DatasetError
from v2idetr.models.criterion import SetCriterion

ROOT = Path(__file__).resolve().parents[2]
STUDENT = str(ROOT / "configs" / "student-tiny.yaml")


def test_distill_on_an_archive(teacher_ckpt, tiny_synth, tiny_model, tmp_path, monkeypatch) -> None:
    archive = synthetic_archive(tmp_path / "archive", "ultrasound", 2, 6, 64, seed=3)
    archive_frames = {str((archive.parent / im["file_name"]).resolve())
                      for im in json.loads(archive.read_text())["images"]}
    train_ids = {im["id"] for im in json.loads(Path(tiny_synth.train_json).read_text())["images"]}
    overrides = [*tiny_model, f"data.train={tiny_synth.train_json}", f"data.val={tiny_synth.val_json}",
                 "train.eval_every=2", "data.batch_size=4", f"data.unlabelled={archive}"]
    seen_keys: list[list[tuple[int, bool]]] = []
    losses_on: list[int] = []
    forward = SetCriterion.forward

    def spy(self, outputs, targets):
        losses_on.extend(int(t["image_id"]) for t in targets if "scores" not in t)
        return forward(self, outputs, targets)

    monkeypatch.setattr(SetCriterion, "forward", spy)
    call = DistillationObjective.__call__

    def keys(self, batch):
        seen_keys.append([(int(t["image_id"]), bool(t["labelled"])) for t in batch.targets])
        return call(self, batch)

    monkeypatch.setattr(DistillationObjective, "__call__", keys)
    validated: list[set[str]] = []
    validate = Trainer.validate

    def scored(self, model, step):
        validated.append({str(Path(f.path).resolve()) for f in self.val_index.frames()})
        return validate(self, model, step)

    monkeypatch.setattr(Trainer, "validate", scored)
    api.distill(teacher_ckpt, STUDENT, [*overrides, "train.steps=3"], tmp_path / "s", progress=False)
    # half of each batch (4 on top of data.batch_size=4) is archive frames, whose ids follow the training set's
    assert len(seen_keys) == 3
    for batch in seen_keys:
        assert sum(1 for _, labelled in batch if not labelled) == 4
        assert all((image_id in train_ids) == labelled for image_id, labelled in batch)
    assert losses_on and set(losses_on) <= train_ids  # never a detection loss on an archive frame
    log = [json.loads(line) for line in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    seen = [e["unlabelled_seen"] for e in log if e.get("type") == "train"]
    assert seen == sorted(seen) and 4 <= seen[-1] <= 12
    # validation (which chooses best.ckpt) scores the validation frames only
    val = json.loads(Path(tiny_synth.val_json).read_text())
    assert validated and all(len(frames) == len(val["images"]) and not frames & archive_frames for frames in validated)


def test_an_archive_is_refused_where_it_cannot_be_used(teacher_ckpt, tiny_synth, tiny_model, tmp_path) -> None:
    overrides = [*tiny_model, f"data.train={tiny_synth.train_json}", "train.steps=1", "train.eval_every=0"]
    # an image detector or a teacher trains on labelled frames only
    with pytest.raises(ConfigError, match="data.unlabelled"):
        api.train(STUDENT, [*overrides, f"data.unlabelled={tiny_synth.train_json}"], tmp_path / "t", progress=False)
    # labelled frames in an archive, and the validation videos as an archive
    with pytest.raises(DatasetError, match="nobody labelled"):
        api.distill(teacher_ckpt, STUDENT, [*overrides, f"data.unlabelled={tiny_synth.train_json}"], tmp_path / "a",
                    progress=False)
    frames = Path(tiny_synth.val_json).parent / "frames"
    with pytest.raises(DatasetError, match=r"also in data\.(train|val)"):
        api.distill(teacher_ckpt, STUDENT, [*overrides, f"data.val={tiny_synth.val_json}", f"data.unlabelled={frames}"],
                    tmp_path / "b", progress=False)
