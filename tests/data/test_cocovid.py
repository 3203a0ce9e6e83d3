"""COCO-VID reader: a dataset written by another tool loads as is; each bad input is named precisely."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from v2idetr.data.formats.cocovid import read_coco_vid, scan_coco_vid
from v2idetr.errors import DatasetError

W, H = 40, 24  # non-square frames


def make_doc(root: Path) -> dict:
    """Two videos (one all negative), categories 7 and 3 listed out of order, extra fields everywhere."""
    images, annotations = [], []
    for vid, name in ((1, "case_a"), (2, "case_b")):
        # frame ids written in reverse: the reader must order frames by frame_id
        for frame_id in (2, 1, 0):
            iid = vid * 10 + frame_id
            file_name = f"frames/{name}/{frame_id:03d}.png"
            (root / file_name).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (W, H), (frame_id * 40, 0, 0)).save(root / file_name)
            images.append(
                {
                    "id": iid,
                    "file_name": file_name,
                    "video_id": vid,
                    "frame_id": frame_id,
                    "width": W,
                    "height": H,
                    "exposure": 0.5,
                }
            )
    annotations.append(
        {
            "id": 1,
            "image_id": 10,
            "category_id": 7,
            "bbox": [2, 3, 10, 5],
            "area": 50,
            "iscrowd": 0,
            "instance_id": 4,
            "note": "pale",
        }
    )
    annotations.append({"id": 2, "image_id": 10, "category_id": 3, "bbox": [20.5, 4, 8, 8]})
    annotations.append({"id": 3, "image_id": 12, "category_id": 3, "bbox": [0, 0, W, H], "occluded": True})
    return {
        "info": {"description": "other tool"},
        "licenses": [],
        "videos": [{"id": 1, "name": "case_a", "patient": "p1"}, {"id": 2, "name": "case_b"}],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 7, "name": "malignant"}, {"id": 3, "name": "benign"}],
    }


def write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, dict]:
    doc = make_doc(tmp_path)
    return write(tmp_path / "ann.json", doc), doc


def test_reads_foreign_dataset_unchanged(dataset):
    path, _ = dataset
    index = read_coco_vid(path)
    assert index.class_names == ["benign", "malignant"]
    assert index.category_ids == [3, 7]
    assert [v.name for v in index.videos] == ["case_a", "case_b"]
    a, b = index.videos
    assert [f.frame_id for f in a.frames] == [0, 1, 2]
    first = a.frames[0]
    assert first.image_id == 10 and first.width == W and first.height == H
    assert first.path == path.parent / "frames/case_a/000.png"
    np.testing.assert_allclose(first.boxes, [[2, 3, 12, 8], [20.5, 4, 28.5, 12]])
    assert first.boxes.dtype == np.float32
    assert first.labels.tolist() == [1, 0]  # category 7 -> label 1, category 3 -> label 0
    assert first.box_extra[0]["instance_id"] == 4 and first.box_extra[0]["note"] == "pale"
    assert first.extra == {"exposure": 0.5}
    assert a.extra == {"patient": "p1"}
    assert index.info == {"info": {"description": "other tool"}, "licenses": []}
    assert index.num_frames == 6 and index.num_boxes == 3
    assert index.num_negative_frames == 4
    assert all(f.is_negative for f in b.frames)


def test_images_root_overrides_json_folder(dataset, tmp_path):
    path, doc = dataset
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    json_path = write(moved / "ann.json", doc)
    with pytest.raises(DatasetError, match="frame file not found"):
        read_coco_vid(json_path)
    index = read_coco_vid(json_path, images_root=tmp_path)
    assert index.videos[0].frames[0].path == tmp_path / "frames/case_a/000.png"
    assert read_coco_vid(json_path, check_files=False).num_frames == 6


def test_box_within_tolerance_is_clipped(dataset):
    path, doc = dataset
    doc["annotations"][0]["bbox"] = [-0.6, 3, W + 1.0, 5]  # 0.6 px out on the left, 0.4 on the right
    index = read_coco_vid(write(path, doc))
    np.testing.assert_allclose(index.videos[0].frames[0].boxes[0], [0, 3, W, 8])


def test_exclude_videos(dataset):
    path, _ = dataset
    index = read_coco_vid(path, exclude_videos=["case_b", "not_here"])
    assert [v.name for v in index.videos] == ["case_a"]


def _set(section, i, key, value):
    def mutate(doc):
        doc[section][i][key] = value

    return mutate


def _delete(section, i, key):
    def mutate(doc):
        del doc[section][i][key]

    return mutate


def _append(section, rec):
    def mutate(doc):
        doc[section].append(rec)

    return mutate


def _missing_file(doc):
    doc["images"][0]["file_name"] = "frames/case_a/gone.png"


BAD_CASES = {
    "missing field": (
        _delete("images", 1, "frame_id"),
        "images[1] (id=11)",
        "frame_id",
        "required field is missing",
    ),
    "wrong type": (_set("images", 0, "width", "forty"), "images[0] (id=12)", "width", "expected an integer"),
    "duplicate video id": (
        _append("videos", {"id": 1, "name": "again"}),
        "videos[2] (id=1)",
        "id",
        "duplicate video id",
    ),
    "duplicate image id": (_set("images", 1, "id", 12), "images[1] (id=12)", "id", "duplicate image id"),
    "duplicate annotation id": (
        _set("annotations", 1, "id", 1),
        "annotations[1] (id=1)",
        "id",
        "duplicate annotation id",
    ),
    "duplicate category id": (
        _append("categories", {"id": 3, "name": "x"}),
        "categories[2] (id=3)",
        "id",
        "duplicate category id",
    ),
    "image without video": (
        _set("images", 0, "video_id", 9),
        "images[0] (id=12)",
        "video_id",
        "image without video",
    ),
    "frame id reused": (
        _set("images", 1, "frame_id", 2),
        "images[1] (id=11)",
        "frame_id",
        "used twice in video 1",
    ),
    "unknown category": (
        _set("annotations", 0, "category_id", 5),
        "annotations[0] (id=1)",
        "category_id",
        "unknown category_id 5",
    ),
    "unknown image": (
        _set("annotations", 0, "image_id", 99),
        "annotations[0] (id=1)",
        "image_id",
        "unknown image_id 99",
    ),
    "zero width box": (
        _set("annotations", 0, "bbox", [2, 3, 0, 5]),
        "annotations[0] (id=1)",
        "bbox",
        "non-positive",
    ),
    "negative height box": (
        _set("annotations", 2, "bbox", [2, 3, 4, -1]),
        "annotations[2] (id=3)",
        "bbox",
        "non-positive",
    ),
    "box outside": (
        _set("annotations", 0, "bbox", [30, 3, 12, 5]),
        "annotations[0] (id=1)",
        "bbox",
        "outside the 40x24",
    ),
    "bad bbox shape": (
        _set("annotations", 0, "bbox", [1, 2, 3]),
        "annotations[0] (id=1)",
        "bbox",
        "expected [x, y, w, h]",
    ),
    "missing file": (_missing_file, "images[0] (id=12)", "file_name", "frame file not found"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_names_file_record_and_field(dataset, case):
    path, doc = dataset
    mutate, record, field, message = BAD_CASES[case]
    mutate(doc)
    write(path, doc)
    with pytest.raises(DatasetError) as info:
        read_coco_vid(path)
    problems = info.value.problems
    assert len(problems) == 1, problems
    p = problems[0]
    assert (p.file, p.record, p.field) == (str(path), record, field)
    assert message in p.message
    text = str(info.value)
    assert str(path) in text and record in text and f"field '{field}'" in text


def test_malformed_json_gives_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "videos": [\n    {"id": 1,, "name": "a"}\n  ]\n}')
    with pytest.raises(DatasetError, match=r"line 3, column 14") as info:
        read_coco_vid(path)
    assert str(path) in str(info.value)


def test_missing_top_level_key_and_empty_dataset(dataset):
    path, doc = dataset
    broken = {k: v for k, v in doc.items() if k != "categories"}
    with pytest.raises(DatasetError, match="missing top-level key") as info:
        read_coco_vid(write(path, broken))
    assert info.value.problems[0].field == "categories"
    empty = {**doc, "images": [], "annotations": []}
    with pytest.raises(DatasetError, match="empty dataset"):
        read_coco_vid(write(path, empty), skip_invalid=True)


def test_all_problems_reported_together(dataset):
    path, doc = dataset
    doc["images"][0]["video_id"] = 9
    doc["annotations"][1]["category_id"] = 5
    doc["annotations"][2]["bbox"] = [0, 0, 0, 1]
    with pytest.raises(DatasetError) as info:
        read_coco_vid(write(path, doc))
    fields = sorted(p.field for p in info.value.problems)
    assert fields == ["bbox", "category_id", "video_id"]
    assert "3 problem(s)" in str(info.value)


def test_skip_invalid_drops_offending_frames_and_counts(dataset, caplog):
    path, doc = dataset
    original = copy.deepcopy(doc)
    doc["annotations"][1]["bbox"] = [30, 3, 20, 5]  # outside: frame 10 goes, with its valid box too
    doc["annotations"].append({"id": 9, "image_id": 99, "category_id": 3, "bbox": [0, 0, 1, 1]})
    doc["images"][4]["video_id"] = 9  # image 21 (case_b): image without video
    with caplog.at_level(logging.WARNING):
        index = read_coco_vid(write(path, doc), skip_invalid=True)
    assert len(index.skipped) == 3
    assert any("annotations[1] (id=2)" in s and "dropped its frame" in s for s in index.skipped)
    assert any("dropped annotation" in s for s in index.skipped)
    ids = {f.image_id for f in index.frames()}
    dropped_image = original["images"][4]["id"]
    assert 10 not in ids and dropped_image not in ids
    assert index.num_frames == 4
    assert index.num_boxes == 1  # only annotation 3 (image 12) survives
    assert "left out 3 invalid record(s)" in caplog.text


def test_scan_keeps_valid_records_beside_problems(dataset):
    path, doc = dataset
    doc["annotations"][0]["category_id"] = 5
    scan = scan_coco_vid(write(path, doc))
    assert len(scan.log.problems) == 1 and not scan.log.fatal
    assert scan.index is not None and scan.index.num_frames == 5


def test_labelled_flag_parsed_absent_means_labelled(dataset):
    path, doc = dataset
    doc["images"][1]["labelled"] = False  # image 11 (case_a, frame 1), no annotation
    doc["images"][4]["labelled"] = False  # image 21 (case_b, frame 1)
    doc["images"][3]["labelled"] = True  # image 22: explicit true, same as absent
    index = read_coco_vid(write(path, doc))
    flags = {f.image_id: f.labelled for f in index.frames()}
    assert flags == {10: True, 11: False, 12: True, 20: True, 21: False, 22: True}
    assert index.num_unlabelled_frames == 2
    # an unlabelled frame is never a negative: 20 and 22 are, 11 and 21 are not
    assert not index.frame_by_image_id()[11].is_negative and index.frame_by_image_id()[20].is_negative
    assert index.num_negative_frames == 2
    assert "labelled" not in index.frame_by_image_id()[11].extra  # a known field, not an extra one


def test_labelled_flag_must_be_boolean(dataset):
    path, doc = dataset
    doc["images"][2]["labelled"] = "no"  # image 10
    with pytest.raises(DatasetError) as info:
        read_coco_vid(write(path, doc))
    [p] = info.value.problems
    assert (p.file, p.record, p.field) == (str(path), "images[2] (id=10)", "labelled")
    assert '"no"' in p.message and "true or false" in p.message


def test_box_on_unlabelled_frame_is_a_problem(dataset):
    path, doc = dataset
    doc["images"][0]["labelled"] = False  # image 12 carries annotation id 3
    with pytest.raises(DatasetError) as info:
        read_coco_vid(write(path, doc))
    [p] = info.value.problems
    assert (p.file, p.record, p.field) == (str(path), "annotations[2] (id=3)", "image_id")
    assert "image_id 12" in p.message and "unlabelled" in p.message
    index = read_coco_vid(path, skip_invalid=True)
    assert 12 not in index.frame_by_image_id() and index.num_frames == 5
    assert index.num_boxes == 2 and len(index.skipped) == 1


def test_labelled_flags_and_boxes_survive_a_round_trip(dataset, tmp_path):
    path, doc = dataset
    doc["images"][1]["labelled"] = False
    doc["images"][5]["labelled"] = False  # image 20
    index = read_coco_vid(write(path, doc))
    out = tmp_path / "again.json"
    out.write_text(json.dumps(index.to_coco_vid(image_root=tmp_path)))
    written = {im["id"]: im for im in json.loads(out.read_text())["images"]}
    assert written[11]["labelled"] is False and "labelled" not in written[10]  # true is left implicit
    back = read_coco_vid(out)
    assert back.num_unlabelled_frames == 2
    before, after = index.frame_by_image_id(), back.frame_by_image_id()
    assert before.keys() == after.keys()
    for iid, frame in before.items():
        other = after[iid]
        assert (other.labelled, other.frame_id, other.video_id) == (frame.labelled, frame.frame_id, frame.video_id)
        np.testing.assert_array_equal(other.boxes, frame.boxes)
        np.testing.assert_array_equal(other.labels, frame.labels)
