"""Deformable transformer: the encoder, and the decoder with iterative box refinement.

Conventions
- Flattened multi-level tokens: ``[B, S, D]`` with ``S = sum_l h_l * w_l``, levels finest first,
  each level row-major; ``spatial_shapes`` = L x (h_l, w_l) and ``level_start_index`` = L offsets,
  both Python ints known from the input size: no host sync in ``forward``, so ``torch.compile``
  keeps one graph and a CUDA graph can replay it.
- ``valid_ratios [B, L, 2]`` = (w, h) fraction of each level that is not padding.
- Boxes are normalised ``cx, cy, w, h`` relative to the *unpadded* image ("sigmoid space");
  the box heads predict deltas in inverse-sigmoid space. Before sampling, a box is multiplied
  by the valid ratios to get coordinates of the padded feature map that deformable attention uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from v2idetr.models.deformable_attention import LevelSizes, MSDeformAttn
from v2idetr.models.position_encoding import box_sine_embedding


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """``log(x / (1 - x))`` with ``x`` clamped into ``[eps, 1 - eps]`` so it stays finite."""
    x = x.clamp(min=0.0, max=1.0)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = x.relu()
        return x


def class_head(dim: int, num_classes: int) -> nn.Linear:
    """Linear classifier whose initial sigmoid scores are 0.01 (focal-loss prior, RetinaNet)."""
    head = nn.Linear(dim, num_classes)
    nn.init.constant_(head.bias, -math.log((1 - 0.01) / 0.01))
    return head


def box_head(dim: int) -> MLP:
    """3-layer MLP predicting a box delta; the last layer starts at zero (boxes = references)."""
    head = MLP(dim, dim, 4, 3)
    nn.init.zeros_(head.layers[-1].weight)
    nn.init.zeros_(head.layers[-1].bias)
    return head


class FFN(nn.Module):
    """Post-norm feed-forward block: ``norm(x + W2 relu(W1 x))``."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.dropout(self.linear2(self.dropout(self.linear1(x).relu()))))


def flatten_levels(maps: list[Tensor]) -> Tensor:
    """L x ``[B, C, h, w]`` (or ``[B, h, w]``) -> ``[B, S, C]`` (or ``[B, S]``)."""
    if maps[0].dim() == 3:
        return torch.cat([m.flatten(1) for m in maps], 1)
    return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)


class LayerStack(nn.Module):
    """Base of the layer stacks (encoder, decoder, MSI) that can recompute activations.

    With ``activation_checkpointing`` on, each layer keeps only its inputs during a training
    forward pass and recomputes the rest in backward (PyTorch's non-reentrant checkpoint, which
    replays dropout's random numbers): the same gradients for less memory.
    """

    activation_checkpointing: bool = False

    def run_layer(self, layer: nn.Module, *args: Any) -> Any:
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)


def set_activation_checkpointing(model: nn.Module, enabled: bool) -> None:
    """Turn activation checkpointing on or off in every layer stack of ``model``."""
    for module in model.modules():
        if isinstance(module, LayerStack):
            module.activation_checkpointing = enabled


def spatial_layout(maps: list[Tensor]) -> tuple[LevelSizes, tuple[int, ...]]:
    """``spatial_shapes`` L x (h, w) and ``level_start_index`` (L offsets) of ``[..., h, w]`` maps,
    as Python ints read from the shapes (never from tensor values)."""
    return level_layout(tuple((int(m.shape[-2]), int(m.shape[-1])) for m in maps))


def level_layout(sizes: LevelSizes) -> tuple[LevelSizes, tuple[int, ...]]:
    """``(sizes, starts)``: each level's offset in the flattened tokens."""
    starts = [0]
    for h, w in sizes[:-1]:
        starts.append(starts[-1] + h * w)
    return sizes, tuple(starts)


def valid_ratios(masks: list[Tensor]) -> Tensor:
    """L x ``[B, h, w]`` padding masks -> ``[B, L, 2]`` (w, h) valid fractions (padding bottom/right)."""
    ratios = []
    for m in masks:
        h, w = m.shape[-2:]
        valid_h = (~m[:, :, 0]).sum(1).to(torch.float32) / h
        valid_w = (~m[:, 0, :]).sum(1).to(torch.float32) / w
        ratios.append(torch.stack([valid_w, valid_h], -1))
    return torch.stack(ratios, 1)


def level_grids(spatial_shapes: LevelSizes, device: torch.device) -> list[Tensor]:
    """Pixel-centre coordinates of every level: L x ``[h_l * w_l, 2]`` (x, y) in pixels."""
    grids = []
    for h, w in spatial_shapes:
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float32, device=device) + 0.5,
            torch.arange(w, dtype=torch.float32, device=device) + 0.5,
            indexing="ij",
        )
        grids.append(torch.stack([xs.flatten(), ys.flatten()], -1))
    return grids


class EncoderLayer(nn.Module):
    """Deformable self-attention over all levels + FFN, post-norm."""

    def __init__(
        self, d_model: int, ffn_dim: int, dropout: float, n_levels: int, n_heads: int, n_points: int
    ):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.ffn = FFN(d_model, ffn_dim, dropout)

    def forward(
        self,
        src: Tensor,
        pos: Tensor,
        reference_points: Tensor,
        spatial_shapes: LevelSizes,
        level_start_index: tuple[int, ...],
        padding_mask: Tensor | None,
    ) -> Tensor:
        attn = self.self_attn(
            src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask
        )
        return self.ffn(self.norm(src + self.dropout(attn)))


