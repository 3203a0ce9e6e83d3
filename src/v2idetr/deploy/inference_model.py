"""The deployable image model: normalisation, padding mask, detector and top-k post-processing in one module.

Everything between "resized RGB pixels in [0, 1]" and "scored boxes in original-frame pixels" is
inside ``forward``, free of Python loops over images and of data-dependent control flow, so the same
module serves the Python API, the predictor, the speed benchmark and the ONNX export. Score
threshold and NMS stay outside (``engine.metrics.select_detections``): they are protocol choices.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from v2idetr.data.transforms import IMAGENET_MEAN, IMAGENET_STD
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
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor, image_sizes: Tensor, orig_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        H, W = images.shape[-2:]
        rows = torch.arange(H, device=images.device).view(1, H, 1)
        cols = torch.arange(W, device=images.device).view(1, 1, W)
        valid = (rows < image_sizes[:, 0].view(-1, 1, 1)) & (cols < image_sizes[:, 1].view(-1, 1, 1))
        # Zero padding after normalisation, exactly as the training/eval collate pads normalised frames.
        keep = valid.view(valid.shape[0], *([1] * (images.dim() - 3)), H, W).to(images.dtype)
        pixels = (images - self.mean) / self.std * keep
        outputs = self.detector(pixels, ~valid)
        return self.postprocess.forward_batched(outputs["pred_logits"], outputs["pred_boxes"], orig_sizes)
