"""Frame reading: image files in every common mode, frames inside a video, and broken files."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from v2idetr.data import io
from v2idetr.data.index import FrameRecord
from v2idetr.data.io import FrameReadError, read_frame
from v2idetr.errors import DatasetError


def _record(path: Path, image_id: int = 7, container_index: int | None = None, w: int = 12, h: int = 8) -> FrameRecord:
    return FrameRecord(
        image_id=image_id, video_id=1, frame_id=0, path=path, width=w, height=h, container_index=container_index
    )


def _pattern(h: int = 8, w: int = 12) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_png_round_trip_is_exact(tmp_path: Path) -> None:
    pixels = _pattern()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    out = read_frame(_record(tmp_path / "a.png"))
    assert out.dtype == np.uint8 and out.shape == (8, 12, 3)
    np.testing.assert_array_equal(out, pixels)


def test_jpeg_is_close(tmp_path: Path) -> None:
    pixels = np.full((16, 16, 3), (200, 40, 90), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=95)
    out = read_frame(_record(tmp_path / "a.jpg"))
    assert out.shape == (16, 16, 3)
    assert np.abs(out.astype(int) - pixels.astype(int)).max() <= 6


def test_grey_is_replicated(tmp_path: Path) -> None:
    grey = np.arange(96, dtype=np.uint8).reshape(8, 12)
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    out = read_frame(_record(tmp_path / "g.png"))
    assert out.shape == (8, 12, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)


def test_16bit_grey_keeps_top_bits(tmp_path: Path) -> None:
    grey = (np.arange(96, dtype=np.uint16) * 600).reshape(8, 12)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    out = read_frame(_record(tmp_path / "g16.png"))
    np.testing.assert_array_equal(out[:, :, 1], (grey >> 8).astype(np.uint8))


def test_rgba_drops_alpha(tmp_path: Path) -> None:
    pixels = _pattern()
    rgba = np.concatenate([pixels, np.full((8, 12, 1), 30, dtype=np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_frame(_record(tmp_path / "a.png")), pixels)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nope.png") as info:
        read_frame(_record(tmp_path / "nope.png"))
    assert "image_id 7" in str(info.value)


def test_truncated_png_names_the_file(tmp_path: Path) -> None:
    Image.fromarray(_pattern(64, 64)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(FrameReadError, match="t.png") as info:
        read_frame(_record(tmp_path / "t.png"))
    assert isinstance(info.value, DatasetError)
    assert "image_id 7" in str(info.value)


def test_garbage_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"this is not an image")
    with pytest.raises(DatasetError, match="x.jpg"):
        read_frame(_record(tmp_path / "x.jpg"))


def _write_video(path: Path, n: int = 24, size: int = 32) -> list[int]:
    """Frames of uniform grey levels, far apart, so each decoded frame can be identified."""
    levels = [20 + 9 * i for i in range(n)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.gop_size = 5  # several key frames, so seeks land before the target
        stream.options = {"qscale": "2"}
        for level in levels:
            img = np.full((size, size, 3), level, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return levels


def test_video_frames_sequential_and_random_access(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    levels = _write_video(path)
    io.clear_video_cache()

    def level_of(i: int) -> float:
        img = read_frame(_record(path, image_id=100 + i, container_index=i, w=32, h=32))
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
        return float(img.mean())

    def check(i: int) -> None:
        assert abs(level_of(i) - levels[i]) < 3.5, f"frame {i}"

    for i in range(6):  # in order: decoded forward
        check(i)
    for i in [17, 3, 3, 22, 0, 9, 23, 12, 11]:  # random access: seeks backwards and forwards
        check(i)
    io.clear_video_cache()


def test_video_index_past_the_end(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    _write_video(path, n=6)
    with pytest.raises(FrameReadError, match=r"clip\.mp4.*frame index 40"):
        read_frame(_record(path, container_index=40, w=32, h=32))
    io.clear_video_cache()


def test_missing_and_corrupt_video(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="gone.mp4"):
        read_frame(_record(tmp_path / "gone.mp4", container_index=0))
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(DatasetError, match="bad.mp4"):
        read_frame(_record(tmp_path / "bad.mp4", container_index=0))
    io.clear_video_cache()


def test_cache_is_bounded(tmp_path: Path) -> None:
    io.clear_video_cache()
    for k in range(io.MAX_OPEN_CONTAINERS + 2):
        path = tmp_path / f"v{k}.mp4"
        _write_video(path, n=3, size=16)
        read_frame(_record(path, container_index=1, w=16, h=16))
    assert len(io._cache) == io.MAX_OPEN_CONTAINERS
    io.clear_video_cache()
    assert len(io._cache) == 0
