"""v2idetr: video-to-image knowledge distillation with a deformable DETR for medical video lesion detection."""

__version__ = "0.1.0"
