"""The video teacher: the image detector plus a temporal module between backbone and encoder.

State-dict keys are ``detector.*`` (exactly the student's network) and ``temporal.*``, so a
student can start from the teacher's shared weights and the teacher never duplicates the detector.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from v2idetr.config import ModelConfig
from v2idetr.errors import ConfigError
from v2idetr.models.backbone import FeatureMaps
from v2idetr.models.detector import Detector, build_detector
from v2idetr.models.msi import MeanTemporal, MSITemporal, split_frames


def repeated_frames(images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor] | None:
    """``(first, inverse)`` for a batch of frames ``images [N, 3, H, W]`` (``masks [N, H, W]``) in
    which some frame occurs more than once with the same padding, so that ``images[first][inverse]``
    is ``images``; None when every frame differs. Neighbouring clips share frames (a batch of 8
    consecutive key frames with T = 3 holds about 10 distinct frames in 24; a static teacher's clip
    one in T), and an image backbone in eval mode treats every frame on its own, so the features of
    the distinct ones are all a teacher needs. A cheap fingerprint finds candidates; equality is exact."""
    n = images.shape[0]
    if n < 2:
        return None
    flat = images.reshape(n, -1)
    prints = (flat.sum(1) + flat[:, ::7].sum(1) * 3.0 + masks.reshape(n, -1).sum(1)).tolist()
    first: list[int] = []
    inverse: list[int] = []
    for i, fp in enumerate(prints):
        match = next((k for k, j in enumerate(first) if abs(prints[j] - fp) <= 1e-4 * (abs(fp) + 1.0)
                      and torch.equal(flat[j], flat[i]) and torch.equal(masks[j], masks[i])), None)
        if match is None:
            first.append(i)
            match = len(first) - 1
        inverse.append(match)
    if len(first) == n:
        return None
    return (torch.tensor(first, device=images.device), torch.tensor(inverse, device=images.device))


def static_clips(clips: Tensor) -> Tensor:
    """Each clip's key frame repeated T times (``[B, T, 3, H, W]``): a teacher fed these keeps its
    per-frame transform and loses its temporal context."""
    return clips[:, :1].expand_as(clips)


class VideoTeacher(nn.Module):
    """``forward(images [B, T, 3, H, W], masks [B, H, W], targets) -> detector outputs for the key frame``
    (index 0 of T). Outputs have the image detector's keys and shapes."""

    def __init__(self, cfg: ModelConfig, num_classes: int, num_frames: int):
        super().__init__()
        if num_frames < 1:
            raise ConfigError(f"config key 'data.num_frames' = {num_frames}: a teacher needs >= 1 frame")
        self.num_frames = num_frames
        # in eval mode, frames repeated within a batch go through the backbone once (`repeated_frames`)
        self.reuse_repeated_frames = True
        self.detector: Detector = build_detector(cfg, num_classes)
        if cfg.temporal == "msi":
            self.temporal: nn.Module = MSITemporal(
                cfg.hidden_dim,
                cfg.num_feature_levels,
                num_frames,
                cfg.msi_layers,
                cfg.nheads,
                cfg.msi_points,
                cfg.ffn_dim,
                cfg.dropout,
                gate=cfg.msi_gate,
            )
        elif cfg.temporal == "mean":
            self.temporal = MeanTemporal()
        else:
            raise ConfigError(
                f"config key 'model.temporal' = {cfg.temporal!r}: a teacher needs 'msi' or 'mean'"
            )

    def extract_features(self, images: Tensor, masks: Tensor) -> FeatureMaps:
        """Shared backbone over all ``B*T`` frames (in eval mode each distinct one once), then the
        temporal module -> key-frame features."""
        if images.dim() != 5 or images.shape[1] != self.num_frames:
            raise ValueError(
                f"teacher expects clips [B, {self.num_frames}, 3, H, W], got {tuple(images.shape)}"
            )
        b, t = images.shape[:2]
        frames, frame_masks = images.flatten(0, 1), masks.repeat_interleave(t, 0)
        repeated = None
        if self.reuse_repeated_frames and not self.training and not torch.compiler.is_compiling():
            repeated = repeated_frames(frames, frame_masks)
        if repeated is None:
            feats = self.detector.extract_features(frames, frame_masks)
        else:  # each distinct frame through the backbone once (eval, predict, a frozen teacher distilling)
            first, inverse = repeated
            once = self.detector.extract_features(frames[first], frame_masks[first])
            feats = FeatureMaps(*([m[inverse] for m in maps] for maps in (once.srcs, once.masks, once.pos)))
        return self.temporal(split_frames(feats, t))

    def forward(
        self, images: Tensor, masks: Tensor, targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Any]:
        return self.detector.forward_features(self.extract_features(images, masks), targets)


class FrameTeacher(nn.Module):
    """An image detector behind the teacher's interface (clips of one frame, ``[B, 1, 3, H, W]``).

    Distilling from it is self-training with the same losses: the control that tells what a video
    teacher's temporal context adds to a student, beyond having a teacher at all."""

    num_frames = 1

    def __init__(self, detector: Detector):
        super().__init__()
        self.detector = detector

    def extract_features(self, images: Tensor, masks: Tensor) -> FeatureMaps:
        if images.dim() != 5 or images.shape[1] != 1:
            raise ValueError(f"an image teacher expects clips [B, 1, 3, H, W], got {tuple(images.shape)}")
        return self.detector.extract_features(images[:, 0], masks)

    def forward(
        self, images: Tensor, masks: Tensor, targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Any]:
        return self.detector.forward_features(self.extract_features(images, masks), targets)


TEACHER_VIEWS = ("clip", "static", "key-frame")


class TeacherView(nn.Module):
    """A video teacher shown less than its clip, so an evaluation tells how much of its lead a
    single-frame student can inherit: ``static`` (its key frame T times: the per-frame part of what
    it knows) and ``key-frame`` (its shared image detector alone: where a student distilled from it
    starts). What the ``clip`` view leads ``static`` by is temporal context, which a student can
    only learn to guess from one frame."""

    def __init__(self, teacher: VideoTeacher, view: str):
        super().__init__()
        if view not in ("static", "key-frame"):
            raise ConfigError(f"teacher view {view!r}: expected 'static' or 'key-frame' ('clip' is the teacher itself)")
        self.teacher, self.view = teacher, view

    def forward(self, images: Tensor, masks: Tensor, targets: list[dict[str, Tensor]] | None = None) -> dict[str, Any]:
        if self.view == "static":
            return self.teacher(static_clips(images), masks, targets)
        return self.teacher.detector(images, masks, targets)  # an image detector takes the key frame of a clip
