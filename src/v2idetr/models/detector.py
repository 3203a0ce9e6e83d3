"""The single-frame deformable DETR: image baseline and V2I-DETR student.

The forward pass is cut into stages so the video teacher and the distillation losses can step in
between them:

    extract_features(images, masks) -> FeatureMaps       backbone + projections (+ sine pos)
    [teacher: temporal module (MSI) on FeatureMaps of T frames]
    encode(features) -> Memory                            deformable encoder
    select_queries(memory) -> content, ref_boxes, enc     two-stage / learned queries
    [CQD: the teacher's (content, ref_boxes) fed to the student's decode]
    decode(memory, content, ref_boxes, attn_mask) -> outputs

``forward(images, masks, targets)`` = ``forward_features(extract_features(images, masks), targets)``;
the teacher calls ``forward_features`` on its temporally enriched key-frame features.

Outputs follow docs/ARCHITECTURE.md: ``pred_logits [B, Q, C]`` (sigmoid logits, no background
class), ``pred_boxes [B, Q, 4]`` normalised cxcywh of the unpadded image, ``aux_outputs``,
``enc_outputs`` (two-stage), and in training with targets ``dn_outputs`` + ``dn_meta``.

ONNX: the eval forward has no data-dependent control flow (denoising is training only; top-k has
a fixed k). Feature-map sizes become constants when traced, so export at a fixed input size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from v2idetr.config import ModelConfig
from v2idetr.errors import ConfigError
from v2idetr.models.backbone import Backbone, FeatureMaps
from v2idetr.models.deformable_attention import LevelSizes
from v2idetr.models.denoising import DenoisingGenerator
from v2idetr.models.query_selection import QuerySelector
from v2idetr.models.transformer import (
    DeformableDecoder,
    DeformableEncoder,
    flatten_levels,
    spatial_layout,
    valid_ratios,
)

__all__ = ["Detector", "FeatureMaps", "Memory", "build_detector"]


@dataclass
class Memory:
    """Encoder output over all levels, flattened (levels finest first, row-major).

    memory             [B, S, D]
    mask               [B, S] bool, True on padding
    spatial_shapes     L x (h_l, w_l) Python ints
    level_start_index  L Python ints
    valid_ratios       [B, L, 2] (w, h) unpadded fraction of each level
    pos                [B, S, D] sine position + level embedding the encoder used
    """

    memory: Tensor
    mask: Tensor
    spatial_shapes: LevelSizes
    level_start_index: tuple[int, ...]
    valid_ratios: Tensor
    pos: Tensor

    def levels(self) -> list[Tensor]:
        """The memory back as L maps ``[B, D, h_l, w_l]`` (for feature distillation)."""
        b, _, d = self.memory.shape
        sizes = self.spatial_shapes
        chunks = self.memory.split([h * w for h, w in sizes], dim=1)
        return [c.transpose(1, 2).reshape(b, d, h, w) for c, (h, w) in zip(chunks, sizes, strict=True)]


class Detector(nn.Module):
    """Deformable DETR with two-stage query selection, box refinement and denoising training."""

    def __init__(self, cfg: ModelConfig, num_classes: int):
        super().__init__()
        _check(cfg, num_classes)
        d = cfg.hidden_dim
        self.num_classes = num_classes
        self.num_queries = cfg.num_queries
        self.backbone = Backbone(cfg)
        self.level_embed = nn.Parameter(torch.empty(cfg.num_feature_levels, d))
        nn.init.normal_(self.level_embed)
        common = {
            "d_model": d,
            "ffn_dim": cfg.ffn_dim,
            "dropout": cfg.dropout,
            "n_levels": cfg.num_feature_levels,
            "n_heads": cfg.nheads,
        }
        self.encoder = DeformableEncoder(cfg.enc_layers, n_points=cfg.enc_points, **common)
        self.decoder = DeformableDecoder(
            cfg.dec_layers,
            n_points=cfg.dec_points,
            num_classes=num_classes,
            box_refine=cfg.box_refine,
            **common,
        )
        self.query_selector = QuerySelector(d, cfg.num_queries, num_classes, cfg.two_stage)
        self.denoising = (
            DenoisingGenerator(num_classes, d, cfg.dn_number, cfg.dn_label_noise, cfg.dn_box_noise)
            if cfg.dn_number > 0
            else None
        )

    def extract_features(self, images: Tensor, masks: Tensor) -> FeatureMaps:
        """``images [B, 3, H, W]`` RGB in [0, 1] (the backbone normalises), ``masks [B, H, W]`` True on padding."""
        return self.backbone(images, masks)

    def encode(self, features: FeatureMaps) -> Memory:
        """Flatten the levels, add the level embedding to the position encoding, run the encoder."""
        src = flatten_levels(features.srcs)
        mask = flatten_levels(features.masks)
        pos = torch.cat(
            [p.flatten(2).transpose(1, 2) + self.level_embed[lvl] for lvl, p in enumerate(features.pos)], 1
        )
        shapes, starts = spatial_layout(features.srcs)
        ratios = valid_ratios(features.masks)
        memory = self.encoder(src, pos, shapes, starts, ratios, mask)
        return Memory(
            memory=memory,
            mask=mask,
            spatial_shapes=shapes,
            level_start_index=starts,
            valid_ratios=ratios,
            pos=pos,
        )

    def select_queries(self, memory: Memory) -> tuple[Tensor, Tensor, dict[str, Tensor] | None]:
        """Content queries ``[B, Q, D]``, reference boxes ``[B, Q, 4]`` (normalised cxcywh, no
        gradient in two-stage mode) and the two-stage ``enc_outputs`` (``None`` otherwise)."""
        return self.query_selector(memory.memory, memory.mask, memory.spatial_shapes)

    def decode(
        self,
        memory: Memory,
        query_content: Tensor,
        query_ref_boxes: Tensor,
        attn_mask: Tensor | None = None,
        return_hidden: bool = False,
    ) -> dict[str, Any]:
        """Run the decoder on any queries (own, denoising, or a teacher's for CQD).

        ``query_content [B, N, D]``, ``query_ref_boxes [B, N, 4]`` normalised cxcywh,
        ``attn_mask [N, N]`` bool (True = blocked). Returns ``pred_logits [B, N, C]``,
        ``pred_boxes [B, N, 4]`` of the last layer, ``aux_outputs`` for the others and, with
        ``return_hidden``, ``hidden [num_layers, B, N, D]`` and ``references [num_layers, B, N, 4]``
        (the reference boxes each layer started from).
        """
        out = self.decoder(
            query_content,
            query_ref_boxes,
            memory.memory,
            memory.spatial_shapes,
            memory.level_start_index,
            memory.valid_ratios,
            memory.mask,
            attn_mask,
        )
        result: dict[str, Any] = {
            "pred_logits": out.logits[-1],
            "pred_boxes": out.boxes[-1],
            "aux_outputs": [
                {"pred_logits": lg, "pred_boxes": bx}
                for lg, bx in zip(out.logits[:-1], out.boxes[:-1], strict=True)
            ],
        }
        if return_hidden:
            result["hidden"] = torch.stack(out.hidden)
            result["references"] = torch.stack(out.references)
        return result

    def forward(
        self,
        images: Tensor,
        masks: Tensor,
        targets: list[dict[str, Tensor]] | None = None,
        return_intermediates: bool = False,
    ) -> dict[str, Any]:
        """``images [B, 3, H, W]`` or a Batch's ``[B, T, 3, H, W]`` (only the key frame, index 0 of T,
        is used: an image detector sees one frame); ``masks [B, H, W]``; ``targets`` (training only)
        enable denoising queries. See ``forward_features`` for ``return_intermediates``."""
        if images.dim() == 5:
            images = images[:, 0]
        return self.forward_features(self.extract_features(images, masks), targets, return_intermediates)

    def forward_features(
        self,
        features: FeatureMaps,
        targets: list[dict[str, Tensor]] | None = None,
        return_intermediates: bool = False,
    ) -> dict[str, Any]:
        """Everything after feature extraction (the teacher calls this on temporally enriched features).

        With ``return_intermediates`` the outputs also hold ``memory`` (the ``Memory``, for feature
        distillation), ``query_content [B, Q, D]`` and ``query_ref_boxes [B, Q, 4]`` (the matching
        queries the decoder started from, for query distillation) and ``hidden [num_layers, B, Q, D]``.
        """
        memory = self.encode(features)
        content, ref_boxes, enc_outputs = self.select_queries(memory)
        dn = None
        if self.training and targets is not None and self.denoising is not None:
            dn = self.denoising(targets, self.num_queries)
        if dn is None:
            outputs = self.decode(memory, content, ref_boxes, return_hidden=return_intermediates)
        else:
            both = self.decode(
                memory,
                torch.cat([dn.content, content], 1),
                torch.cat([dn.ref_boxes, ref_boxes], 1),
                attn_mask=dn.attn_mask,
                return_hidden=return_intermediates,
            )
            n = dn.meta["num_dn"]
            outputs, dn_outputs = _split(both, n)
            outputs["dn_outputs"] = dn_outputs
            outputs["dn_meta"] = dn.meta
            if return_intermediates:
                outputs["hidden"] = both["hidden"][:, :, n:]
        if enc_outputs is not None:
            outputs["enc_outputs"] = enc_outputs
        if return_intermediates:
            outputs.pop("references", None)
            outputs.update(memory=memory, query_content=content, query_ref_boxes=ref_boxes)
        return outputs


def _split(outputs: dict[str, Any], n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Cut decoder outputs along the query axis: (matching queries ``[n:]``, denoising ``[:n]``)."""

    def cut(d: dict[str, Any], sl: slice) -> dict[str, Any]:
        res = {"pred_logits": d["pred_logits"][:, sl], "pred_boxes": d["pred_boxes"][:, sl]}
        if "aux_outputs" in d:
            res["aux_outputs"] = [cut(a, sl) for a in d["aux_outputs"]]
        return res

    return cut(outputs, slice(n, None)), cut(outputs, slice(None, n))


