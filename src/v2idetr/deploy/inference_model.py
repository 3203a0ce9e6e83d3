"""The deployable image model: padding mask, detector (normalisation included) and top-k in one module.

Everything between "resized RGB pixels in [0, 1]" and "scored boxes in original-frame pixels" is
inside ``forward``, free of Python loops over images and of data-dependent control flow, so the same
module serves the Python API, the predictor, the speed benchmark and the ONNX export. Score
threshold and NMS stay outside (``engine.metrics.select_detections``): they are protocol choices.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from v2idetr.models.postprocess import PostProcess


class InferenceModel(nn.Module):
    """``(images [B,3,H,W] in [0,1], image_sizes [B,2], orig_sizes [B,2]) -> (scores, labels, boxes)``.

    ``detector`` is an image model (``models.detector.Detector``) or, with clips ``[B, T, 3, H, W]``
    (key frame first), a ``VideoTeacher`` (the speed benchmark times teachers this way);
    ``scores [B, K]`` descending, ``labels [B, K]`` int64 class indices,
    ``boxes [B, K, 4]`` x1y1x2y2 pixels of the original frames, ``K = min(num_select, Q * C)``.
    """

    def __init__(self, detector: nn.Module, num_select: int = 100):
        super().__init__()
        self.detector = detector
        self.postprocess = PostProcess(num_select)

    def forward(self, images: Tensor, image_sizes: Tensor, orig_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        H, W = images.shape[-2:]
        rows = torch.arange(H, device=images.device).view(1, H, 1)
        cols = torch.arange(W, device=images.device).view(1, 1, W)
        valid = (rows < image_sizes[:, 0].view(-1, 1, 1)) & (cols < image_sizes[:, 1].view(-1, 1, 1))
        # The detector's backbone normalises the pixels as its trunk expects and zeroes the padding.
        outputs = self.detector(images, ~valid)
        return self.postprocess.forward_batched(outputs["pred_logits"], outputs["pred_boxes"], orig_sizes)
