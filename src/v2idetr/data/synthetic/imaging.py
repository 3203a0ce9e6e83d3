"""Pixel primitives the presets draw with: random fields, speckle, the camera's view, highlights, blur.

Kept apart from the presets so that their two image families share one implementation of each,
and apart from the plan (``lesions``), which draws no pixels.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from v2idetr.data.synthetic.lesions import _Camera


def _smooth(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean unit-std random field with correlation length ~``sigma`` pixels.

    Drawn on a coarse grid and upsampled, which is far cheaper than a wide Gaussian filter.
    """
    step = max(1.0, sigma / 2.0)
    coarse = (int(math.ceil(shape[0] / step)) + 4, int(math.ceil(shape[1] / step)) + 4)
    field_ = ndimage.gaussian_filter(rng.standard_normal(coarse), 1.0, mode="wrap")
    up = ndimage.zoom(field_, step, order=3, mode="grid-wrap", grid_mode=True)[: shape[0], : shape[1]]
    up = up - up.mean()
    return up / (up.std() + 1e-8)


def _speckle(rng: np.random.Generator, shape: tuple[int, int], grain: float) -> np.ndarray:
    """Fully developed speckle intensity: |correlated complex Gaussian|^2, mean 1 (exponential)."""
    re = ndimage.gaussian_filter(rng.standard_normal(shape), grain)
    im = ndimage.gaussian_filter(rng.standard_normal(shape), grain)
    s = re * re + im * im
    return s / s.mean()


def _warp(canvas: np.ndarray, cam: _Camera, t: int, size: int) -> np.ndarray:
    """The camera's view of the canvas at frame ``t``: [size, size(, C)], bilinear."""
    z = float(cam.zoom[t])
    cx, cy = cam.centre[t]
    off_y = cy - 0.5 + (0.5 - size / 2) / z
    off_x = cx - 0.5 + (0.5 - size / 2) / z
    if canvas.ndim == 2:
        return ndimage.affine_transform(
            canvas, [1 / z, 1 / z], offset=[off_y, off_x], output_shape=(size, size), order=1, mode="nearest"
        )
    return np.stack(
        [
            ndimage.affine_transform(
                canvas[..., c],
                [1 / z, 1 / z],
                offset=[off_y, off_x],
                output_shape=(size, size),
                order=1,
                mode="nearest",
            )
            for c in range(canvas.shape[2])
        ],
        axis=2,
    )


def _add_spot(img: np.ndarray, centre: tuple[float, float], sigma: float, peak: float) -> None:
    """Add a small white Gaussian highlight to [H, W, C] in place."""
    size = img.shape[0]
    x, y = centre
    r = int(math.ceil(3 * sigma)) + 1
    x0, x1, y0, y1 = (
        max(0, int(x) - r),
        min(size, int(x) + r + 1),
        max(0, int(y) - r),
        min(size, int(y) + r + 1),
    )
    if x0 >= x1 or y0 >= y1:
        return
    dx = np.arange(x0, x1) + 0.5 - x
    dy = np.arange(y0, y1)[:, None] + 0.5 - y
    g = peak * np.exp(-(dx[None, :] ** 2 + dy**2) / (2 * sigma**2))
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] + g[..., None] * (1.0 - img[y0:y1, x0:x1])


def _motion_blur(img: np.ndarray, length: float, angle: float) -> np.ndarray:
    """Convolve [H, W, C] with a line kernel of ``length`` pixels at ``angle``."""
    k = int(math.ceil(length)) | 1
    kernel = np.zeros((k, k))
    c = (k - 1) / 2
    for s in np.linspace(-length / 2, length / 2, 4 * k):
        kernel[int(round(c + s * math.sin(angle))), int(round(c + s * math.cos(angle)))] += 1
    kernel /= kernel.sum()
    return np.stack(
        [ndimage.convolve(img[..., ch], kernel, mode="nearest") for ch in range(img.shape[2])], axis=2
    )
