"""SUN readers: the original per-case layout (text annotations) and SUN-SEG (masks + bbox JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from v2idetr.data.formats.sun import parse_sun_line, read_sun
from v2idetr.data.formats.sun_seg import mask_boxes, read_sun_seg
from v2idetr.errors import DatasetError

W, H = 48, 32


def frames(folder: Path, names: list[str], size: tuple[int, int] = (W, H)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", size, (90, 40, 40)).save(folder / name)


def make_sun(root: Path, frames_dir: str = "", ann_dir: str = "annotation_txt") -> Path:
    base = root / frames_dir if frames_dir else root
    frames(base / "case1", ["case1_1.jpg", "case1_2.jpg", "case1_10.jpg"])
    frames(base / "case2", ["case2_1.jpg", "case2_2.jpg"], size=(30, 40))
    frames(base / "case13", ["n_1.jpg", "n_2.jpg"])  # polyp-free case: no annotation file
    (root / ann_dir).mkdir()
    (root / ann_dir / "case1.txt").write_text(
        "case1_1.jpg 1,2,11,12,0\ncase1_2.jpg\ncase1_10.jpg 3,4,13,14,0 20,5,30,15,2\n"
    )
    (root / ann_dir / "case2.txt").write_text("case2_1.jpg 0, 0, 10, 20, 2\ncase2_2.jpg 1,1,5,5,0\n")
    return root


def test_reads_cases_negatives_and_classes(tmp_path):
    index = read_sun(make_sun(tmp_path))
    assert [v.name for v in index.videos] == ["case1", "case2", "case13"]
    case1 = index.videos[0]
    # natural sort: _2 before _10
    assert [f.path.name for f in case1.frames] == ["case1_1.jpg", "case1_2.jpg", "case1_10.jpg"]
    assert [f.frame_id for f in case1.frames] == [0, 1, 2]
    assert index.category_ids == [0, 2] and index.class_names == ["class0", "class2"]
    np.testing.assert_allclose(case1.frames[2].boxes, [[3, 4, 13, 14], [20, 5, 30, 15]])
    assert case1.frames[2].labels.tolist() == [0, 1]
    assert case1.frames[1].is_negative
    case2 = index.videos[1]
    assert (case2.frames[0].width, case2.frames[0].height) == (30, 40)  # from the image header
    assert case2.frames[0].labels.tolist() == [1]
    assert all(f.is_negative for f in index.videos[2].frames)
    assert index.num_frames == 7 and index.num_boxes == 5


def test_alternative_folder_names_and_single_class(tmp_path):
    root = make_sun(tmp_path, frames_dir="frames", ann_dir="annotations")
    (root / "annotations" / "case2.txt").write_text("case2_1.jpg 0,0,10,20,0\n")
    (root / "annotations" / "case1.txt").write_text("case1_1.jpg 1,2,11,12,0\n")
    index = read_sun(root, check_files=False)
    assert index.class_names == ["polyp"] and index.category_ids == [0]
    assert index.videos[0].frames[0].file_name == "case1/case1_1.jpg"
    assert index.num_boxes == 2


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ("case1_2.jpg 1,2,11,0", "box", "expected x1,y1,x2,y2,class"),
        ("case1_2.jpg 1,two,11,12,0", "y1", "'two' is not a number"),
        ("case1_2.jpg 1,2,11,12,polyp", "class", "not a non-negative integer"),
    ],
)
def test_malformed_line_names_file_line_and_field(tmp_path, line, field, message):
    root = make_sun(tmp_path)
    ann = root / "annotation_txt" / "case1.txt"
    ann.write_text(f"case1_1.jpg 1,2,11,12,0\n{line}\n")
    with pytest.raises(DatasetError) as info:
        read_sun(root)
    p = info.value.problems[0]
    assert (p.file, p.record, p.field) == (str(ann), "line 2", field)
    assert message in p.message
    index = read_sun(root, skip_invalid=True)
    assert "case1_2.jpg" not in [f.path.name for f in index.videos[0].frames]
    assert len(index.skipped) == 1


def test_bad_boxes_and_unknown_frames(tmp_path):
    root = make_sun(tmp_path)
    ann = root / "annotation_txt" / "case1.txt"
    ann.write_text("case1_1.jpg 5,2,5,12,0\ncase1_2.jpg 1,2,60,12,0\ncase1_99.jpg 1,1,2,2,0\n")
    with pytest.raises(DatasetError) as info:
        read_sun(root)
    found = {(p.record, p.field): p.message for p in info.value.problems}
    assert "non-positive width" in found[("image case1_1.jpg", "bbox")]
    assert "outside the 48x32 image" in found[("image case1_2.jpg", "bbox")]
    assert "'case1_99.jpg' is not in the case's frame folder" in found[("line 3", "image name")]


def test_parse_line_several_groups():
    name, boxes, bad, _ = parse_sun_line("a.jpg  1,2,3,4,1   5,6,7,8,1")
    assert name == "a.jpg" and not bad and boxes == [(1, 2, 3, 4, 1), (5, 6, 7, 8, 1)]


def test_mask_boxes_components():
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[2:6, 3:10] = 255
    mask[10:18, 20:25] = 255
    mask[0, 29] = 255  # a speck, not a polyp
    assert mask_boxes(mask) == [(3.0, 2.0, 10.0, 6.0), (20.0, 10.0, 25.0, 18.0)]


def make_sun_seg(root: Path, with_json: bool = True, swap: bool = False) -> Path:
    """Two cases of 40x24 frames with one rectangular polyp mask per frame."""
    images, annotation = [], []
    iid = 1
    for case, names in (("case1", ["case1_1", "case1_2", "case1_10"]), ("case2", ["case2_5"])):
        (root / "Frame" / case).mkdir(parents=True)
        (root / "GT" / case).mkdir(parents=True)
        for k, name in enumerate(names):
            Image.new("RGB", (40, 24)).save(root / "Frame" / case / f"{name}.jpg")
            mask = np.zeros((24, 40), dtype=np.uint8)
            x, y, w, h = 2 + 3 * k, 4, 20, 6
            mask[y : y + h, x : x + w] = 255
            Image.fromarray(mask).save(root / "GT" / case / f"{name}.png")
            images.append({"id": iid, "width": 40, "height": 24, "case_name": case, "file_name": name})
            annotation.append({"id": iid, "bbox": [y, x, h, w] if swap else [x, y, w, h]})
            iid += 1
    if with_json:
        (root / "bbox_annotation.json").write_text(json.dumps({"images": images, "annotation": annotation}))
    return root


def test_sun_seg_from_json(tmp_path):
    index = read_sun_seg(make_sun_seg(tmp_path))
    assert [v.name for v in index.videos] == ["case1", "case2"]
    case1 = index.videos[0]
    assert [Path(f.file_name).name for f in case1.frames] == ["case1_1.jpg", "case1_2.jpg", "case1_10.jpg"]
    np.testing.assert_allclose(case1.frames[1].boxes, [[5, 4, 25, 10]])
    assert index.class_names == ["polyp"]


def test_sun_seg_from_masks_matches_json(tmp_path):
    from_json = read_sun_seg(make_sun_seg(tmp_path / "a"))
    from_masks = read_sun_seg(make_sun_seg(tmp_path / "b", with_json=False))
    for fa, fb in zip(from_json.frames(), from_masks.frames(), strict=True):
        np.testing.assert_allclose(fa.boxes, fb.boxes)


def test_sun_seg_swapped_axes_refused(tmp_path):
    with pytest.raises(DatasetError) as info:
        read_sun_seg(make_sun_seg(tmp_path, swap=True), skip_invalid=True)
    assert len(info.value.problems) == 1  # the cause, not one out-of-image box per frame
    p = info.value.problems[0]
    assert p.field == "bbox" and p.file.endswith("bbox_annotation.json")
    assert "y, x order" in p.message and "0/3 checked frames agree" in p.message  # 2 per case
