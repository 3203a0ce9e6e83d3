"""v2idetr: video-to-image knowledge distillation with a deformable DETR for medical video lesion detection."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["ClipDetector", "Detector", "Detections", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import v2idetr` (and the CLI's start-up) does not pay for torch until needed.
    if name in ("ClipDetector", "Detector", "Detections"):
        from v2idetr.deploy import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'v2idetr' has no attribute {name!r}")
