"""Two-stage proposals from the encoder's tokens and the decoder's initial queries."""

from __future__ import annotations

import pytest
import torch

from v2idetr.models.query_selection import QuerySelector, encoder_proposals
from v2idetr.models.transformer import flatten_levels, spatial_layout


def test_encoder_proposals_mark_padding_invalid_and_size_by_level(masks):
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


def test_two_stage_selection_takes_top_scoring_valid_tokens(masks):
    torch.manual_seed(0)
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


def test_more_queries_than_feature_positions_is_an_error_that_says_what_to_change(masks):
    shapes, _ = spatial_layout(masks)
    selector = QuerySelector(8, num_queries=31, num_classes=2, two_stage=True)
    with pytest.raises(ValueError, match="num_queries = 31 exceeds the 30 feature positions"):
        selector(torch.randn(2, 30, 8), flatten_levels(masks), shapes)