def _check(cfg: ModelConfig, num_classes: int) -> None:
    """Reject settings the network cannot be built with, naming the config key."""
    positive = (
        "hidden_dim",
        "nheads",
        "enc_layers",
        "dec_layers",
        "ffn_dim",
        "enc_points",
        "dec_points",
        "num_queries",
        "num_feature_levels",
    )
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"config key 'model.{key}' = {getattr(cfg, key)}: expected >= 1")
    if cfg.hidden_dim % cfg.nheads:
        raise ConfigError(
            f"config key 'model.hidden_dim' = {cfg.hidden_dim}: "
            f"expected a multiple of model.nheads = {cfg.nheads}"
        )
    if cfg.hidden_dim % 4:
        raise ConfigError(
            f"config key 'model.hidden_dim' = {cfg.hidden_dim}: expected a multiple of 4 (sine encodings)"
        )
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"config key 'model.dropout' = {cfg.dropout}: expected a value in [0, 1)")
    if cfg.dn_number < 0:
        raise ConfigError(
            f"config key 'model.dn_number' = {cfg.dn_number}: expected >= 0 (0 disables denoising)"
        )
    if num_classes < 1:
        raise ConfigError(f"model.num_classes = {num_classes}: expected >= 1")


def build_detector(cfg: ModelConfig, num_classes: int) -> Detector:
    """The image detector described by ``cfg`` for ``num_classes`` foreground classes."""
    return Detector(cfg, num_classes)
