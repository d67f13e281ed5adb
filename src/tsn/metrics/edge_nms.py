"""Edge non-maximum suppression as in seism's ``read_one_cont_png`` reader (ASTMT / ATRC / InvPT protocols).

seism thins a soft edge map before thresholding it with Piotr Dollar's structured-edge NMS:

1. the orientation ``O`` comes from second derivatives of the map smoothed by a triangle filter of radius 4
   (``convTri``), ``O = mod(atan(Oyy * sign(-Oxy) / (Oxx + 1e-5)), pi)``;
2. a pixel is zeroed when ``m * E`` (``m = 1.01``) is smaller than the map bilinearly sampled ``r = 1`` pixel away
   along ``O`` on either side (samples are clamped inside the image);
3. strengths within ``s = 5`` pixels of the image border are multiplied by ``d / s`` (``d`` = distance to the
   border), so the outermost rows and columns become 0.

This is a re-implementation from that description in numpy / scipy, vectorised over the whole image. MATLAB runs
it in single precision, so the computation is done in float32 too; bit-exactness is not attainable anyway.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["conv_tri", "edge_orientation", "edge_nms"]


def conv_tri(image: np.ndarray, radius: int) -> np.ndarray:
    """Separable triangle filter of integer ``radius`` (kernel ``[1 .. r+1 .. 1] / (r+1)^2``), mirror padding."""
    ramp = np.arange(1, radius + 2, dtype=np.float64)
    kernel = np.concatenate([ramp, ramp[-2::-1]]) / (radius + 1) ** 2
    # scipy's "reflect" repeats the edge pixel (d c b a | a b c d), which is MATLAB's 'symmetric' padding.
    smoothed = ndimage.convolve1d(image, kernel, axis=0, mode="reflect")
    return ndimage.convolve1d(smoothed, kernel, axis=1, mode="reflect")


def edge_orientation(edges: np.ndarray, radius: int = 4) -> np.ndarray:
    """Edge normal orientation in ``[0, pi)`` from second derivatives of the triangle-smoothed map."""
    # np.gradient = MATLAB gradient: central differences inside, one-sided differences on the border.
    oy, ox = np.gradient(conv_tri(edges, radius))
    oxx = np.gradient(ox, axis=1)
    oyy, oxy = np.gradient(oy)
    return np.mod(np.arctan(oyy * np.sign(-oxy) / (oxx + np.float32(1e-5))), np.float32(np.pi))


def edge_nms(
    edges: np.ndarray,
    orientation: np.ndarray | None = None,
    *,
    radius: int = 1,
    border: int = 5,
    multiplier: float = 1.01,
) -> np.ndarray:
    """Non-maximum suppression of a soft edge map ``H x W`` in [0, 1], seism defaults (r=1, s=5, m=1.01).

    ``orientation`` defaults to :func:`edge_orientation` of ``edges``. Returns a float32 map of the same shape.
    """
    strength = np.asarray(edges, dtype=np.float32)
    if orientation is None:
        orientation = edge_orientation(strength)
    height, width = strength.shape
    rows, cols = np.indices(strength.shape, dtype=np.float32)
    cos, sin = np.cos(orientation), np.sin(orientation)
    scaled = strength * np.float32(multiplier)
    keep = strength > 0
    for step in range(-radius, radius + 1):
        if step == 0:
            continue
        # Samples are clamped just inside the last row / column so bilinear weights never reach past the image.
        sample_cols = np.clip(cols + step * cos, 0, width - 1.001)
        sample_rows = np.clip(rows + step * sin, 0, height - 1.001)
        neighbour = ndimage.map_coordinates(strength, [sample_rows, sample_cols], order=1, mode="nearest")
        keep &= scaled >= neighbour
    suppressed = np.where(keep, strength, np.float32(0))
    return _border_ramp(suppressed, border)


def _border_ramp(strength: np.ndarray, border: int) -> np.ndarray:
    """Multiply the ``border`` outermost rows / columns by ``d / border`` (noisy responses near the frame)."""
    height, width = strength.shape
    border = min(border, width // 2, height // 2)
    if border <= 0:
        return strength
    # border <= half the size, so the two ramps of an axis never overlap; corners get both factors.
    ramp = np.arange(border, dtype=np.float32) / np.float32(border)
    row_scale = np.ones(height, dtype=np.float32)
    col_scale = np.ones(width, dtype=np.float32)
    row_scale[:border], row_scale[height - border :] = ramp, ramp[::-1]
    col_scale[:border], col_scale[width - border :] = ramp, ramp[::-1]
    return strength * row_scale[:, None] * col_scale[None, :]
