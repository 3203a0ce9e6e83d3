"""The grid_sample deformable attention against an explicit bilinear reference, and MSDeformAttn."""

from __future__ import annotations

import pytest
import torch

from v2idetr.models.deformable_attention import MSDeformAttn, ms_deform_attn, ms_deform_attn_reference


def _layout(shapes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    spatial = torch.tensor(shapes, dtype=torch.long)
    areas = spatial[:, 0] * spatial[:, 1]
    return spatial, torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])


SHAPES = [(5, 7), (3, 4), (2, 1)]  # non-square, one level a single column


def _random_inputs(dtype: torch.dtype):
    gen = torch.Generator().manual_seed(0)
    spatial, starts = _layout(SHAPES)
    s = int((spatial[:, 0] * spatial[:, 1]).sum())
    b, q, h, dh, n_levels, n_points = 2, 6, 3, 4, len(SHAPES), 5
    value = torch.randn(b, s, h, dh, generator=gen, dtype=dtype)
    # Mostly inside, some within half a pixel of the border, some fully outside the map.
    loc = torch.rand(b, q, h, n_levels, n_points, 2, generator=gen, dtype=dtype) * 1.6 - 0.3
    loc[0, 0, 0, :, 0] = torch.tensor([0.0, 0.0], dtype=dtype)
    loc[0, 0, 0, :, 1] = torch.tensor([1.0, 1.0], dtype=dtype)
    loc[0, 0, 0, :, 2] = torch.tensor([-0.01, 0.5], dtype=dtype)
    weights = torch.rand(b, q, h, n_levels, n_points, generator=gen, dtype=dtype)
    weights = weights / weights.flatten(-2).sum(-1)[..., None, None]
    return spatial, starts, value, loc, weights


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_path_matches_explicit_bilinear_reference(dtype):
    spatial, starts, value, loc, weights = _random_inputs(dtype)
    fast = ms_deform_attn(value, spatial, starts, loc, weights)
    ref = ms_deform_attn_reference(value, spatial, starts, loc, weights)
    assert fast.shape == (2, 6, 3 * 4)
    assert ref.abs().max() > 0.1  # the comparison is not between two zero tensors
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


def test_fast_path_gradients_match_reference():
    spatial, starts, *inputs = _random_inputs(torch.float64)
    # Bilinear interpolation has kinks at whole pixels (the border points sit on them): move off them.
    inputs[1] = inputs[1] + 1.3e-3
    inputs = [t.requires_grad_() for t in inputs]
    grads = []
    for fn in (ms_deform_attn, ms_deform_attn_reference):
        out = fn(inputs[0], spatial, starts, inputs[1], inputs[2])
        grads.append(
            torch.autograd.grad((out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum(), inputs)
        )
    for fast, ref in zip(*grads, strict=True):
        torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


def _identity_module(d: int, n_levels: int, n_heads: int, n_points: int) -> MSDeformAttn:
    attn = MSDeformAttn(d, n_levels, n_heads, n_points)
    with torch.no_grad():
        for lin in (attn.value_proj, attn.output_proj):
            lin.weight.copy_(torch.eye(d))
            lin.bias.zero_()
    return attn


def test_zero_offsets_with_point_references_sample_the_reference_pixel():
    d, n_heads, n_points = 8, 2, 3
    spatial, starts = _layout([(4, 6), (2, 3)])
    attn = _identity_module(d, 2, n_heads, n_points)
    with torch.no_grad():
        attn.sampling_offsets.bias.zero_()  # weights are zero-initialised: every offset is 0
    value = torch.randn(1, 24 + 6, d)
    query = torch.randn(1, 2, d)
    # Query 0 looks at pixel (row 1, col 4) of level 0 and (row 0, col 2) of level 1; query 1 elsewhere.
    pix = [[(1, 4), (0, 2)], [(3, 0), (1, 1)]]
    ref = torch.zeros(1, 2, 2, 2)
    for qi, per_level in enumerate(pix):
        for lvl, (r, c) in enumerate(per_level):
            h, w = spatial[lvl].tolist()
            ref[0, qi, lvl] = torch.tensor([(c + 0.5) / w, (r + 0.5) / h])
    out = attn(query, ref, value, spatial, starts)
    for qi, per_level in enumerate(pix):
        picked = [
            value[0, int(starts[lvl]) + r * int(spatial[lvl, 1]) + c] for lvl, (r, c) in enumerate(per_level)
        ]
        # Zero attention logits -> uniform weights over levels x points; all points coincide.
        torch.testing.assert_close(out[0, qi], torch.stack(picked).mean(0), atol=1e-5, rtol=1e-5)


def test_padding_mask_hides_padded_values():
    spatial, starts = _layout([(3, 4)])
    attn = MSDeformAttn(8, 1, 2, 4)
    value = torch.randn(1, 12, 8)
    mask = torch.zeros(1, 12, dtype=torch.bool)
    mask[0, 3::4] = True  # the last column is padding
    query = torch.randn(1, 5, 8)
    ref = torch.rand(1, 5, 1, 2)
    base = attn(query, ref, value, spatial, starts, mask)
    changed = value.clone()
    changed[0, 3::4] += 100.0
    torch.testing.assert_close(attn(query, ref, changed, spatial, starts, mask), base)
    assert not torch.allclose(
        attn(query, ref, changed, spatial, starts), attn(query, ref, value, spatial, starts)
    )


def test_box_references_scale_offsets_with_box_size():
    attn = MSDeformAttn(8, 2, 2, 4)
    spatial, _ = _layout([(4, 4), (2, 2)])
    query = torch.randn(1, 3, 8)
    centre = torch.tensor([0.4, 0.6])
    small = torch.cat([centre, torch.tensor([0.1, 0.2])]).expand(1, 3, 2, 4)
    large = torch.cat([centre, torch.tensor([0.2, 0.4])]).expand(1, 3, 2, 4)
    d_small = attn.sampling_locations(query, small, spatial) - centre
    d_large = attn.sampling_locations(query, large, spatial) - centre
    torch.testing.assert_close(d_large, 2 * d_small)
    # Initial offsets of point p (0-based) are (p + 1) * direction: the last point reaches half the box.
    with torch.no_grad():
        attn.sampling_offsets.weight.zero_()
    d = attn.sampling_locations(query, small, spatial) - centre  # [B, Q, H, L, P, 2]
    assert torch.allclose(d[0, 0, 0, 0, -1], torch.tensor([0.05, 0.0]))  # head 0 looks along +x
    assert torch.allclose(d[0, 0, 1, 0, -1], torch.tensor([-0.05, 0.0]), atol=1e-6)  # head 1 along -x


def test_frames_times_levels_are_just_more_levels():
    """A multi-frame caller stacks T frames x L levels; frame 2 must be read from its own values."""
    d, shapes = 8, [(3, 4), (2, 2)]
    spatial2, starts2 = _layout(shapes * 2)
    attn = _identity_module(d, 4, 2, 1)
    with torch.no_grad():
        attn.sampling_offsets.bias.zero_()
        attn.attention_weights.bias.copy_(
            torch.tensor([-50.0, -50.0, -50.0, 50.0] * 2)
        )  # only frame 2, level 2
    frame1, frame2 = torch.randn(1, 16, d), torch.randn(1, 16, d)
    ref = torch.full((1, 1, 4, 2), 0.75)  # pixel (1, 1) of every 2x2 level
    out = attn(torch.zeros(1, 1, d), ref, torch.cat([frame1, frame2], 1), spatial2, starts2)
    torch.testing.assert_close(out[0, 0], frame2[0, 12 + 3], atol=1e-4, rtol=1e-4)
