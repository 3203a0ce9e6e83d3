"""`v2idetr pseudo-label`: from predict's detections or a checkpoint (a video teacher on its clips) to a
training file whose unlabelled frames carry the model's boxes, marked; `data stats` counts them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from v2idetr import api
from v2idetr.cli import main
from v2idetr.data.archive import synthetic_archive
from v2idetr.data.detection_fusion import fuse_detections
from v2idetr.data.formats.cocovid import read_coco_vid
from v2idetr.data.load import load_index
from v2idetr.data.pseudo_labels import PSEUDO_FRAME
from v2idetr.data.unlabelled import sparsify
from v2idetr.engine.coco_results import read_coco_results
from v2idetr.errors import DatasetError


def test_cli_pseudo_label_from_predict_detections_and_train_on_it(tiny_synth, tiny_checkpoint, tiny_model, configs_dir,
                                                                    tmp_path, capsys):
    budget = tmp_path / "budget.json"
    budget.write_text(json.dumps(sparsify(load_index(tiny_synth.train_json), 4).to_coco_vid(image_root=tmp_path)))
    preds = tmp_path / "preds"
    assert main(["predict", str(budget), "--checkpoint", str(tiny_checkpoint), "--out", str(preds),
                 "--score-thresh", "0.0", "--no-progress"]) == 0
    out = tmp_path / "pseudo.json"
    capsys.readouterr()
    assert main(["pseudo-label", str(budget), "--detections", str(preds / "detections.json"),
                 "--out", str(out), "--score", "0.3", "--ambiguous", "0.1"]) == 0
    printed = capsys.readouterr().out
    assert "pseudo-labelled" in printed and f"wrote {out}" in printed
    before, after = read_coco_vid(budget), read_coco_vid(out)
    records = json.loads(preds.joinpath("detections.json").read_text())
    sure = {r["image_id"] for r in records if r["score"] >= 0.3}
    unsure = {r["image_id"] for r in records if 0.1 <= r["score"] < 0.3}
    unlabelled = {f.image_id for f in before.frames() if not f.labelled}
    assert {f.image_id for f in after.frames() if not f.labelled} == unlabelled & unsure
    for frame in after.frames():
        if frame.image_id in unlabelled - unsure:
            assert frame.extra[PSEUDO_FRAME] is True and (len(frame.boxes) > 0) == (frame.image_id in sure)
    assert [f.boxes.tolist() for f in after.frames() if f.image_id not in unlabelled] == [
        f.boxes.tolist() for f in before.frames() if f.labelled]
    assert main(["data", "validate", str(out), "--no-decode"]) == 0
    near = tmp_path / "temporal.json"  # --temporal reaches the rule: a neighbour may confirm, never unlabel
    assert main(["pseudo-label", str(budget), "--detections", str(preds / "detections.json"), "--out", str(near),
                 "--score", "0.3", "--ambiguous", "0.1", "--temporal", "2"]) == 0
    assert "confirmed by a frame at most 2 away" in capsys.readouterr().out
    assert read_coco_vid(near).num_unlabelled_frames <= after.num_unlabelled_frames
    assert read_coco_vid(near).info["pseudo_labels"]["temporal"] == 2
    bridged = tmp_path / "interpolated.json"  # --interpolate reaches the rule: it adds boxes, never unlabels
    assert main(["pseudo-label", str(budget), "--detections", str(preds / "detections.json"), "--out", str(bridged),
                 "--score", "0.3", "--ambiguous", "0.1", "--interpolate", "3"]) == 0
    assert "interpolated between sure boxes at most 3 frames" in capsys.readouterr().out
    assert read_coco_vid(bridged).num_unlabelled_frames <= after.num_unlabelled_frames
    assert read_coco_vid(bridged).info["pseudo_labels"]["interpolate"] == 3
    assert main(["data", "stats", str(out), "--no-check-files"]) == 0
    pseudo = sum(1 for f in after.frames() if f.extra.get(PSEUDO_FRAME))
    assert f"pseudo-labelled: {pseudo} of the labelled frames" in capsys.readouterr().out
    api.train(configs_dir / "student-tiny.yaml", [*tiny_model, f"data.train={out}", "train.steps=1", "train.eval_every=0"], tmp_path / "run",
              progress=False)
    assert (tmp_path / "run" / "last.ckpt").is_file()


def test_cli_pseudo_label_needs_unlabelled_frames_and_matching_detections(tiny_synth, tmp_path, capsys):
    out = tmp_path / "out.json"
    args = ["pseudo-label", str(tiny_synth.train_json), "--out", str(out), "--detections"]
    missing = tmp_path / "none.json"
    assert main([*args, str(missing)]) == 2
    assert "nothing to pseudo-label" in capsys.readouterr().err
    budget = tmp_path / "budget.json"
    budget.write_text(json.dumps(sparsify(load_index(tiny_synth.train_json), 4).to_coco_vid(image_root=tmp_path)))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([{"image_id": 99999, "category_id": 1, "bbox": [0, 0, 4, 4], "score": 0.9}]))
    assert main(["pseudo-label", str(budget), "--out", str(out), "--detections", str(wrong)]) == 2
    assert "99999" in capsys.readouterr().err and not out.exists()


def test_cli_pseudo_label_with_a_video_teacher_checkpoint(tiny_synth, teacher_ckpt, tmp_path, capsys):
    """The teacher runs on each unlabelled frame's clip: --checkpoint writes the labels that --detections
    makes of `predict`'s output for the same teacher (the same clips; both take the protocol's NMS through
    `select_detections`, which this tiny model's non-overlapping boxes do not exercise); the file is
    refused for evaluation."""
    budget = tmp_path / "budget.json"
    budget.write_text(json.dumps(sparsify(load_index(tiny_synth.train_json), 4).to_coco_vid(image_root=tmp_path)))
    preds = tmp_path / "preds"
    assert main(["predict", str(budget), "--checkpoint", str(teacher_ckpt), "--out", str(preds),
                 "--score-thresh", "0.0", "--no-progress"]) == 0
    best: dict[int, float] = {}
    for r in json.loads((preds / "detections.json").read_text()):
        best[r["image_id"]] = max(best.get(r["image_id"], 0.0), r["score"])
    tops = sorted(best.values())
    cut = f"{(tops[1] + tops[2]) / 2:.6f}"  # between two frames: all but two get boxes, many overlapping (NMS)
    for source, name in (("--checkpoint", str(teacher_ckpt)), ("--detections", str(preds / "detections.json"))):
        assert main(["pseudo-label", str(budget), source, name, "--out", str(tmp_path / f"{source[2:]}.json"),
                     "--score", cut, "--ambiguous", cut, "--no-progress"]) == 0
    assert "human-labelled frames unchanged" in capsys.readouterr().out
    by_model, by_file = read_coco_vid(tmp_path / "checkpoint.json"), read_coco_vid(tmp_path / "detections.json")
    marked = [f for f in by_model.frames() if f.extra.get(PSEUDO_FRAME)]
    assert len(marked) == read_coco_vid(budget).num_unlabelled_frames  # equal thresholds: no frame ambiguous
    assert any(len(f.boxes) for f in marked) and any(not len(f.boxes) for f in marked)
    assert all(b["pseudo_label"] and b["score"] >= float(cut) for f in marked for b in f.box_extra)
    files = by_file.frame_by_image_id()
    for frame in by_model.frames():
        np.testing.assert_allclose(frame.boxes, files[frame.image_id].boxes, atol=0.01)  # predict rounds to 0.01 px
    with pytest.raises(DatasetError, match="pseudo-labels in evaluation data"):
        api.evaluate(teacher_ckpt, tmp_path / "checkpoint.json", progress=False)


def test_the_teacher_runs_only_on_the_frames_it_labels(tiny_synth, teacher_ckpt, tmp_path, monkeypatch):
    """The model's pass covers the unlabelled key frames and nothing else (their clips still take labelled
    support frames): predictions on frames people labelled would be thrown away."""
    budget = sparsify(load_index(tiny_synth.train_json), 4)
    seen: list[int] = []
    predict = api.predict_loader

    def spy(model, postprocess, loader, *args, **kwargs):
        out = predict(model, postprocess, loader, *args, **kwargs)
        seen.extend(out)
        return out

    monkeypatch.setattr(api, "predict_loader", spy)
    api.pseudo_label(teacher_ckpt, budget, tmp_path / "pseudo.json", progress=False)
    assert sorted(seen) == sorted(f.image_id for f in budget.frames() if not f.labelled)
    assert 0 < len(seen) < len(list(budget.frames()))


def test_an_archive_pseudo_labelled_by_the_teacher_merges_into_training_data(tiny_synth, teacher_ckpt, tiny_model,
                                                                              configs_dir, tmp_path, capsys):
    """Videos nobody labelled (`synth --unlabelled-videos`) through the teacher's pseudo-labels: every
    archive frame is marked or left unlabelled, `data merge` puts them beside the labelled videos, and a
    student trains on the result."""
    archive = synthetic_archive(tmp_path / "archive", "ultrasound", 2, 6, 64, 3)
    out = tmp_path / "archive-pseudo.json"
    assert main(["pseudo-label", str(archive), "--checkpoint", str(teacher_ckpt), "--out", str(out),
                 "--score", "0.0001", "--ambiguous", "0.0001", "--no-progress"]) == 0
    pseudo = read_coco_vid(out)
    assert pseudo.num_unlabelled_frames == 0 and all(f.extra[PSEUDO_FRAME] for f in pseudo.frames())
    merged = tmp_path / "train+archive.json"
    capsys.readouterr()
    assert main(["data", "merge", str(tiny_synth.train_json), str(out), "--out", str(merged)]) == 0
    assert f"({pseudo.num_frames} of them pseudo-labelled)" in capsys.readouterr().out
    both = read_coco_vid(merged)
    assert both.num_frames == read_coco_vid(tiny_synth.train_json).num_frames + pseudo.num_frames
    api.train(configs_dir / "student-tiny.yaml", [*tiny_model, f"data.train={merged}", "train.steps=1",
                                                  "train.eval_every=0"], tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "last.ckpt").is_file()


def test_pseudo_label_on_an_archive_folder(tmp_path, tiny_synth, tiny_checkpoint, write_video, monkeypatch, capsys):
    """A folder of per-video frame folders is pseudo-labelled like any dataset; video files cannot be
    (COCO-VID names frame files): the command says so before the model's pass, not after it."""
    frames = sorted((Path(tiny_synth.train_json).parent / "frames").iterdir())[:2]
    for folder in frames:
        shutil.copytree(folder, tmp_path / "archive" / folder.name)
    out = tmp_path / "pseudo.json"
    assert main(["pseudo-label", str(tmp_path / "archive"), "--checkpoint", str(tiny_checkpoint), "--out", str(out),
                 "--no-progress"]) == 0
    boxed = read_coco_vid(out)
    assert [v.name for v in boxed.videos] == [f.name for f in frames]
    assert boxed.num_frames == sum(len(list(f.iterdir())) for f in frames)
    assert all(f.extra.get(PSEUDO_FRAME) or not f.labelled for f in boxed.frames())
    write_video(tmp_path / "archive" / "case-1.mp4", frames=4)
    monkeypatch.setattr(api, "predict_loader", lambda *a, **k: pytest.fail("the model ran"))
    assert main(["pseudo-label", str(tmp_path / "archive"), "--checkpoint", str(tiny_checkpoint), "--out",
                 str(tmp_path / "again.json"), "--no-progress"]) == 2
    assert "extract its frames first" in capsys.readouterr().err and not (tmp_path / "again.json").exists()


