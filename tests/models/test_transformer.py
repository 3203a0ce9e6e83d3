"""Level layout, encoder reference points, decoder box refinement."""

from __future__ import annotations

import torch

from v2idetr.models.transformer import (
    DeformableDecoder,
    DeformableEncoder,
    flatten_levels,
    inverse_sigmoid,
    spatial_layout,
    valid_ratios,
)


def test_layout_and_valid_ratios(masks):
    shapes, starts = spatial_layout(masks)
    assert shapes == ((4, 6), (2, 3)) and starts == (0, 24)  # Python ints: no host sync in forward
    ratios = valid_ratios(masks)
    torch.testing.assert_close(ratios[0], torch.ones(2, 2))
    torch.testing.assert_close(ratios[1], torch.tensor([[0.5, 0.5], [2 / 3, 0.5]]))
    assert flatten_levels(masks).shape == (2, 30)


def test_encoder_reference_points_are_pixel_centres_of_the_valid_image(masks):
    shapes, _ = spatial_layout(masks)
    ref = DeformableEncoder.reference_points(shapes, valid_ratios(masks))  # [B, S, L, 2]
    assert ref.shape == (2, 30, 2, 2)
    # Unpadded image, level 0, token (row 1, col 4): centre ((4.5) / 6, (1.5) / 4) on every level.
    torch.testing.assert_close(ref[0, 1 * 6 + 4], torch.tensor([[4.5 / 6, 1.5 / 4]] * 2))
    # Padded image: the same token of a 3 x 2 valid region, mapped onto each level's padded map.
    r = valid_ratios(masks)[1]
    expected = torch.tensor([4.5 / 3, 1.5 / 2])[None] * r  # normalised on the valid part, then scaled
    torch.testing.assert_close(ref[1, 1 * 6 + 4], expected)


def _decoder_inputs(masks: list[torch.Tensor]) -> dict:
    shapes, starts = spatial_layout(masks)
    return dict(
        memory=torch.randn(2, 30, 16),
        spatial_shapes=shapes,
        level_start_index=starts,
        valid_ratios=valid_ratios(masks),
        memory_mask=flatten_levels(masks),
    )


def test_decoder_box_refinement_chains_detached_references(masks):
    torch.manual_seed(0)
    dec = DeformableDecoder(3, 16, 32, 0.0, 2, 4, 2, num_classes=2, box_refine=True)
    with torch.no_grad():  # leave the zero init so the refinement actually moves the boxes
        for head in dec.bbox_embed:
            head.layers[-1].weight.normal_(std=0.1)
    ref0 = torch.rand(2, 5, 4) * 0.5 + 0.25
    out = dec(torch.randn(2, 5, 16), ref0, **_decoder_inputs(masks))
    assert len(out.hidden) == len(out.boxes) == len(out.logits) == 3
    torch.testing.assert_close(out.references[0], ref0)
    for lid in range(1, 3):
        assert not out.references[lid].requires_grad
        torch.testing.assert_close(out.references[lid], out.boxes[lid - 1].detach())
        delta = dec.bbox_embed[lid](out.hidden[lid])
        torch.testing.assert_close(out.boxes[lid], (delta + inverse_sigmoid(out.references[lid])).sigmoid())
    assert not torch.allclose(out.boxes[2], ref0, atol=1e-3)


def test_decoder_without_refinement_predicts_from_initial_references(masks):
    dec = DeformableDecoder(2, 16, 32, 0.0, 2, 4, 2, num_classes=2, box_refine=False)
    assert len(dec.bbox_embed) == 1
    ref0 = torch.rand(2, 5, 4) * 0.5 + 0.25
    out = dec(torch.randn(2, 5, 16), ref0, **_decoder_inputs(masks))
    for lid in range(2):
        torch.testing.assert_close(out.references[lid], ref0)
        # Zero-initialised last layer: predictions start at the references.
        torch.testing.assert_close(out.boxes[lid], ref0, atol=1e-5, rtol=1e-5)
    # Classification heads start at the 0.01 prior.
    torch.testing.assert_close(out.logits[0].sigmoid().mean(), torch.tensor(0.01), atol=5e-3, rtol=0)


def test_inverse_sigmoid_roundtrip_and_finite_at_edges():
    x = torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0])
    y = inverse_sigmoid(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[1:4].sigmoid(), x[1:4])
