"""Unlabelled media: image folders (natural order) and video files (frame count, size, fps)."""

from __future__ import annotations

import pytest
from PIL import Image

from v2idetr.data.formats.media import natural_key, read_image_folder, read_video_file
from v2idetr.data.io import read_frame
from v2idetr.errors import DatasetError


def test_natural_key_orders_numbers():
    names = ["f10.png", "f2.png", "f1.png", "F3.jpg"]
    assert sorted(names, key=natural_key) == ["f1.png", "f2.png", "F3.jpg", "f10.png"]


def test_image_folder_one_video_natural_order(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for name, size in (
        ("img10.png", (20, 10)),
        ("img2.jpg", (20, 10)),
        ("img1.bmp", (20, 10)),
        ("img3.tif", (20, 10)),
    ):
        Image.new("RGB", size).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    index = read_image_folder(folder)
    assert len(index.videos) == 1 and index.videos[0].name == "clip"
    assert [f.path.name for f in index.frames()] == ["img1.bmp", "img2.jpg", "img3.tif", "img10.png"]
    assert [f.frame_id for f in index.frames()] == [0, 1, 2, 3]
    assert {(f.width, f.height) for f in index.frames()} == {(20, 10)}
    assert index.class_names == [] and index.num_boxes == 0
    # read without labels, for inference: nobody labelled these frames, so none is a negative
    assert not any(f.labelled for f in index.frames()) and index.num_negative_frames == 0


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="no image files"):
        read_image_folder(tmp_path)
    (tmp_path / "a.png").write_bytes(b"not a png")
    Image.new("RGB", (4, 4)).save(tmp_path / "b.png")
    with pytest.raises(DatasetError) as info:
        read_image_folder(tmp_path)
    assert info.value.problems[0].file == str(tmp_path / "a.png")
    assert read_image_folder(tmp_path, skip_invalid=True).num_frames == 1


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])  # mkv keeps no frame count: packets are counted
def test_video_file_frames_size_fps(tmp_path, suffix, write_video):
    path = write_video(tmp_path / f"scope{suffix}", frames=7, size=(48, 32), fps=10)
    index = read_video_file(path)
    video = index.videos[0]
    assert video.name == "scope" and video.extra["fps"] == pytest.approx(10.0)
    assert len(video.frames) == 7
    assert [f.container_index for f in video.frames] == list(range(7))
    assert all(f.path == path and (f.width, f.height) == (48, 32) for f in video.frames)
    assert index.class_names == [] and index.num_unlabelled_frames == 7 and index.num_negative_frames == 0
    # the records address real frames: frame 5 decodes to grey ~100
    assert abs(float(read_frame(video.frames[5]).mean()) - 100) < 8


def test_video_file_errors(tmp_path):
    with pytest.raises(DatasetError, match="video file not found"):
        read_video_file(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(DatasetError, match="not a readable video"):
        read_video_file(bad)