def test_several_checkpoints_label_by_agreement(tiny_synth, tiny_checkpoint, teacher_ckpt, tmp_path, capsys):
    """Several models: the same one twice labels as it does alone (its agreement with itself); a video
    teacher and an image model through --checkpoint give the labels their predict outputs give through
    --detections, fused (data.detection_fusion), and the file names both sources."""
    budget = tmp_path / "budget.json"
    budget.write_text(json.dumps(sparsify(load_index(tiny_synth.train_json), 4).to_coco_vid(image_root=tmp_path)))
    api.pseudo_label(tiny_checkpoint, budget, tmp_path / "one.json", score=0.1, ambiguous=0.1, progress=False)
    api.pseudo_label([tiny_checkpoint, tiny_checkpoint], budget, tmp_path / "twice.json", score=0.1, ambiguous=0.1,
                     progress=False)
    one, twice = read_coco_vid(tmp_path / "one.json"), read_coco_vid(tmp_path / "twice.json")
    assert sum(len(f.boxes) for f in one.frames()) > 0
    for a, b in zip(one.frames(), twice.frames(), strict=True):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
        assert [e.get("score") for e in a.box_extra] == pytest.approx([e.get("score") for e in b.box_extra], abs=1e-4)
    models = [str(teacher_ckpt), str(tiny_checkpoint)]
    files = []
    for k, model in enumerate(models):
        assert main(["predict", str(budget), "--checkpoint", model, "--out", str(tmp_path / f"p{k}"),
                     "--score-thresh", "0.0", "--no-progress"]) == 0
        files.append(str(tmp_path / f"p{k}" / "detections.json"))
    budget_index = load_index(budget)
    fused_scores = fuse_detections([read_coco_results(f, budget_index) for f in files])
    tops = sorted(float(d["scores"].max()) for d in fused_scores.values() if len(d["scores"]))
    # between two frames' best fused scores, where they lie furthest apart among the middle half: about half the
    # frames get boxes, and predict's rounding of scores moves no frame across
    i = max(range(len(tops) // 4, 3 * len(tops) // 4), key=lambda k: tops[k + 1] - tops[k])
    cut = f"{(tops[i] + tops[i + 1]) / 2:.6f}"
    for source, names in (("--checkpoint", models), ("--detections", files)):
        assert main(["pseudo-label", str(budget), source, *names, "--out", str(tmp_path / f"{source[2:]}.json"),
                     "--score", cut, "--ambiguous", cut, "--no-progress"]) == 0
    by_models, by_files = read_coco_vid(tmp_path / "checkpoint.json"), read_coco_vid(tmp_path / "detections.json")
    assert by_models.info["pseudo_labels"]["source"] == ", ".join(models)
    assert sum(len(f.boxes) for f in by_models.frames()) > 0
    fused = by_files.frame_by_image_id()
    for frame in by_models.frames():
        np.testing.assert_allclose(frame.boxes, fused[frame.image_id].boxes, atol=0.02)  # predict rounds to 0.01 px
