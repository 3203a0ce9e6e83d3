"""Archives of videos nobody labelled: the folder-of-videos layout, merging into the training index,
the refusals (labelled frames, frames shared with other splits), and the synthetic archive."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import pytest

from v2idetr.cli import main
from v2idetr.config import load_config, unlabelled_per_batch
from v2idetr.data.archive import add_archive, read_archive, synthetic_archive
from v2idetr.data.formats.cocovid import read_coco_vid
from v2idetr.data.io import read_frame
from v2idetr.data.load import detect_format, load_index
from v2idetr.errors import ConfigError, DatasetError


def _tree(tmp_path: Path, tiny_synth, write_video) -> Path:
    """An archive folder: two frame folders at different depths and a video file."""
    root = tmp_path / "archive"
    frames = Path(tiny_synth.train_json).parent / "frames"
    first, second = sorted(frames.iterdir())[:2]
    shutil.copytree(first, root / "site-a" / "case-1")
    shutil.copytree(second, root / "case-2")
    write_video(root / "site-a" / "case-3.mp4", frames=5)
    (root / ".hidden").mkdir()
    shutil.copytree(first, root / ".hidden" / "skip")
    return root


def test_a_folder_of_videos_is_one_video_per_frame_folder_and_video_file(tmp_path, tiny_synth, write_video) -> None:
    root = _tree(tmp_path, tiny_synth, write_video)
    assert detect_format(root) == "videos"
    index = load_index(root)
    assert [v.name for v in index.videos] == ["case-2", "site-a/case-1", "site-a/case-3.mp4"]
    assert [v.video_id for v in index.videos] == [1, 2, 3]
    assert [f.image_id for f in index.frames()] == list(range(1, index.num_frames + 1))
    assert index.num_unlabelled_frames == index.num_frames == 8 + 8 + 5
    video_frames = index.videos[2].frames
    assert [f.container_index for f in video_frames] == list(range(5)) and video_frames[0].path.suffix == ".mp4"
    assert index.videos[1].frames[0].file_name == "site-a/case-1/000000.png"
    # an unreadable video is a problem of its own: named, and left out with skip_invalid
    (root / "case-4.mp4").write_bytes(b"not a video")
    with pytest.raises(DatasetError, match="case-4.mp4"):
        load_index(root)
    assert len(load_index(root, skip_invalid=True).videos) == 3
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(DatasetError, match="unknown dataset layout"):
        load_index(empty)
    with pytest.raises(DatasetError, match="no frame folders"):
        load_index(empty, format="videos")


def test_an_archive_of_video_files_is_indexed_without_decoding_and_read_frame_by_frame(tmp_path, monkeypatch,
                                                                                      write_video) -> None:
    root = tmp_path / "videos"
    root.mkdir()
    for name in ("a.mp4", "b.mkv"):
        write_video(root / name, frames=6)

    def no_decoding(*args, **kwargs):
        raise AssertionError("scanning an archive must not decode frames")

    monkeypatch.setattr(av.VideoFrame, "to_ndarray", no_decoding)
    index = read_archive(root)
    monkeypatch.undo()
    assert index.num_frames == 12 and {f.path.name for f in index.frames()} == {"a.mp4", "b.mkv"}
    frame = index.videos[1].frames[4]
    assert read_frame(frame)[0, 0, 0] == pytest.approx(80, abs=6)  # frame i is grey 20 * i


def test_an_archive_must_be_unlabelled(tmp_path, tiny_synth) -> None:
    with pytest.raises(DatasetError, match=r"labelled.*data\.unlabelled takes videos nobody labelled"):
        read_archive(tiny_synth.train_json)
    doc = json.loads(Path(tiny_synth.train_json).read_text())
    doc["annotations"] = []
    for image in doc["images"]:
        image["labelled"] = False
    unlabelled = Path(tiny_synth.train_json).with_name("all-unlabelled.json")
    unlabelled.write_text(json.dumps(doc))
    assert read_archive(unlabelled).num_unlabelled_frames == len(doc["images"])


def test_archive_videos_join_the_training_index_with_new_ids(tmp_path, tiny_synth, write_video) -> None:
    train, val = read_coco_vid(tiny_synth.train_json), read_coco_vid(tiny_synth.val_json)
    archive = load_index(_tree(tmp_path, tiny_synth, write_video))
    # the tree copies two training videos' frames: copies are other files, so they are not refused
    merged = add_archive(train, {"archive": archive}, {"data.val": val})
    assert merged.videos[: len(train.videos)] == train.videos
    added = merged.videos[len(train.videos):]
    assert [v.name for v in added] == [v.name for v in archive.videos] and all(v.extra["archive"] == "archive"
                                                                               for v in added)
    ids = [f.image_id for f in merged.frames()]
    assert len(set(ids)) == len(ids) and len({v.video_id for v in merged.videos}) == len(merged.videos)
    assert merged.num_unlabelled_frames == archive.num_frames and merged.num_boxes == train.num_boxes
    assert archive.videos[0].frames[0].image_id == 1  # the archive's own records are left as they were
    # a frame that is also a validation frame (or a training one, or another archive's) is refused
    with pytest.raises(DatasetError, match=r"also in data\.val"):
        add_archive(train, {"leak": read_archive(Path(tiny_synth.val_json).parent / "frames")}, {"data.val": val})
    with pytest.raises(DatasetError, match=r"also in archive"):
        add_archive(train, {"archive": archive, "again": archive})


def test_data_unlabelled_is_a_repeatable_list_and_brings_half_a_batch(tmp_path) -> None:
    cfg = load_config(None, ["data.unlabelled=a.json", "data.batch_size=4", "data.unlabelled=b"])
    assert cfg.data.unlabelled == ["a.json", "b"] and unlabelled_per_batch(cfg) == 4
    assert load_config(None, ["data.unlabelled=[a, b]"]).data.unlabelled == ["a", "b"]
    assert load_config(None, ["data.unlabelled="]).data.unlabelled == []
    cfg = load_config(None, ["data.unlabelled=a", "distill.unlabelled=0.2", "data.batch_size=8"])
    assert unlabelled_per_batch(cfg) == 2  # an explicit share wins
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["data.unlabelled"])


def test_synthetic_archive_holds_no_label_and_no_video_of_the_labelled_data(tmp_path) -> None:
    first = synthetic_archive(tmp_path / "a", "ultrasound", 3, 5, 48, seed=1)
    doc = json.loads(first.read_text())
    assert doc["annotations"] == [] and all(im["labelled"] is False for im in doc["images"])
    assert all(set(im) == {"id", "file_name", "video_id", "frame_id", "width", "height", "labelled"}
               for im in doc["images"])  # no degradation or look-alike hints either
    assert not (tmp_path / "a" / "unlabelled" / "train.json").exists()
    assert read_archive(first).num_frames == 15
    again = synthetic_archive(tmp_path / "b", "ultrasound", 3, 5, 48, seed=1)
    assert again.read_bytes() == first.read_bytes()
    assert (tmp_path / "a/unlabelled/frames/ultrasound_0001/000003.png").read_bytes() == (
        tmp_path / "b/unlabelled/frames/ultrasound_0001/000003.png").read_bytes()
    with pytest.raises(ConfigError, match="already holds"):
        synthetic_archive(tmp_path / "a", "ultrasound", 3, 5, 48, seed=1)


def test_synth_writes_an_archive_and_a_rerun_without_one_removes_it(tmp_path) -> None:
    out = tmp_path / "us"
    base = ["synth", "--out", str(out), "--videos", "3", "--frames", "4", "--size", "48", "--no-progress"]
    assert main([*base, "--unlabelled-videos", "2"]) == 0
    assert len(read_archive(out / "unlabelled.json").videos) == 2
    assert main([*base, "--overwrite"]) == 0
    assert not (out / "unlabelled.json").exists() and not (out / "unlabelled").exists()
