"""validate(): every problem at once, the readers' checks plus decoding of the frame files."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from v2idetr.data.load import detect_format, load_index
from v2idetr.data.validate import validate
from v2idetr.errors import DatasetError

W, H = 30, 20


def make_coco_vid(root: Path, frames: int = 4) -> Path:
    """One video of ``frames`` PNG frames, each with one box, categories 2 and 5."""
    images, annotations = [], []
    (root / "f").mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        Image.new("RGB", (W, H), (10 * i, 0, 0)).save(root / "f" / f"{i}.png")
        images.append(
            {"id": i + 1, "file_name": f"f/{i}.png", "video_id": 1, "frame_id": i, "width": W, "height": H}
        )
        annotations.append(
            {"id": i + 1, "image_id": i + 1, "category_id": 2 if i % 2 else 5, "bbox": [1, 1, 5, 5]}
        )
    doc = {
        "videos": [{"id": 1, "name": "v"}],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 2, "name": "a"}, {"id": 5, "name": "b"}],
    }
    path = root / "ann.json"
    path.write_text(json.dumps(doc))
    return path


def test_clean_dataset_has_no_problems(tmp_path):
    assert validate(make_coco_vid(tmp_path)) == []


def test_reports_structural_and_decoding_problems_together(tmp_path):
    path = make_coco_vid(tmp_path, frames=5)
    doc = json.loads(path.read_text())
    doc["annotations"][0]["category_id"] = 9  # unknown category
    doc["annotations"][1]["bbox"] = [25, 1, 10, 5]  # outside the 30x20 frame
    doc["images"][2]["file_name"] = "f/missing.png"  # missing file
    path.write_text(json.dumps(doc))
    (tmp_path / "f" / "3.png").write_bytes((tmp_path / "f" / "3.png").read_bytes()[:40])  # truncated
    Image.new("RGB", (W + 2, H)).save(tmp_path / "f" / "4.png")  # size differs from the record
    problems = validate(path)
    by_field = {p.field: p for p in problems if "cannot be decoded" not in p.message}
    assert len(problems) == 5, problems
    assert "unknown category_id 9" in by_field["category_id"].message
    assert by_field["category_id"].record == "annotations[0] (id=1)"
    assert "outside" in by_field["bbox"].message and by_field["bbox"].record == "annotations[1] (id=2)"
    assert "frame file not found" in by_field["file_name"].message
    assert by_field["file_name"].record == "images[2] (id=3)"
    decode = [p for p in problems if "cannot be decoded" in p.message]
    assert len(decode) == 1 and "3.png" in decode[0].message and decode[0].file == str(path)
    size = by_field["width/height"]
    assert "is 32x20" in size.message and "says 30x20" in size.message and "4.png" in size.record
    # without decoding, only the three structural problems remain
    assert len(validate(path, decode_images=False)) == 3


def test_validate_and_reader_agree(tmp_path):
    path = make_coco_vid(tmp_path)
    doc = json.loads(path.read_text())
    doc["images"][1]["frame_id"] = 0
    doc["annotations"][3]["bbox"] = [1, 1, -2, 5]
    path.write_text(json.dumps(doc))
    problems = validate(path, decode_images=False)
    try:
        load_index(path)
    except DatasetError as exc:
        assert exc.problems == problems
    else:
        raise AssertionError("load_index accepted an invalid dataset")


def test_unknown_layout_is_one_problem(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    problems = validate(tmp_path)
    assert len(problems) == 1 and "unknown dataset layout" in problems[0].message
    assert "COCO-VID" in problems[0].message and "rawframes" in problems[0].message


def test_detect_format(tmp_path):
    assert detect_format(make_coco_vid(tmp_path / "c")) == "coco-vid"
    (tmp_path / "b" / "rawframes").mkdir(parents=True)
    assert detect_format(tmp_path / "b") == "buv"
    (tmp_path / "s" / "annotation_txt").mkdir(parents=True)
    assert detect_format(tmp_path / "s") == "sun"
    (tmp_path / "s2" / "annotations").mkdir(parents=True)
    (tmp_path / "s2" / "annotations" / "case1.txt").write_text("")
    assert detect_format(tmp_path / "s2") == "sun"
    (tmp_path / "g" / "Frame").mkdir(parents=True)
    (tmp_path / "g" / "GT").mkdir()
    assert detect_format(tmp_path / "g") == "sun-seg"
    assert detect_format(tmp_path / "c" / "f") == "images"
    (tmp_path / "clip.MP4").write_bytes(b"")
    assert detect_format(tmp_path / "clip.MP4") == "video"


def test_load_index_auto_with_exclusion_list(tmp_path):
    path = make_coco_vid(tmp_path / "c")
    doc = json.loads(path.read_text())
    doc["videos"].append({"id": 2, "name": "w"})
    doc["images"][3]["video_id"] = 2
    path.write_text(json.dumps(doc))
    assert [v.name for v in load_index(path).videos] == ["v", "w"]
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("# duplicates\nw\n")
    assert [v.name for v in load_index(path, exclude=exclude).videos] == ["v"]
    folder = load_index(tmp_path / "c" / "f", exclude=exclude)  # other formats: filtered by name too
    assert folder.num_frames == 4 and folder.class_names == []
