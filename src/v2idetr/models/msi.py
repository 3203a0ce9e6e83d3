"""Temporal modules of the video teacher: Multi-scale Spatiotemporal Interaction (MSI) and mean.

Both take the multi-scale features of the T frames of a clip (key frame first) and return the key
frame's features enriched with the support frames', in the same ``FeatureMaps`` layout the image
detector's encoder consumes, so the teacher is the student's network with this module inserted.

MSI (DESIGN 2.1; the paper's internals are not public, these are our choices, all config):
every key-frame token of every level is the query of a multi-scale, multi-frame deformable
attention whose "levels" are the T x L (frame, level) maps. It samples ``msi_points`` points per
(frame, level) around the token's own position, with offsets and weights predicted from the query
(key feature + position + frame embedding), then residual + LayerNorm + FFN. Support frames are
told apart by a learned embedding of their position in the clip (0 = key frame) added to their
values. The key frame's values are refreshed after each layer; support values stay the
backbone's. With ``gate`` (``model.msi_gate``) each layer's change to the key frame's features
passes a learned projection that starts at zero, so a teacher whose detector starts from an image
checkpoint starts as that detector and learns how much temporal context to mix in.

Identity-like case (tested): with T = 1, L = 1 and zero sampling offsets every token samples
exactly its own pixel centre, so the attention degenerates to a per-token linear map
``output_proj(value_proj(x))`` and an MSI layer is a residual point-wise MLP with no spatial or
temporal mixing.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from v2idetr.models.backbone import FeatureMaps
from v2idetr.models.deformable_attention import LevelSizes, MSDeformAttn
from v2idetr.models.transformer import (
    FFN,
    DeformableEncoder,
    LayerStack,
    flatten_levels,
    level_layout,
    spatial_layout,
    valid_ratios,
)


def split_frames(features: FeatureMaps, num_frames: int) -> list[FeatureMaps]:
    """Features of ``B*T`` images (clip-major: b0f0, b0f1, ...) -> T FeatureMaps of ``B`` images."""

    def pick(maps: list[Tensor], t: int) -> list[Tensor]:
        return [m.unflatten(0, (-1, num_frames))[:, t] for m in maps]

    return [
        FeatureMaps(srcs=pick(features.srcs, t), masks=pick(features.masks, t), pos=pick(features.pos, t))
        for t in range(num_frames)
    ]


def _unflatten_levels(flat: Tensor, like: list[Tensor]) -> list[Tensor]:
    """``[B, S, D]`` -> L x ``[B, D, h_l, w_l]`` with the shapes of ``like``."""
    sizes = [m.shape[-2] * m.shape[-1] for m in like]
    return [
        chunk.transpose(1, 2).reshape(m.shape) for chunk, m in zip(flat.split(sizes, 1), like, strict=True)
    ]


class MeanTemporal(nn.Module):
    """Ablation teacher: the key frame's features are the plain average of the aligned frames'."""

    def forward(self, frames: list[FeatureMaps]) -> FeatureMaps:
        key = frames[0]
        srcs = [torch.stack([f.srcs[lvl] for f in frames]).mean(0) for lvl in range(len(key.srcs))]
        return FeatureMaps(srcs=srcs, masks=key.masks, pos=key.pos)


class MSILayer(nn.Module):
    """Key-frame tokens attend (deformably) into every level of every frame; residual + norm + FFN."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float, n_maps: int, n_heads: int, n_points: int):
        super().__init__()
        self.attn = MSDeformAttn(d_model, n_maps, n_heads, n_points)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.ffn = FFN(d_model, ffn_dim, dropout)

    def forward(
        self,
        query: Tensor,
        query_pos: Tensor,
        reference_points: Tensor,
        values: Tensor,
        spatial_shapes: LevelSizes,
        level_start_index: tuple[int, ...],
        padding_mask: Tensor,
    ) -> Tensor:
        """``query [B, S, D]`` key-frame tokens, ``values [B, T*S, D]``, ``reference_points
        [B, S, T*L, 2]`` -> ``[B, S, D]``."""
        attn = self.attn(
            query + query_pos, reference_points, values, spatial_shapes, level_start_index, padding_mask
        )
        return self.ffn(self.norm(query + self.dropout(attn)))


class MSITemporal(LayerStack):
    """Stack of ``MSILayer`` over a clip of ``num_frames`` frames with ``n_levels`` levels each."""

    def __init__(
        self,
        d_model: int,
        n_levels: int,
        num_frames: int,
        num_layers: int,
        n_heads: int,
        n_points: int,
        ffn_dim: int,
        dropout: float,
        gate: bool = False,
    ):
        super().__init__()
        self.num_frames = num_frames
        # x + W (layer(x) - x) with W = 0 at first: the module starts as the identity. A zero-initialised
        # D x D projection rather than a scalar gate: Adam moves each weight by about the LR per step,
        # so a scalar would open far too slowly in a short fine-tuning
        self.gates = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(num_layers)) if gate else None
        for proj in self.gates or []:
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)
        self.frame_embed = nn.Embedding(num_frames, d_model)
        nn.init.normal_(self.frame_embed.weight, std=0.02)
        self.layers = nn.ModuleList(
            MSILayer(d_model, ffn_dim, dropout, num_frames * n_levels, n_heads, n_points)
            for _ in range(num_layers)
        )

    def forward(self, frames: list[FeatureMaps]) -> FeatureMaps:
        if len(frames) != self.num_frames:
            raise ValueError(f"MSI was built for {self.num_frames} frames per clip, got {len(frames)}")
        key = frames[0]
        shapes, _ = spatial_layout(key.srcs)
        ratios = valid_ratios(key.masks)  # the same padding for every frame of a clip
        ref = DeformableEncoder.reference_points(shapes, ratios)  # [B, S, L, 2]
        ref = ref.repeat(1, 1, self.num_frames, 1)  # [B, S, T*L, 2] (frame-major)
        all_shapes, all_starts = level_layout(shapes * self.num_frames)  # frame-major
        mask = flatten_levels(key.masks)
        all_mask = mask.repeat(1, self.num_frames)
        pos = flatten_levels(key.pos)
        embed = self.frame_embed.weight
        support = [flatten_levels(f.srcs) + embed[t] for t, f in enumerate(frames) if t > 0]
        x = flatten_levels(key.srcs)
        for i, layer in enumerate(self.layers):
            values = torch.cat([x + embed[0], *support], 1)
            update = self.run_layer(layer, x, pos + embed[0], ref, values, all_shapes, all_starts, all_mask)
            x = update if self.gates is None else x + self.gates[i](update - x)
        return FeatureMaps(srcs=_unflatten_levels(x, key.srcs), masks=key.masks, pos=key.pos)
