"""BUV reader: the release's layout, vid_train_only, and the errata file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from v2idetr.data.formats.buv import read_buv
from v2idetr.errors import ConfigError, DatasetError

W, H = 36, 28
VIDEOS = {"train": [("benign", "aaa111"), ("malignant", "bbb222")], "test": [("benign", "ccc333")]}


def make_buv(root: Path, file_names_under_root: bool = False) -> Path:
    """Three frames per video; frames 0 and 2 are flagged is_vid_train_frame; category ids 1, 2."""
    for split, json_name in (
        ("train", "imagenet_vid_train_15frames.json"),
        ("test", "imagenet_vid_val.json"),
    ):
        videos, images, annotations = [], [], []
        for vid, (cls, hash_) in enumerate(VIDEOS[split], start=1):
            videos.append({"id": vid, "name": f"{cls}/{hash_}", "vid_train_frames": [0, 2]})
            for frame_id in range(3):
                rel = f"{cls}/{hash_}/{frame_id:06d}.png"
                (root / "rawframes" / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.new("L", (W, H), 30 * frame_id).save(root / "rawframes" / rel)
                iid = vid * 100 + frame_id
                images.append(
                    {
                        "id": iid,
                        "file_name": f"rawframes/{rel}" if file_names_under_root else rel,
                        "video_id": vid,
                        "frame_id": frame_id,
                        "width": W,
                        "height": H,
                        "is_vid_train_frame": frame_id != 1,
                    }
                )
                annotations.append(
                    {
                        "id": iid,
                        "image_id": iid,
                        "category_id": 1 if cls == "benign" else 2,
                        "bbox": [4, 5, 10, 8],
                        "area": 80,
                        "iscrowd": 0,
                    }
                )
        doc = {
            "videos": videos,
            "images": images,
            "annotations": annotations,
            "categories": [{"id": 1, "name": "benign"}, {"id": 2, "name": "malignant"}],
        }
        (root / json_name).write_text(json.dumps(doc))
    return root


def test_reads_train_and_test_splits(tmp_path):
    root = make_buv(tmp_path)
    train = read_buv(root)
    assert [v.name for v in train.videos] == ["benign/aaa111", "malignant/bbb222"]
    assert train.class_names == ["benign", "malignant"] and train.category_ids == [1, 2]
    assert train.num_frames == 6
    frame = train.videos[1].frames[0]
    assert frame.path == root / "rawframes/malignant/bbb222/000000.png"
    assert frame.labels.tolist() == [1]
    np.testing.assert_allclose(frame.boxes, [[4, 5, 14, 13]])
    assert frame.extra["is_vid_train_frame"] is True
    assert train.videos[0].extra["vid_train_frames"] == [0, 2]
    test = read_buv(root, split="test")
    assert [v.name for v in test.videos] == ["benign/ccc333"]


def test_file_names_relative_to_root_also_work(tmp_path):
    root = make_buv(tmp_path, file_names_under_root=True)
    index = read_buv(root)
    assert index.videos[0].frames[0].path == root / "rawframes/benign/aaa111/000000.png"


def test_vid_train_only_keeps_flagged_frames(tmp_path):
    index = read_buv(make_buv(tmp_path), vid_train_only=True)
    assert [f.frame_id for f in index.videos[0].frames] == [0, 2]
    assert index.num_frames == 4 and index.num_boxes == 4


def test_vid_train_only_needs_the_flag(tmp_path):
    root = make_buv(tmp_path)
    path = root / "imagenet_vid_train_15frames.json"
    doc = json.loads(path.read_text())
    del doc["images"][3]["is_vid_train_frame"]
    path.write_text(json.dumps(doc))
    assert read_buv(root).num_frames == 6  # the flag only matters for vid_train_only
    with pytest.raises(DatasetError) as info:
        read_buv(root, vid_train_only=True)
    p = info.value.problems[0]
    assert (p.record, p.field) == ("images[3] (id=200)", "is_vid_train_frame")


def test_errata_exclude_and_relabel(tmp_path):
    root = make_buv(tmp_path)
    errata = tmp_path / "errata.txt"
    errata.write_text(
        "# BUV README errata\n\n"
        "exclude malignant/bbb222\n"
        "relabel aaa111 malignant   # same patient as a malignant video\n"
        "ccc333\n"  # a test video: excluded there, ignored for train
    )
    train = read_buv(root, errata=errata)
    assert [v.name for v in train.videos] == ["benign/aaa111"]
    assert all(f.labels.tolist() == [1] for f in train.frames())  # label 1 = malignant
    assert read_buv(root, split="test").num_frames == 3
    with pytest.raises(DatasetError, match="no frames left"):  # its one video is excluded
        read_buv(root, split="test", errata=errata)


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ("exclude zzz999", "video", "unknown video 'zzz999'"),
        ("relabel aaa111 cancer", "class", "unknown class 'cancer'"),
        ("relabel aaa111", "command", "relabel <video> <class>"),
        ("rename aaa111 x", "command", "expected 'exclude <video>'"),
    ],
)
def test_errata_errors_name_the_line(tmp_path, line, field, message):
    root = make_buv(tmp_path)
    errata = tmp_path / "errata.txt"
    errata.write_text(f"# header\nexclude aaa111\n{line}\n")
    with pytest.raises(DatasetError) as info:
        read_buv(root, errata=errata)
    p = info.value.problems[0]
    assert (p.file, p.record, p.field) == (str(errata), "line 3", field)
    assert message in p.message


def test_missing_labels_and_bad_split(tmp_path):
    root = make_buv(tmp_path)
    (root / "imagenet_vid_val.json").unlink()
    with pytest.raises(DatasetError, match="BUV test labels not found"):
        read_buv(root, split="test")
    with pytest.raises(ConfigError, match="BUV split 'dev'"):
        read_buv(root, split="dev")
