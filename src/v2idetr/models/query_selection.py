"""Two-stage query selection: the encoder's tokens propose the decoder's initial reference boxes.

Kept apart from the encoder and decoder because it is the one piece of the transformer that
ranks tokens (a top-k over the memory) and the one whose dense outputs CQD distils.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from v2idetr.models.deformable_attention import LevelSizes
from v2idetr.models.transformer import box_head, class_head, inverse_sigmoid, level_grids


def encoder_proposals(
    memory: Tensor, memory_mask: Tensor, spatial_shapes: LevelSizes
) -> tuple[Tensor, Tensor, Tensor]:
    """One anchor box per memory token (two-stage Deformable DETR).

    Anchor of a token of level ``l``: centred on its pixel (normalised by the valid size), with
    ``w = h = 0.05 * 2**l``. Tokens on padding or whose anchor gets within 0.01 of the image
    border are invalid: their memory is zeroed and their anchor set to logit 0.
    Returns ``memory [B, S, D]`` (invalid zeroed), ``anchors [B, S, 4]`` in inverse-sigmoid space,
    and ``valid [B, S]`` bool.
    """
    b = memory.shape[0]
    anchors, start = [], 0
    for lvl, grid in enumerate(level_grids(spatial_shapes, memory.device)):
        h, w = spatial_shapes[lvl]
        mask_l = memory_mask[:, start : start + h * w].view(b, h, w)
        valid_wh = torch.stack([(~mask_l[:, 0, :]).sum(1), (~mask_l[:, :, 0]).sum(1)], -1).to(memory.dtype)
        centre = grid[None] / valid_wh[:, None]  # [B, h*w, 2]
        size = torch.full_like(centre, 0.05 * (2.0**lvl))
        anchors.append(torch.cat([centre, size], -1))
        start += h * w
    anchors = torch.cat(anchors, 1)
    valid = ((anchors > 0.01) & (anchors < 0.99)).all(-1) & ~memory_mask
    logits = inverse_sigmoid(anchors).masked_fill(~valid[..., None], 0.0)
    return memory.masked_fill(~valid[..., None], 0.0), logits, valid


class QuerySelector(nn.Module):
    """Initial decoder queries: content ``[B, Q, D]`` and reference boxes ``[B, Q, 4]``.

    Two-stage (mixed query selection, DINO): class and box heads on the memory score one anchor
    per token; the top ``num_queries`` tokens by max class logit give the (detached) reference
    boxes, while the content queries are a learned embedding. Otherwise both are learned.
    """

    def __init__(self, d_model: int, num_queries: int, num_classes: int, two_stage: bool):
        super().__init__()
        self.two_stage = two_stage
        self.num_queries = num_queries
        self.tgt_embed = nn.Embedding(num_queries, d_model)
        nn.init.normal_(self.tgt_embed.weight)
        if two_stage:
            self.enc_output = nn.Linear(d_model, d_model)
            self.enc_output_norm = nn.LayerNorm(d_model)
            self.enc_class_embed = class_head(d_model, num_classes)
            self.enc_bbox_embed = box_head(d_model)
        else:
            # Stored as logits: centres spread over the image, small boxes.
            init = torch.empty(num_queries, 4)
            init[:, :2] = inverse_sigmoid(torch.rand(num_queries, 2) * 0.9 + 0.05)
            init[:, 2:] = inverse_sigmoid(torch.tensor(0.1))
            self.refbox_embed = nn.Embedding(num_queries, 4, _weight=init)

    def forward(
        self, memory: Tensor, memory_mask: Tensor, spatial_shapes: LevelSizes
    ) -> tuple[Tensor, Tensor, dict[str, Tensor] | None]:
        b = memory.shape[0]
        content = self.tgt_embed.weight[None].expand(b, -1, -1)
        if not self.two_stage:
            return content, self.refbox_embed.weight.sigmoid()[None].expand(b, -1, -1), None
        if memory.shape[1] < self.num_queries:
            raise ValueError(
                f"model.num_queries = {self.num_queries} exceeds the {memory.shape[1]} feature positions of "
                "this input; use larger images or fewer queries"
            )
        out_memory, anchors, valid = encoder_proposals(memory, memory_mask, spatial_shapes)
        out_memory = self.enc_output_norm(self.enc_output(out_memory))
        logits = self.enc_class_embed(out_memory)  # [B, S, C]
        coords = self.enc_bbox_embed(out_memory) + anchors  # inverse-sigmoid space
        scores = logits.max(-1).values.masked_fill(~valid, float("-inf"))
        idx = scores.topk(self.num_queries, dim=1).indices  # [B, Q]
        topk_logits = logits.gather(1, idx[..., None].expand(-1, -1, logits.shape[-1]))
        topk_boxes = coords.gather(1, idx[..., None].expand(-1, -1, 4)).sigmoid()
        # The dense scores of every token ride along for proposal distillation (CQD); the
        # criterion and the post-processor only read the top-k sets.
        enc_outputs = {"pred_logits": topk_logits, "pred_boxes": topk_boxes, "dense_logits": logits,
                       "dense_valid": valid}
        return content, topk_boxes.detach(), enc_outputs
