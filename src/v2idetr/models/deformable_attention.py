"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch, with a slow reference.

Every query attends to ``n_points`` sampled locations per head and per level around its reference
point; the values at those locations are bilinearly interpolated and averaged with softmax weights
predicted from the query. ``ms_deform_attn`` is the fast path (one ``F.grid_sample`` per level,
runs on CPU and GPU and exports to ONNX); ``ms_deform_attn_reference`` computes the same thing with
explicit bilinear interpolation and exists only to check the fast path.

Coordinates: sampling locations are ``(x, y)`` normalised to ``[0, 1]`` over each level's full
(padded) feature map, pixel centres at ``(i + 0.5) / w`` (``align_corners=False``); samples
outside the map read zeros.

"Levels" are just a list of feature maps with their own shapes: a multi-frame module can pass
T frames x L levels as ``T * L`` levels (value concatenated frame by frame, ``spatial_shapes``
repeated, reference points ``[B, Q, T * L, 2|4]``) and reuse ``MSDeformAttn`` unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LevelSizes = tuple[tuple[int, int], ...]


def level_sizes(spatial_shapes: LevelSizes | Tensor) -> LevelSizes:
    """``(h, w)`` of every level as Python ints.

    The model passes them as Python ints known from the input size (``transformer.spatial_layout``):
    no host sync in ``forward``, constants in an ONNX trace and in a ``torch.compile`` graph. A
    ``[L, 2]`` tensor is still accepted (it costs a sync) for callers that have one.
    """
    if isinstance(spatial_shapes, Tensor):
        return tuple((int(h), int(w)) for h, w in spatial_shapes.tolist())
    return tuple((int(h), int(w)) for h, w in spatial_shapes)


def ms_deform_attn(
    value: Tensor,
    spatial_shapes: LevelSizes | Tensor,
    level_start_index: Sequence[int] | Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Deformable attention core.

    value               [B, S, H, Dh]  S = sum_l h_l * w_l, levels flattened row-major, finest first
    spatial_shapes      L x (h_l, w_l) Python ints (or an [L, 2] long tensor)
    level_start_index   [L] long       offset of each level in S (implied by the shapes; kept for
                                       the familiar signature)
    sampling_locations  [B, Q, H, L, P, 2]  (x, y) in [0, 1]
    attention_weights   [B, Q, H, L, P]     (normalised over L * P by the caller)
    returns             [B, Q, H * Dh]
    """
    del level_start_index
    b, _, n_heads, head_dim = value.shape
    _, q, _, n_levels, n_points, _ = sampling_locations.shape
    sizes = level_sizes(spatial_shapes)
    values = value.split([h * w for h, w in sizes], dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample wants [-1, 1]
    sampled = []
    for lvl, (h, w) in enumerate(sizes):
        v = values[lvl].permute(0, 2, 3, 1).reshape(b * n_heads, head_dim, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(b * n_heads, q, n_points, 2)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    stacked = torch.stack(sampled, dim=-2).flatten(-2)  # [B*H, Dh, Q, L*P]
    weights = attention_weights.transpose(1, 2).reshape(b * n_heads, 1, q, n_levels * n_points)
    out = (stacked * weights).sum(-1)  # [B*H, Dh, Q]
    return out.view(b, n_heads * head_dim, q).transpose(1, 2).contiguous()


def ms_deform_attn_reference(
    value: Tensor,
    spatial_shapes: LevelSizes | Tensor,
    level_start_index: Sequence[int] | Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Same contract as ``ms_deform_attn``, by explicit bilinear interpolation (slow; tests only).

    A location ``(x, y)`` in ``[0, 1]`` is pixel ``(x * w - 0.5, y * h - 0.5)``; its value is the
    area-weighted mean of the four surrounding pixels, a pixel outside the map counting as zero.
    """
    b, _, n_heads, head_dim = value.shape
    _, q, _, n_levels, n_points, _ = sampling_locations.shape
    out = value.new_zeros(b, q, n_heads, head_dim)
    for lvl in range(n_levels):
        h, w = level_sizes(spatial_shapes)[lvl]
        start = int(level_start_index[lvl])
        fmap = value[:, start : start + h * w].reshape(b, h, w, n_heads, head_dim)
        for p in range(n_points):
            loc = sampling_locations[:, :, :, lvl, p]  # [B, Q, H, 2]
            px = loc[..., 0] * w - 0.5
            py = loc[..., 1] * h - 0.5
            x0, y0 = px.floor(), py.floor()
            acc = value.new_zeros(b, q, n_heads, head_dim)
            for dx in (0, 1):
                for dy in (0, 1):
                    xi, yi = x0 + dx, y0 + dy
                    corner_w = (1 - (px - xi).abs()) * (1 - (py - yi).abs())  # bilinear weight
                    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
                    xc = xi.clamp(0, w - 1).long()
                    yc = yi.clamp(0, h - 1).long()
                    bi = torch.arange(b)[:, None, None].expand_as(xc)
                    hi = torch.arange(n_heads)[None, None, :].expand_as(xc)
                    picked = fmap[bi, yc, xc, hi]  # [B, Q, H, Dh]
                    acc = acc + picked * (corner_w * inside)[..., None]
            out = out + acc * attention_weights[:, :, :, lvl, p][..., None]
    return out.reshape(b, q, n_heads * head_dim)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module.

    ``forward(query [B, Q, D], reference_points [B, Q, L, 2|4], value_input [B, S, D],
    spatial_shapes L x (h, w), level_start_index L, input_padding_mask [B, S] | None) -> [B, Q, D]``.

    Reference points are normalised ``(x, y)`` (offsets then count in pixels of each level) or
    boxes ``(cx, cy, w, h)`` (offsets count in ``w / n_points / 2``, ``h / n_points / 2`` units,
    so points stay inside the box scale). Padded values (mask True) are zeroed before sampling.
    ``n_levels`` may count frames x levels (see the module docstring).
    """

    def __init__(self, d_model: int, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Offsets start as a star: head ``k`` looks in direction ``2*pi*k/H``, point ``p`` at ``p + 1``."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def sampling_locations(
        self, query: Tensor, reference_points: Tensor, spatial_shapes: LevelSizes | Tensor
    ) -> Tensor:
        """``[B, Q, H, L, P, 2]`` normalised (x, y) sampling locations for each query."""
        b, q, _ = query.shape
        offsets = self.sampling_offsets(query).view(b, q, self.n_heads, self.n_levels, self.n_points, 2)
        if reference_points.shape[-1] == 2:
            normaliser = offsets.new_tensor([(w, h) for h, w in level_sizes(spatial_shapes)])
            return (
                reference_points[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
            )
        if reference_points.shape[-1] == 4:
            centre = reference_points[:, :, None, :, None, :2]
            size = reference_points[:, :, None, :, None, 2:]
            return centre + offsets / self.n_points * size * 0.5
        raise ValueError(
            f"reference_points must end in 2 or 4 coordinates, got {tuple(reference_points.shape)}"
        )

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        value_input: Tensor,
        spatial_shapes: LevelSizes | Tensor,
        level_start_index: Sequence[int] | Tensor,
        input_padding_mask: Tensor | None = None,
    ) -> Tensor:
        b, q, _ = query.shape
        s = value_input.shape[1]
        value = self.value_proj(value_input)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(b, s, self.n_heads, self.d_model // self.n_heads)
        weights = self.attention_weights(query).view(b, q, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(b, q, self.n_heads, self.n_levels, self.n_points)
        locations = self.sampling_locations(query, reference_points, spatial_shapes)
        out = ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)
        return self.output_proj(out)
