"""Streaming clips: a sliding window over one video's decoded frames that emits each key frame's clip.

A video teacher sees a key frame plus ``T - 1`` support frames of the same video, chosen as
``v2idetr eval`` chooses them (``data.clips.support_frame_indices`` with the evaluation mode:
``adjacent``, or ``past`` for causal models; clamped at the video ends). ``ClipWindow`` receives the
frames of one video in order and hands back ``(key, clip)`` pairs as soon as the key's last support
frame has arrived (or the video ended), in key order, each key exactly once. It keeps only the frames
some later key still needs, so it never holds more than ``window_bound(sampling)`` frames however
long the video: ``stride * (T - 1) + 1`` (the span of one clip).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import numpy as np

from v2idetr.data.clips import ClipSampling, support_frame_indices

Frame = TypeVar("Frame")

DETERMINISTIC_MODES = ("adjacent", "past")

# The deterministic modes never draw from it; support_frame_indices wants one anyway.
_UNUSED_RNG = np.random.default_rng(0)


def window_bound(sampling: ClipSampling) -> int:
    """Most frames a ``ClipWindow`` holds at once (before batching): the span of one clip."""
    return sampling.stride * (sampling.num_frames - 1) + 1


def clip_positions(sampling: ClipSampling, length: int) -> Callable[[int], list[int]]:
    """``key -> [key, support positions in temporal order]`` for a video of ``length`` frames."""
    if sampling.mode not in DETERMINISTIC_MODES:
        raise ValueError(
            f"streaming clips need a deterministic clip mode ({', '.join(DETERMINISTIC_MODES)}), got {sampling.mode!r}"
        )

    def positions(key: int) -> list[int]:
        return support_frame_indices(
            length, key, sampling.num_frames, sampling.mode, sampling.window, sampling.stride, _UNUSED_RNG
        )

    return positions


class ClipWindow(Generic[Frame]):
    """The decoded frames of one video of ``length`` frames that clips still need.

    ``push(frame)`` with the video's frames in order; it returns the clips completed by that frame
    as ``(key, [key, support frames...])`` (frames as pushed, repeated where clamped). ``peak`` is the
    most frames held at once so far.
    """

    def __init__(self, length: int, sampling: ClipSampling):
        if length < 1:
            raise ValueError(f"a video needs at least one frame, got {length}")
        self.length = length
        self.sampling = sampling
        self._positions = clip_positions(sampling, length)
        self._frames: dict[int, Frame] = {}  # position in the video -> frame
        self.decoded = 0  # frames pushed so far
        self.next_key = 0  # the first key frame not emitted yet
        self.peak = 0

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def done(self) -> bool:
        return self.next_key >= self.length

    def push(self, frame: Frame) -> list[tuple[Frame, list[Frame]]]:
        if self.decoded >= self.length:
            raise ValueError(f"more frames pushed than the video's {self.length}")
        self._frames[self.decoded] = frame
        self.decoded += 1
        self.peak = max(self.peak, len(self._frames))
        ready: list[tuple[Frame, list[Frame]]] = []
        while not self.done:
            positions = self._positions(self.next_key)
            if max(positions) >= self.decoded:  # a support frame is still to come
                break
            clip = [self._frames[p] for p in positions]
            ready.append((clip[0], clip))
            self.next_key += 1
        if ready:
            self._evict()
        return ready

    def _evict(self) -> None:
        """Drop the frames no later key needs (the first frame of a clip never decreases with its key)."""
        first_needed = self.decoded if self.done else min(self._positions(self.next_key))
        for p in [p for p in self._frames if p < first_needed]:
            del self._frames[p]
