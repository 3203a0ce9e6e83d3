"""Unlabelled frames on the data side: a label budget (sparsify) and the frames the labels leave out
(add_frames), as functions and as `v2idetr data sparsify | add-frames` and `v2idetr synth --label-every`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from v2idetr.cli import main
from v2idetr.data.formats.cocovid import read_coco_vid
from v2idetr.data.index import DatasetIndex, FrameRecord, VideoRecord
from v2idetr.data.load import load_index
from v2idetr.data.unlabelled import add_frames, kept_positions, sparsify, write_label_budget
from v2idetr.errors import ConfigError, DatasetError


def box_index(lengths: list[int]) -> DatasetIndex:
    """Videos of the given lengths, frame ids 100, 102, ... (not positions), one distinct box per frame."""
    videos = []
    image_id = 1
    for vid, n in enumerate(lengths, start=1):
        frames = []
        for i in reversed(range(n)):  # listed backwards: sparsify must go by frame_id order
            box = np.array([[i, 1, i + 5, 6]], dtype=np.float32)
            frames.append(
                FrameRecord(
                    image_id + i,
                    vid,
                    100 + 2 * i,
                    Path(f"v{vid}/{i}.png"),
                    64,
                    48,
                    boxes=box,
                    labels=np.array([vid % 2]),
                    box_extra=[{"instance_id": vid}],
                )
            )
        image_id += n
        videos.append(VideoRecord(vid, f"v{vid}", frames))
    return DatasetIndex(videos, ["a", "b"], [1, 2])


def labelled_positions(video: VideoRecord) -> list[int]:
    return [i for i, f in enumerate(sorted(video.frames, key=lambda f: f.frame_id)) if f.labelled]


# ---------------------------------------------------------------------------------------- sparsify


@pytest.mark.parametrize(
    ("every", "expected"), [(10, [5, 15, 25, 35, 45]), (48, [24]), (2, list(range(1, 48, 2)))]
)
def test_sparsify_keeps_the_middle_of_each_run(every, expected):
    index = box_index([48])
    sparse = sparsify(index, every)
    video = sparse.videos[0]
    assert labelled_positions(video) == expected
    originals = {f.image_id: f for f in index.frames()}
    for position, frame in enumerate(video.frames):
        original = originals[frame.image_id]
        assert frame.frame_id == original.frame_id and frame.path == original.path
        if position in expected:
            np.testing.assert_array_equal(frame.boxes, original.boxes)
            np.testing.assert_array_equal(frame.labels, original.labels)
            assert frame.box_extra == original.box_extra and frame.labelled
        else:
            assert not frame.labelled and not frame.is_negative
            assert frame.boxes.shape == (0, 4) and frame.labels.shape == (0,) and frame.box_extra == []
    assert sparse.num_boxes == len(expected)
    assert index.num_boxes == 48 and index.num_unlabelled_frames == 0  # the input is left alone


def test_sparsify_is_deterministic_and_one_keeps_everything():
    index = box_index([48, 30, 7])
    assert sparsify(index, 10).to_coco_vid() == sparsify(index, 10).to_coco_vid()
    assert sparsify(index, 1).to_coco_vid() == index.to_coco_vid()
    with pytest.raises(ConfigError, match="every"):
        sparsify(index, 0)


@pytest.mark.parametrize(("length", "kept"), [(1, [0]), (3, [1]), (5, [2]), (6, [5]), (7, [5])])
def test_short_videos_keep_one_labelled_frame(length, kept):
    assert kept_positions(length, 10) == kept
    assert labelled_positions(sparsify(box_index([length]), 10).videos[0]) == kept


def test_sparsify_leaves_unlabelled_frames_unlabelled():
    index = box_index([20])
    frame = index.videos[0].frames[5]
    frame.labelled, frame.boxes, frame.labels, frame.box_extra = (
        False,
        np.zeros((0, 4), np.float32),
        np.zeros(0),
        [],
    )
    assert labelled_positions(sparsify(index, 10).videos[0]) == [15]


def test_sparsify_write_read_round_trip(tiny_synth, tmp_path):
    index = load_index(tiny_synth.train_json)
    sparse = sparsify(index, 4)
    out = tmp_path / "sparse.json"
    out.write_text(json.dumps(sparse.to_coco_vid(image_root=tmp_path)))
    back = read_coco_vid(out)
    assert back.num_frames == index.num_frames
    assert back.num_unlabelled_frames == index.num_frames - 2 * len(index.videos)  # 8 frames: positions 2, 6
    for frame in back.frames():
        mine = sparse.frame_by_image_id()[frame.image_id]
        assert frame.labelled == mine.labelled and frame.extra == mine.extra
        np.testing.assert_array_equal(frame.boxes, mine.boxes)


# ---------------------------------------------------------------------------------------- add_frames


def write_labels(path: Path, frames: list[dict], videos: list[dict]) -> Path:
    """COCO-VID of the given frames (``id, file_name, video_id, frame_id, width, height``), a box on each."""
    annotations = [
        {"id": i + 1, "image_id": f["id"], "category_id": 1, "bbox": [1, 1, 4, 4]}
        for i, f in enumerate(frames)
    ]
    doc = {
        "videos": videos,
        "images": frames,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "lesion"}],
    }
    path.write_text(json.dumps(doc))
    return path


def make_buv_like(root: Path) -> Path:
    """rawframes/{benign,malignant}/<hash>/000000.png..: 6 frames at 36x28 and 5 at 40x30; the label
    file (names relative to rawframes) lists frames 1 and 4 of the first and 2 of the second."""
    rawframes = root / "rawframes"
    listed = []
    for vid, (folder, n, size, keep) in enumerate(
        (("benign/aaa111", 6, (36, 28), (1, 4)), ("malignant/bbb222", 5, (40, 30), (2,))), start=1
    ):
        (rawframes / folder).mkdir(parents=True)
        for i in range(n):
            Image.new("L", size, 20 * i).save(rawframes / folder / f"{i:06d}.png")
        listed += [
            {
                "id": 100 * vid + i,
                "file_name": f"{folder}/{i:06d}.png",
                "video_id": vid,
                "frame_id": i,
                "width": size[0],
                "height": size[1],
            }
            for i in keep
        ]
    videos = [{"id": 1, "name": "benign/aaa111"}, {"id": 2, "name": "malignant/bbb222"}]
    return write_labels(root / "imagenet_vid_train_15frames.json", listed, videos)


def test_add_frames_buv_layout(tmp_path):
    labels = make_buv_like(tmp_path)
    rawframes = tmp_path / "rawframes"
    index = load_index(labels, images_root=rawframes)
    full, added = add_frames(index, rawframes)
    assert added == 8 and full.num_frames == 11 and full.num_unlabelled_frames == 8
    assert index.num_frames == 3  # the input is left alone
    first, second = full.videos
    assert [f.frame_id for f in first.frames] == list(range(6))
    assert [f.labelled for f in first.frames] == [False, True, False, False, True, False]
    assert [f.frame_id for f in second.frames] == list(range(5))
    assert {(f.width, f.height) for f in second.frames} == {(40, 30)}
    assert {(f.width, f.height) for f in first.frames} == {(36, 28)}
    new = [f for f in full.frames() if not f.labelled]
    assert all(len(f.boxes) == 0 and not f.is_negative for f in new)
    assert new[0].file_name == "benign/aaa111/000000.png" and new[0].path.name == "000000.png"
    ids = [f.image_id for f in full.frames()]
    assert len(set(ids)) == len(ids) and min(f.image_id for f in new) == 203  # after the largest, 202
    assert full.num_boxes == 3


def make_plain(root: Path, frame_ids: dict[str, int]) -> tuple[Path, Path]:
    """clips/scan/img1.jpg .. img12.jpg (64x48), frames numbered from 1; labels list ``frame_ids``."""
    folder = root / "clips" / "scan"
    folder.mkdir(parents=True)
    for i in range(1, 13):
        Image.new("RGB", (64, 48), (10 * i, 0, 0)).save(folder / f"img{i}.jpg")
    (folder / "notes.txt").write_text("not an image")
    frames = [
        {"id": 7 + n, "file_name": f"scan/{name}", "video_id": 3, "frame_id": fid, "width": 64, "height": 48}
        for n, (name, fid) in enumerate(frame_ids.items())
    ]
    return write_labels(root / "labels.json", frames, [{"id": 3, "name": "scan"}]), root / "clips"


def test_add_frames_plain_folder_numbered_from_one(tmp_path):
    labels, clips = make_plain(tmp_path, {"img3.jpg": 3, "img10.jpg": 10})  # natural order: img10 after img9
    full, added = add_frames(load_index(labels, images_root=clips), clips)
    video = full.videos[0]
    assert added == 10 and [f.frame_id for f in video.frames] == list(range(1, 13))
    assert [f.path.name for f in video.frames] == [f"img{i}.jpg" for i in range(1, 13)]
    assert [f.frame_id for f in video.frames if f.labelled] == [3, 10]
    assert sorted(f.image_id for f in video.frames if not f.labelled) == list(range(9, 19))


def test_add_frames_inconsistent_numbering_names_the_video(tmp_path):
    labels, clips = make_plain(tmp_path, {"img3.jpg": 3, "img10.jpg": 12})
    with pytest.raises(DatasetError) as info:
        add_frames(load_index(labels, images_root=clips), clips)
    [p] = info.value.problems
    assert "video 'scan'" in p.record and p.field == "frame_id"
    assert (
        "img10.jpg has frame_id 12 at position 9" in p.message
        and "img3.jpg has frame_id 3 at position 2" in p.message
    )


def test_add_frames_needs_one_readable_folder_per_video(tmp_path):
    labels, clips = make_plain(tmp_path, {"img3.jpg": 3})
    doc = json.loads(labels.read_text())
    (clips / "other").mkdir()
    Image.new("RGB", (64, 48)).save(clips / "other" / "img4.jpg")
    doc["images"].append({**doc["images"][0], "id": 99, "file_name": "other/img4.jpg", "frame_id": 4})
    labels.write_text(json.dumps(doc))
    with pytest.raises(DatasetError) as info:
        add_frames(load_index(labels, images_root=clips), clips)
    [p] = info.value.problems
    assert "video 'scan'" in p.record and "2 folders" in p.message
    assert str((clips / "other").resolve()) in p.message and str((clips / "scan").resolve()) in p.message

    labels, clips = make_plain(tmp_path / "b", {"img3.jpg": 3})
    (clips / "scan" / "img5.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError) as info:
        add_frames(load_index(labels, images_root=clips), clips)
    [p] = info.value.problems
    assert p.file == str((clips / "scan" / "img5.jpg").resolve()) and "not a readable image" in p.message


def test_sparsify_add_frames_read_round_trip(tmp_path):
    """A fully labelled video, cut to a label budget whose label file lists only the labelled frames
    (as BUV's does): adding the frames back gives what sparsify gives, and it survives a write and read."""
    labels, clips = make_plain(tmp_path, {f"img{i}.jpg": i for i in range(1, 13)})
    sparse = sparsify(load_index(labels, images_root=clips), 4)  # positions 2, 6, 10: frame ids 3, 7, 11
    budget = tmp_path / "budget.json"
    budget.write_text(json.dumps(sparse.labelled_only().to_coco_vid(image_root=tmp_path)))
    full, added = add_frames(load_index(budget), clips)
    assert added == 9
    out = tmp_path / "full.json"
    out.write_text(json.dumps(full.to_coco_vid(image_root=tmp_path)))
    back = read_coco_vid(out)

    def by_frame(index: DatasetIndex) -> dict[int, tuple]:
        return {
            f.frame_id: (f.path.resolve(), f.labelled, f.boxes.tolist(), f.labels.tolist())
            for f in index.frames()
        }

    assert by_frame(back) == by_frame(full) == by_frame(sparse)
    assert [f.frame_id for f in back.frames() if f.labelled] == [3, 7, 11]


# ---------------------------------------------------------------------------------------- CLI


def test_cli_sparsify_and_add_frames(tmp_path, capsys):
    labels = make_buv_like(tmp_path)
    rawframes = tmp_path / "rawframes"
    added = tmp_path / "all-frames.json"
    assert (
        main(["data", "add-frames", str(labels), "--frames-root", str(rawframes), "--out", str(added)]) == 0
    )
    out = capsys.readouterr().out
    assert "added 8 unlabelled frames to 2 of 2 videos" in out
    assert f"wrote {added}: 2 videos, 3 labelled frames, 8 unlabelled frames, 3 boxes" in out
    doc = json.loads(added.read_text())
    assert doc["images"][0]["file_name"] == "rawframes/benign/aaa111/000000.png"  # relative to OUT's folder
    assert doc["images"][0]["labelled"] is False and "labelled" not in doc["images"][1]
    back = read_coco_vid(added)
    assert back.num_frames == 11 and back.num_unlabelled_frames == 8

    sparse = tmp_path / "sparse.json"
    assert main(["data", "sparsify", str(added), "--every", "2", "--out", str(sparse)]) == 0
    # positions 1, 3, 5 and 1, 3 keep their labels; of those only frame 1 of the first video had any
    assert f"wrote {sparse}: 2 videos, 1 labelled frames, 10 unlabelled frames, 1 boxes kept (of 3)" in (
        capsys.readouterr().out
    )
    assert read_coco_vid(sparse).num_unlabelled_frames == 10

    doc = json.loads(labels.read_text())
    doc["images"][1]["frame_id"] = 7  # frame 000004.png at position 4
    labels.write_text(json.dumps(doc))
    assert (
        main(["data", "add-frames", str(labels), "--frames-root", str(rawframes), "--out", str(added)]) == 2
    )
    err = capsys.readouterr().err
    assert "video 'benign/aaa111'" in err and "000004.png has frame_id 7 at position 4" in err
    with pytest.raises(SystemExit):
        main(["data", "sparsify", str(added), "--every", "0", "--out", str(sparse)])
    assert "--every: expected an integer >= 1" in capsys.readouterr().err


def test_write_label_budget_sparsifies_from_the_full_labels(tiny_synth, tmp_path):
    train = tmp_path / "train.json"
    index = load_index(tiny_synth.train_json)
    train.write_text(json.dumps(index.to_coco_vid(image_root=tmp_path)))
    original = train.read_bytes()
    full = write_label_budget(train, 8)
    assert full == tmp_path / "train-all-labels.json" and full.read_bytes() == original
    assert read_coco_vid(train).num_frames - read_coco_vid(train).num_unlabelled_frames == len(index.videos)
    write_label_budget(train, 2)  # from the full labels, not from the 1-in-8 file
    sparse = read_coco_vid(train)
    assert sparse.num_frames - sparse.num_unlabelled_frames == 4 * len(index.videos)
    assert full.read_bytes() == original
    with pytest.raises(ConfigError):
        write_label_budget(train, 0)
    assert not list(tmp_path.glob(".*.tmp"))


def test_synth_label_every(tmp_path, caplog):
    out = tmp_path / "synth"
    args = ["synth", "--out", str(out), "--videos", "4", "--frames", "8", "--size", "64", "--no-progress"]
    assert main([*args, "--label-every", "4"]) == 0
    train, full, val = (
        read_coco_vid(out / "train.json"),
        read_coco_vid(out / "train-all-labels.json"),
        read_coco_vid(out / "val.json"),
    )
    assert full.num_unlabelled_frames == 0 and val.num_unlabelled_frames == 0
    for video in train.videos:
        assert labelled_positions(video) == [2, 6]
    assert train.num_frames == full.num_frames
    boxes = {f.image_id: f.boxes.tolist() for f in full.frames()}
    assert all(f.boxes.tolist() == boxes[f.image_id] for f in train.frames() if f.labelled)
    # a rerun without a budget leaves no stale full-label file behind
    assert main([*args, "--overwrite"]) == 0
    assert not (out / "train-all-labels.json").exists()
    assert read_coco_vid(out / "train.json").num_unlabelled_frames == 0


def test_cli_add_frames_on_synthetic_frames_counts_per_split(tiny_synth, tmp_path, capsys):
    """A label file listing 1 frame in 4 of each synthetic video (frames/<video>/000000.png ...)."""
    index = load_index(tiny_synth.train_json)
    budget = tmp_path / "budget.json"
    budget.write_text(json.dumps(sparsify(index, 4).labelled_only().to_coco_vid(image_root=tmp_path)))
    out = tmp_path / "full.json"
    assert (
        main(["data", "add-frames", str(budget), "--frames-root", str(tiny_synth.out), "--out", str(out)])
        == 0
    )
    n = len(index.videos)
    assert f"added {6 * n} unlabelled frames (train: {6 * n}) to {n} of {n} videos" in capsys.readouterr().out
    back = read_coco_vid(out)
    assert [f.image_id for f in back.frames() if f.labelled] == [
        f.image_id for f in sparsify(index, 4).frames() if f.labelled
    ]
    assert sorted((f.video_id, f.frame_id) for f in back.frames()) == sorted(
        (f.video_id, f.frame_id) for f in index.frames()
    )
