"""`v2idetr data convert | stats | validate` through their own argparse parser."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from v2idetr.data.commands import dataset_stats, format_stats, register
from v2idetr.data.formats.cocovid import read_coco_vid
from v2idetr.data.index import DatasetIndex, FrameRecord, VideoRecord
from v2idetr.errors import DatasetError


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="v2idetr")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def make_sun(root: Path) -> Path:
    """Two cases of 40x30 frames: case1 with boxes of classes 3 and 7, case2 polyp-free."""
    for case, n in (("case1", 3), ("case2", 2)):
        (root / case).mkdir(parents=True)
        for i in range(1, n + 1):
            Image.new("RGB", (40, 30)).save(root / case / f"{case}_{i}.jpg")
    (root / "annotation_txt").mkdir()
    (root / "annotation_txt" / "case1.txt").write_text(
        "case1_1.jpg 0,0,10,10,3\ncase1_2.jpg 0,0,20,20,7 1,1,40,30,3\ncase1_3.jpg\n"
    )
    return root


def make_coco_vid(root: Path) -> Path:
    """One 30x20 video of two frames with extra fields at every level."""
    (root / "img").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (30, 20)).save(root / "img" / f"{i}.png")
    doc = {
        "info": {"year": 2024},
        "videos": [{"id": 4, "name": "clip", "patient": "p9"}],
        "images": [
            {
                "id": 8 + i,
                "file_name": f"img/{i}.png",
                "video_id": 4,
                "frame_id": i,
                "width": 30,
                "height": 20,
                "degradation": "blur" if i else "none",
            }
            for i in range(2)
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 8,
                "category_id": 6,
                "bbox": [1, 2, 3, 4],
                "instance_id": 11,
                "reader": "dr a",
            }
        ],
        "categories": [{"id": 6, "name": "lesion"}],
    }
    path = root / "src.json"
    path.write_text(json.dumps(doc))
    return path


def test_convert_sun_to_coco_vid(tmp_path, capsys):
    src = make_sun(tmp_path / "sun")
    out = tmp_path / "out" / "sun.json"
    assert run(["data", "convert", str(src), "--out", str(out)]) == 0
    assert "2 videos, 5 frames, 3 boxes" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert [c["id"] for c in doc["categories"]] == [3, 7]
    # frames outside OUT's folder are written with absolute paths
    assert doc["images"][0]["file_name"] == str((src / "case1" / "case1_1.jpg").resolve())
    assert not list(out.parent.glob("*.tmp"))  # the temporary file was renamed, not left behind
    back = read_coco_vid(out)
    assert back.num_frames == 5 and back.num_boxes == 3 and back.num_negative_frames == 3
    assert back.class_names == ["class3", "class7"]


def test_convert_round_trip_keeps_extra_fields(tmp_path):
    src = make_coco_vid(tmp_path / "a")
    out = tmp_path / "a" / "copy.json"
    assert run(["data", "convert", str(src), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["info"] == {"year": 2024}
    assert doc["videos"] == [{"id": 4, "name": "clip", "patient": "p9"}]
    assert doc["images"][1]["degradation"] == "blur" and doc["images"][1]["file_name"] == "img/1.png"
    ann = doc["annotations"][0]
    assert ann["instance_id"] == 11 and ann["reader"] == "dr a" and ann["bbox"] == [1, 2, 3, 4]
    assert ann["category_id"] == 6
    again = read_coco_vid(out)
    np.testing.assert_allclose(again.videos[0].frames[0].boxes, [[1, 2, 4, 6]])


def test_convert_refuses_invalid_and_skip_invalid_counts(tmp_path, capsys):
    src = make_coco_vid(tmp_path)
    doc = json.loads(src.read_text())
    doc["annotations"][0]["bbox"] = [25, 2, 30, 4]
    src.write_text(json.dumps(doc))
    out = tmp_path / "o.json"
    with pytest.raises(DatasetError, match="annotations\\[0\\] \\(id=1\\)"):
        run(["data", "convert", str(src), "--out", str(out)])
    assert not out.exists()
    assert run(["data", "convert", str(src), "--out", str(out), "--skip-invalid"]) == 0
    assert "left out 1 invalid record(s)" in capsys.readouterr().out
    assert len(json.loads(out.read_text())["images"]) == 1


def test_stats_prints_counts(tmp_path, capsys):
    assert run(["data", "stats", str(make_sun(tmp_path / "s"))]) == 0
    out = capsys.readouterr().out
    assert "videos:          2 (1 negative)" in out
    assert "frames:          5 (3 negative)" in out
    assert "boxes:           3" in out
    assert "class3 (id 3): 2" in out and "class7 (id 7): 1" in out
    assert "<16: 1" in out and "16-32: 1" in out and "32-64: 1" in out and ">=128: 0" in out


def test_dataset_stats_bins_and_degradations():
    frame = FrameRecord(
        image_id=1,
        video_id=1,
        frame_id=0,
        path=Path("x.png"),
        width=400,
        height=400,
        boxes=np.array([[0, 0, 15, 15], [0, 0, 16, 16], [0, 0, 64, 64], [0, 0, 200, 100]], dtype=np.float32),
        labels=np.array([0, 0, 1, 1]),
        extra={"degradation": "noise"},
    )
    clean = FrameRecord(
        image_id=2,
        video_id=1,
        frame_id=1,
        path=Path("y.png"),
        width=400,
        height=400,
        extra={"degradation": "none"},
    )
    index = DatasetIndex([VideoRecord(1, "v", [frame, clean])], ["a", "b"], [1, 2])
    s = dataset_stats(index)
    assert s["box_sizes"] == {"<16": 1, "16-32": 1, "32-64": 0, "64-128": 1, ">=128": 1}
    assert s["boxes_per_class"] == {"a (id 1)": 2, "b (id 2)": 2}
    assert s["degradations"] == {"noise": 1, "none": 1}
    assert s["negative_frames"] == 1 and s["negative_videos"] == 0
    assert "frames per degradation:\n  noise: 1\n  none: 1" in format_stats(index)


def test_validate_exit_codes(tmp_path, capsys):
    src = make_coco_vid(tmp_path)
    assert run(["data", "validate", str(src)]) == 0
    assert "no problems found" in capsys.readouterr().out
    doc = json.loads(src.read_text())
    doc["images"][0]["video_id"] = 99
    doc["annotations"][0]["category_id"] = 1
    src.write_text(json.dumps(doc))
    Image.new("RGB", (31, 20)).save(tmp_path / "img" / "1.png")
    assert run(["data", "validate", str(src)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[-1].endswith("3 problem(s)")
    assert any("images[0] (id=8)" in line and "video_id" in line for line in lines)
    assert run(["data", "validate", str(src), "--no-decode"]) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("2 problem(s)")


def _frame(image_id: int, video_id: int, boxes: int = 0, labelled: bool = True) -> FrameRecord:
    box = np.tile(np.array([[0, 0, 20, 20]], dtype=np.float32), (boxes, 1))
    return FrameRecord(image_id, video_id, image_id, Path(f"{image_id}.png"), 100, 100, boxes=box,
                       labels=np.zeros(boxes, dtype=np.int64), labelled=labelled)


def test_stats_count_unlabelled_frames():
    """Negatives are labelled frames without boxes; a negative video has labelled frames, all negative."""
    index = DatasetIndex(
        [
            VideoRecord(1, "lesion", [_frame(1, 1, boxes=2), _frame(2, 1), _frame(3, 1, labelled=False)]),
            VideoRecord(2, "clean", [_frame(4, 2), _frame(5, 2, labelled=False), _frame(6, 2, labelled=False)]),
            VideoRecord(3, "unseen", [_frame(7, 3, labelled=False), _frame(8, 3, labelled=False)]),
        ],
        ["lesion"],
        [1],
    )
    s = dataset_stats(index)
    assert (s["frames"], s["labelled_frames"], s["unlabelled_frames"]) == (8, 3, 5)
    assert (s["negative_frames"], s["negative_videos"], s["boxes"]) == (2, 1, 2)
    text = format_stats(index)
    assert "frames:          8 (3 labelled, 2 of them negative; 5 unlabelled)" in text
    assert "videos:          3 (1 negative)" in text
    for frame in index.frames():
        frame.labelled = True
    assert "frames:          8 (7 negative)" in format_stats(index)  # the old line when all are labelled


def test_validate_unlabelled_frames(tmp_path, capsys):
    src = make_coco_vid(tmp_path)
    doc = json.loads(src.read_text())
    doc["images"][1]["labelled"] = False  # image 9, no box
    src.write_text(json.dumps(doc))
    assert run(["data", "validate", str(src)]) == 0
    assert "no problems found" in capsys.readouterr().out
    doc["annotations"].append({"id": 2, "image_id": 9, "category_id": 6, "bbox": [1, 1, 5, 5]})
    src.write_text(json.dumps(doc))
    assert run(["data", "validate", str(src)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[-1].endswith("1 problem(s)")
    assert lines[0].startswith(f"{src}: annotations[1] (id=2), field 'image_id': a box on image_id 9")
