"""The student's training objective during distillation: detection loss + w_TFD * TFD + w_CQD * CQD.

The teacher is frozen (eval mode, no gradients) and sees the whole clip (or, with
``distill.teacher_view=static``, its key frame T times: the control without temporal context); the
student sees only the key frame (index 0 of the clip), degraded with probability
``distill.student_degrade`` (``distill/student_view.py``). Every term is returned separately so the
trainer logs each.

Unlabelled key frames (``target["labelled"]`` False; ``distill.unlabelled`` of each batch) get no
detection loss: nobody said where their lesions are. TFD's mask there is built from the teacher's
own detections on its clip (score >= ``distill.pseudo_score``) instead of the ground truth, and CQD
needs no labels. Soft targets only: a hard pseudo-label would make every lesion the teacher misses
background. ``distill.pseudo_boxes`` (off by default) adds the nearest thing to a detection loss
there: the student's own predictions are matched to the teacher's detections (score >=
``distill.pseudo_score``, after NMS) and trained towards them with the teacher's scores as soft class
targets (unmatched queries towards no-object, as the teacher says).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms, box_convert

from v2idetr.config import DistillConfig
from v2idetr.data.collate import Batch
from v2idetr.distill.cqd import CQDLoss
from v2idetr.distill.student_view import degrade_key_frames
from v2idetr.distill.tfd import TFDLoss
from v2idetr.errors import ConfigError
from v2idetr.models.backbone import FeatureMaps
from v2idetr.models.criterion import select_images
from v2idetr.models.detector import Detector, Memory
from v2idetr.models.teacher import VideoTeacher, static_clips

PSEUDO_NMS_IOU = 0.7


def _distilled_maps(features: FeatureMaps, memory: Memory, which: str) -> list[Tensor]:
    """The feature maps TFD pulls together: encoder memory (default) or the projected backbone levels."""
    return memory.levels() if which == "memory" else list(features.srcs)


class DistillationObjective:
    """Callable ``batch -> losses`` for the trainer; ``extra_modules`` holds TFD's adapters."""

    def __init__(
        self,
        student: Detector,
        teacher: VideoTeacher,
        criterion: nn.Module,
        cfg: DistillConfig,
        box_weight: float = 5.0,
        giou_weight: float = 2.0,
        start: Detector | None = None,
    ):
        """``start``: a frozen copy of the student's starting weights (``distill.tfd_target=residual``)."""
        self.student, self.teacher, self.criterion, self.cfg = student, teacher, criterion, cfg
        teacher.eval()
        teacher.requires_grad_(False)
        self.start = start
        if cfg.tfd > 0 and cfg.tfd_target == "residual":
            if start is None:
                raise ConfigError("config key 'distill.tfd_target' = 'residual': the target is the starting "
                                  "student's features plus the temporal residual, so the student needs a start "
                                  "(distill.init_from_teacher=true or train.init_from)")
            start.eval()
            start.requires_grad_(False)
        d_s = student.level_embed.shape[1]
        d_t = teacher.detector.level_embed.shape[1]
        levels = student.level_embed.shape[0]
        self.tfd = TFDLoss(d_s, d_t, levels, cfg.tfd_mask) if cfg.tfd > 0 else None
        self.cqd = (
            CQDLoss(box_weight, giou_weight, proposal_weight=cfg.cqd_proposals,
                    student_query_weight=cfg.cqd_student_queries, class_norm=cfg.cqd_class_norm)
            if cfg.cqd > 0
            else None
        )
        two_stage = student.query_selector.two_stage and teacher.detector.query_selector.two_stage
        if self.cqd is not None and cfg.cqd_proposals > 0 and not two_stage:
            # checked here, not in the config: an image model without two-stage queries trains fine
            raise ConfigError(
                f"config key 'distill.cqd_proposals' = {cfg.cqd_proposals}: the proposal term distils "
                "two-stage encoder scores, but the student or the teacher has model.two_stage=false; "
                "set distill.cqd_proposals=0 or use two-stage models"
            )
        if self.cqd is not None and cfg.cqd_student_queries > 0 and student.num_queries > teacher.detector.num_queries:
            raise ConfigError(
                f"config key 'distill.cqd_student_queries' = {cfg.cqd_student_queries}: the teacher decodes the "
                f"student's {student.num_queries} queries with its own {teacher.detector.num_queries} learned "
                "contents; give the student model.num_queries <= the teacher's or set distill.cqd_student_queries=0"
            )
        self.extra_modules = nn.ModuleDict({"tfd": self.tfd} if self.tfd is not None else {})
        # with every teacher-fed term off (the bench's student-init-only control) the student trains on
        # its labels alone: the teacher's pass over the clip, most of a step's cost, would be thrown away
        self.uses_teacher = self.tfd is not None or self.cqd is not None or cfg.pseudo_boxes > 0

    @torch.no_grad()
    def _teacher(self, batch: Batch) -> tuple[FeatureMaps, dict[str, Any]]:
        """The frozen teacher on the whole clip (or its key frame repeated: ``static``): its key-frame
        features and decoder outputs."""
        self.teacher.eval()
        clips = batch.images
        if self.cfg.teacher_view == "static":
            clips = static_clips(clips)
        features = self.teacher.extract_features(clips, batch.masks)
        return features, self.teacher.detector.forward_features(features, return_intermediates=True)

    @torch.no_grad()
    def _residual_parts(self, batch: Batch, key: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """The starting student's maps on the student's view and the teacher's on its key frame
        repeated (``T_static``), for TFD's residual target."""
        assert self.start is not None
        which = self.cfg.tfd_features
        start_features = self.start.extract_features(key, batch.masks)
        t_features = self.teacher.extract_features(static_clips(batch.images), batch.masks)
        return (_distilled_maps(start_features, self.start.encode(start_features), which),
                _distilled_maps(t_features, self.teacher.detector.encode(t_features), which))

    def mask_targets(self, batch: Batch, t_outputs: dict[str, Any]) -> list[dict[str, Tensor]]:
        """Where TFD looks, per key frame: its ground-truth boxes, or on an unlabelled frame the
        teacher's detections scoring >= ``distill.pseudo_score`` (normalised cxcywh, as targets)."""
        return [
            t if labelled else {"boxes": self.teacher_detections(t_outputs, i)[0]}
            for i, (t, labelled) in enumerate(zip(batch.targets, labelled_flags(batch), strict=True))
        ]

    def teacher_detections(self, t_outputs: dict[str, Any], i: int) -> tuple[Tensor, Tensor, Tensor]:
        """Boxes (normalised cxcywh), scores and labels of the teacher's queries on image ``i`` of the
        batch that score >= ``distill.pseudo_score``: what it teaches on an unlabelled frame."""
        scores, labels = t_outputs["pred_logits"][i].sigmoid().max(-1)
        keep = scores >= self.cfg.pseudo_score
        return t_outputs["pred_boxes"][i][keep], scores[keep], labels[keep]

    @torch.no_grad()
    def _teacher_on_student(self, t_outputs: dict[str, Any], s_outputs: dict[str, Any]) -> dict[str, Any]:
        """The frozen teacher's predictions for the student's own queries (its contents, the student's
        reference boxes), decoded on the teacher's memory: its verdict on where the student looks."""
        ref_boxes = s_outputs["query_ref_boxes"].detach()
        content = t_outputs["query_content"][:, : ref_boxes.shape[1]]
        return self.teacher.detector.decode(t_outputs["memory"], content, ref_boxes)

    def __call__(self, batch: Batch) -> dict[str, Tensor]:
        t_features, t_outputs = self._teacher(batch) if self.uses_teacher else (None, {})
        key = batch.images[:, 0]
        if self.student.training:
            key = degrade_key_frames(key, batch.masks, self.cfg.student_degrade)
        s_features = self.student.extract_features(key, batch.masks)
        s_outputs = self.student.forward_features(s_features, batch.targets, return_intermediates=True)
        s_memory: Memory = s_outputs["memory"]
        losses = self._detection_loss(s_outputs, batch)
        total = losses["loss"]
        if self.tfd is not None:
            residual = self._residual_parts(batch, key) if self.cfg.tfd_target == "residual" else (None, None)
            tfd = self.tfd(
                _distilled_maps(s_features, s_memory, self.cfg.tfd_features),
                _distilled_maps(t_features, t_outputs["memory"], self.cfg.tfd_features),
                self.mask_targets(batch, t_outputs),
                s_memory.valid_ratios,
                *residual,
            )
            losses["loss_tfd"] = tfd
            total = total + self.cfg.tfd * tfd
        if self.cqd is not None:
            cross = self.student.decode(s_memory, t_outputs["query_content"], t_outputs["query_ref_boxes"])
            verdict = self._teacher_on_student(t_outputs, s_outputs) if self.cfg.cqd_student_queries > 0 else None
            cqd = self.cqd(cross, t_outputs, s_outputs.get("enc_outputs"), t_outputs.get("enc_outputs"),
                           student_own=s_outputs, teacher_on_student=verdict)
            losses["loss_cqd"] = cqd
            total = total + self.cfg.cqd * cqd
        if self.cfg.pseudo_boxes > 0:
            unlabelled = [i for i, labelled in enumerate(labelled_flags(batch)) if not labelled]
            if unlabelled:
                pseudo = self.criterion(select_images(s_outputs, unlabelled, denoising=False),
                                        self.pseudo_targets(t_outputs, unlabelled))["loss"]
            else:
                pseudo = total.new_zeros(())
            losses["loss_pseudo"] = pseudo
            total = total + self.cfg.pseudo_boxes * pseudo
        losses["loss_det"] = losses["loss"]
        losses["loss"] = total
        return losses

    def pseudo_targets(self, t_outputs: dict[str, Any], images: list[int]) -> list[dict[str, Tensor]]:
        """The teacher's detections on ``images`` of the batch as soft targets: ``boxes`` (normalised
        cxcywh), ``labels`` and ``scores``, the queries scoring >= ``distill.pseudo_score``, duplicates
        (IoU >= ``PSEUDO_NMS_IOU``, same label) dropped."""
        out = []
        for i in images:
            boxes, scores, labels = self.teacher_detections(t_outputs, i)
            kept = batched_nms(box_convert(boxes, "cxcywh", "xyxy"), scores, labels, PSEUDO_NMS_IOU)
            out.append({"boxes": boxes[kept], "labels": labels[kept], "scores": scores[kept]})
        return out

    def _detection_loss(self, s_outputs: dict[str, Any], batch: Batch) -> dict[str, Tensor]:
        """The criterion on the labelled key frames of the batch (all of them without unlabelled ones)."""
        keep = [i for i, labelled in enumerate(labelled_flags(batch)) if labelled]
        if len(keep) == len(batch):
            return self.criterion(s_outputs, batch.targets)
        if not keep:
            raise ValueError("a distillation batch without any labelled key frame: nothing for the detection loss")
        return self.criterion(select_images(s_outputs, keep), [batch.targets[i] for i in keep])


def labelled_flags(batch: Batch) -> list[bool]:
    """Per key frame of the batch: labelled (ground truth known) or not."""
    return [bool(t.get("labelled", True)) for t in batch.targets]