class DeformableEncoder(LayerStack):
    """Stack of ``EncoderLayer``; ``forward(src [B,S,D], pos [B,S,D], ...) -> memory [B,S,D]``."""

    def __init__(self, num_layers: int, **layer_kwargs: int | float):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(**layer_kwargs) for _ in range(num_layers))  # type: ignore[arg-type]

    @staticmethod
    def reference_points(spatial_shapes: LevelSizes, valid_ratios: Tensor) -> Tensor:
        """``[B, S, L, 2]``: each token's pixel centre, normalised over the valid region of its own
        level, then mapped onto every level's padded map (so it points at the same image spot)."""
        refs = []
        for lvl, grid in enumerate(level_grids(spatial_shapes, valid_ratios.device)):
            size = grid.new_tensor([spatial_shapes[lvl][1], spatial_shapes[lvl][0]])  # (w, h)
            refs.append(grid[None] / (valid_ratios[:, None, lvl] * size))
        ref = torch.cat(refs, 1)  # [B, S, 2]
        return ref[:, :, None] * valid_ratios[:, None]

    def forward(
        self,
        src: Tensor,
        pos: Tensor,
        spatial_shapes: LevelSizes,
        level_start_index: tuple[int, ...],
        valid_ratios: Tensor,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        ref = self.reference_points(spatial_shapes, valid_ratios)
        out = src
        for layer in self.layers:
            out = self.run_layer(layer, out, pos, ref, spatial_shapes, level_start_index, padding_mask)
        return out


class DecoderLayer(nn.Module):
    """Query self-attention (optionally masked) + deformable cross-attention on the memory + FFN."""

    def __init__(
        self, d_model: int, ffn_dim: int, dropout: float, n_levels: int, n_heads: int, n_points: int
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.ffn = FFN(d_model, ffn_dim, dropout)

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        reference_boxes: Tensor,
        memory: Tensor,
        spatial_shapes: LevelSizes,
        level_start_index: tuple[int, ...],
        memory_mask: Tensor | None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """``tgt, query_pos [B, Q, D]``; ``reference_boxes [B, Q, L, 4]`` (padded-map coordinates);
        ``attn_mask [Q, Q]`` bool, True where a query may *not* attend to another."""
        q = k = tgt + query_pos
        attn = self.self_attn(q, k, tgt, attn_mask=attn_mask, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout(attn))
        attn = self.cross_attn(
            tgt + query_pos, reference_boxes, memory, spatial_shapes, level_start_index, memory_mask
        )
        tgt = self.norm2(tgt + self.dropout(attn))
        return self.ffn(tgt)


@dataclass
class DecoderOutput:
    """Per decoder layer (index 0 = first layer): hidden ``[B,Q,D]``, logits ``[B,Q,C]``,
    boxes ``[B,Q,4]`` (normalised cxcywh) and the reference boxes the layer started from."""

    hidden: list[Tensor]
    logits: list[Tensor]
    boxes: list[Tensor]
    references: list[Tensor]


class DeformableDecoder(LayerStack):
    """Decoder with per-layer class/box heads and (optionally) iterative box refinement.

    With ``box_refine`` every layer has its own box head and predicts a delta on the boxes of the
    previous layer, which become the next layer's reference boxes *detached* (Deformable DETR);
    otherwise one shared box head predicts every layer's boxes relative to the initial references.
    The query position embedding is an MLP of the sine embedding of the current reference box.
    """

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        ffn_dim: int,
        dropout: float,
        n_levels: int,
        n_heads: int,
        n_points: int,
        num_classes: int,
        box_refine: bool,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, ffn_dim, dropout, n_levels, n_heads, n_points) for _ in range(num_layers)
        )
        self.box_refine = box_refine
        self.d_model = d_model
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)
        self.class_embed = nn.ModuleList(class_head(d_model, num_classes) for _ in range(num_layers))
        self.bbox_embed = nn.ModuleList(box_head(d_model) for _ in range(num_layers if box_refine else 1))

    def forward(
        self,
        tgt: Tensor,
        reference_boxes: Tensor,
        memory: Tensor,
        spatial_shapes: LevelSizes,
        level_start_index: tuple[int, ...],
        valid_ratios: Tensor,
        memory_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> DecoderOutput:
        """``tgt [B, Q, D]`` content queries, ``reference_boxes [B, Q, 4]`` normalised cxcywh."""
        scale = torch.cat([valid_ratios, valid_ratios], -1)[:, None]  # [B, 1, L, 4]
        out = DecoderOutput([], [], [], [])
        ref = reference_boxes
        initial_logit = inverse_sigmoid(reference_boxes)
        hidden = tgt
        for lid, layer in enumerate(self.layers):
            ref_input = ref[:, :, None] * scale
            query_pos = self.ref_point_head(box_sine_embedding(ref_input[:, :, 0], self.d_model // 2))
            hidden = self.run_layer(
                layer,
                hidden,
                query_pos,
                ref_input,
                memory,
                spatial_shapes,
                level_start_index,
                memory_mask,
                attn_mask,
            )
            if self.box_refine:
                boxes = (self.bbox_embed[lid](hidden) + inverse_sigmoid(ref)).sigmoid()
            else:
                boxes = (self.bbox_embed[0](hidden) + initial_logit).sigmoid()
            out.hidden.append(hidden)
            out.logits.append(self.class_embed[lid](hidden))
            out.boxes.append(boxes)
            out.references.append(ref)
            if self.box_refine:
                ref = boxes.detach()
        return out
