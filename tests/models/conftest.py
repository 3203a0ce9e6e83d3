"""Padding masks shared by the transformer and query-selection tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture()
def masks() -> list[torch.Tensor]:
    """Two levels (4 x 6, 2 x 3) for 2 images; image 1 valid on the left half and top half."""
    masks = [torch.zeros(2, 4, 6, dtype=torch.bool), torch.zeros(2, 2, 3, dtype=torch.bool)]
    masks[0][1, 2:] = True
    masks[0][1, :, 3:] = True
    masks[1][1, 1:] = True
    masks[1][1, :, 2:] = True  # ceil(1.5) columns stay valid at the coarse level
    return masks
