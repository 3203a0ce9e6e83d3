"""`data merge`: several datasets as one training file (labelled videos + a pseudo-labelled archive)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from v2idetr.cli import main
from v2idetr.data.commands import write_coco_vid
from v2idetr.data.load import load_index
from v2idetr.data.merge import merge_indexes
from v2idetr.data.pseudo_labels import PSEUDO_FRAME, is_pseudo_labelled, pseudo_label
from v2idetr.errors import ConfigError, DatasetError


def test_merge_renumbers_ids_and_keeps_labels_and_marks(tiny_synth, tmp_path):
    train, val = load_index(tiny_synth.train_json), load_index(tiny_synth.val_json)
    first = train.frame_by_image_id()[1]
    first.labelled, first.boxes, first.labels = False, first.boxes[:0], first.labels[:0]
    marked, _ = pseudo_label(val, {}, source="teacher.ckpt")  # every val frame labelled: nothing to mark ...
    val.videos[0].frames[0].extra[PSEUDO_FRAME] = True  # ... so mark one by hand
    val.info["pseudo_labels"] = marked.info["pseudo_labels"]
    merged = merge_indexes([train, val])
    assert [v.name for v in merged.videos] == [v.name for v in train.videos + val.videos]
    assert [v.video_id for v in merged.videos] == list(range(1, len(merged.videos) + 1))
    assert [f.image_id for f in merged.frames()] == list(range(1, merged.num_frames + 1))
    assert all(f.video_id == v.video_id for v in merged.videos for f in v.frames)
    sources = [*train.frames(), *val.frames()]
    assert [f.path for f in merged.frames()] == [f.path for f in sources]
    for a, b in zip(merged.frames(), sources, strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert (a.labelled, a.labels.tolist()) == (b.labelled, b.labels.tolist())
    assert merged.num_unlabelled_frames == 1
    assert sum(map(is_pseudo_labelled, merged.frames())) == 1
    assert merged.info["pseudo_labels"]["source"] == "teacher.ckpt"
    assert merged.info["merged_from"] == [train.source, val.source]
    assert train.frame_by_image_id()[1].video_id == 1 and val.videos[0].video_id != 1  # inputs unchanged

    out = write_coco_vid(merged, "merged", str(tmp_path / "sub" / "merged.json"))
    back = load_index(out)
    assert back.num_frames == merged.num_frames and back.num_boxes == merged.num_boxes
    assert [f.path.resolve() for f in back.frames()] == [f.path.resolve() for f in merged.frames()]
    assert back.num_unlabelled_frames == 1 and sum(map(is_pseudo_labelled, back.frames())) == 1


def test_merge_refuses_a_shared_video_a_shared_frame_and_other_classes(tiny_synth, tmp_path):
    train = load_index(tiny_synth.train_json)
    with pytest.raises(DatasetError, match=r"videos\[\]\.name.*trained on twice"):
        merge_indexes([train, load_index(tiny_synth.train_json)])
    renamed = load_index(tiny_synth.train_json)
    for video in renamed.videos:
        video.name += "-copy"
    with pytest.raises(DatasetError, match=r"file_name.*listed once"):
        merge_indexes([train, renamed])
    other = load_index(tiny_synth.val_json)
    other.class_names = ["polyp"]
    with pytest.raises(DatasetError, match=r"categories.*\['polyp'\].*by name and order"):
        merge_indexes([train, other])
    with pytest.raises(ConfigError, match="two or more"):
        merge_indexes([train])


def test_cli_merge(tiny_synth, tmp_path, capsys):
    out = tmp_path / "all.json"
    assert main(["data", "merge", str(tiny_synth.train_json), str(tiny_synth.val_json), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    n_train = len(json.loads(Path(tiny_synth.train_json).read_text())["images"])
    n_val = len(json.loads(Path(tiny_synth.val_json).read_text())["images"])
    assert len(data["images"]) == n_train + n_val and f"{n_train + n_val} labelled frames" in printed
    assert len({im["id"] for im in data["images"]}) == n_train + n_val
    assert main(["data", "validate", str(out), "--no-decode"]) == 0
    assert main(["data", "merge", str(tiny_synth.train_json), str(tiny_synth.train_json), "--out",
                 str(tmp_path / "twice.json")]) != 0
    assert "trained on twice" in capsys.readouterr().err and not (tmp_path / "twice.json").exists()
