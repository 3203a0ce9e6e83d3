"""Encoder reference points, two-stage proposals and query selection, decoder box refinement."""

from __future__ import annotations

import torch

from v2idetr.models.transformer import (
    DeformableDecoder,
    DeformableEncoder,
    QuerySelector,
    encoder_proposals,
    flatten_levels,
    inverse_sigmoid,
    spatial_layout,
    valid_ratios,
)


def _masks(b: int = 2) -> list[torch.Tensor]:
    """Two levels (4 x 6, 2 x 3); image 1 valid on the left half and top half."""
    masks = [torch.zeros(b, 4, 6, dtype=torch.bool), torch.zeros(b, 2, 3, dtype=torch.bool)]
    masks[0][1, 2:] = True
    masks[0][1, :, 3:] = True
    masks[1][1, 1:] = True
    masks[1][1, :, 2:] = True  # ceil(1.5) columns stay valid at the coarse level
    return masks


def test_layout_and_valid_ratios():
    masks = _masks()
    shapes, starts = spatial_layout(masks)
    assert shapes == ((4, 6), (2, 3)) and starts == (0, 24)  # Python ints: no host sync in forward
    ratios = valid_ratios(masks)
    torch.testing.assert_close(ratios[0], torch.ones(2, 2))
    torch.testing.assert_close(ratios[1], torch.tensor([[0.5, 0.5], [2 / 3, 0.5]]))
    assert flatten_levels(masks).shape == (2, 30)


def test_encoder_reference_points_are_pixel_centres_of_the_valid_image():
    masks = _masks()
    shapes, _ = spatial_layout(masks)
    ref = DeformableEncoder.reference_points(shapes, valid_ratios(masks))  # [B, S, L, 2]
    assert ref.shape == (2, 30, 2, 2)
    # Unpadded image, level 0, token (row 1, col 4): centre ((4.5) / 6, (1.5) / 4) on every level.
    torch.testing.assert_close(ref[0, 1 * 6 + 4], torch.tensor([[4.5 / 6, 1.5 / 4]] * 2))
    # Padded image: the same token of a 3 x 2 valid region, mapped onto each level's padded map.
    r = valid_ratios(masks)[1]
    expected = torch.tensor([4.5 / 3, 1.5 / 2])[None] * r  # normalised on the valid part, then scaled
    torch.testing.assert_close(ref[1, 1 * 6 + 4], expected)


def test_encoder_proposals_mark_padding_invalid_and_size_by_level():
    masks = _masks()
    shapes, _ = spatial_layout(masks)
    mask = flatten_levels(masks)
    memory = torch.randn(2, 30, 8)
    out_memory, anchors, valid = encoder_proposals(memory, mask, shapes)
    assert not valid[mask].any()
    assert (out_memory[~valid] == 0).all() and torch.equal(out_memory[valid], memory[valid])
    boxes = anchors.sigmoid()
    torch.testing.assert_close(boxes[0, :24, 2:], torch.full((24, 2), 0.05))
    torch.testing.assert_close(boxes[0, 24:, 2:], torch.full((6, 2), 0.10))
    # Image 1, level 0 is valid on 3 x 2 pixels: token (row 1, col 2) is centred at (2.5/3, 1.5/2).
    torch.testing.assert_close(boxes[1, 1 * 6 + 2, :2], torch.tensor([2.5 / 3, 1.5 / 2]))
    assert torch.isfinite(anchors).all()


def test_two_stage_selection_takes_top_scoring_valid_tokens():
    torch.manual_seed(0)
    masks = _masks()
    shapes, _ = spatial_layout(masks)
    mask = flatten_levels(masks)
    selector = QuerySelector(8, num_queries=5, num_classes=3, two_stage=True)
    memory = torch.randn(2, 30, 8, requires_grad=True)
    content, ref, enc = selector(memory, mask, shapes)
    assert content.shape == (2, 5, 8) and ref.shape == (2, 5, 4)
    assert not ref.requires_grad and enc["pred_boxes"].requires_grad
    torch.testing.assert_close(ref, enc["pred_boxes"].detach())
    # The selected logits are the 5 highest among valid tokens.
    with torch.no_grad():
        out_memory, _, valid = encoder_proposals(memory, mask, shapes)
        scores = (
            selector.enc_class_embed(selector.enc_output_norm(selector.enc_output(out_memory))).max(-1).values
        )
        for i in range(2):
            best = scores[i][valid[i]].topk(5).values
            torch.testing.assert_close(enc["pred_logits"][i].max(-1).values, best)
    assert enc["pred_logits"].shape == (2, 5, 3)


def test_learned_queries_without_two_stage():
    selector = QuerySelector(8, num_queries=4, num_classes=2, two_stage=False)
    content, ref, enc = selector(
        torch.randn(3, 30, 8), torch.zeros(3, 30, dtype=torch.bool), ((5, 6),)
    )
    assert enc is None and content.shape == (3, 4, 8) and ref.shape == (3, 4, 4)
    assert ref.requires_grad and ((ref > 0) & (ref < 1)).all()


def _decoder_inputs():
    masks = _masks()
    shapes, starts = spatial_layout(masks)
    return dict(
        memory=torch.randn(2, 30, 16),
        spatial_shapes=shapes,
        level_start_index=starts,
        valid_ratios=valid_ratios(masks),
        memory_mask=flatten_levels(masks),
    )


def test_decoder_box_refinement_chains_detached_references():
    torch.manual_seed(0)
    dec = DeformableDecoder(3, 16, 32, 0.0, 2, 4, 2, num_classes=2, box_refine=True)
    with torch.no_grad():  # leave the zero init so the refinement actually moves the boxes
        for head in dec.bbox_embed:
            head.layers[-1].weight.normal_(std=0.1)
    ref0 = torch.rand(2, 5, 4) * 0.5 + 0.25
    out = dec(torch.randn(2, 5, 16), ref0, **_decoder_inputs())
    assert len(out.hidden) == len(out.boxes) == len(out.logits) == 3
    torch.testing.assert_close(out.references[0], ref0)
    for lid in range(1, 3):
        assert not out.references[lid].requires_grad
        torch.testing.assert_close(out.references[lid], out.boxes[lid - 1].detach())
        delta = dec.bbox_embed[lid](out.hidden[lid])
        torch.testing.assert_close(out.boxes[lid], (delta + inverse_sigmoid(out.references[lid])).sigmoid())
    assert not torch.allclose(out.boxes[2], ref0, atol=1e-3)


def test_decoder_without_refinement_predicts_from_initial_references():
    dec = DeformableDecoder(2, 16, 32, 0.0, 2, 4, 2, num_classes=2, box_refine=False)
    assert len(dec.bbox_embed) == 1
    ref0 = torch.rand(2, 5, 4) * 0.5 + 0.25
    out = dec(torch.randn(2, 5, 16), ref0, **_decoder_inputs())
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
