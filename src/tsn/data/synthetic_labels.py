"""Image-space labels of the synthetic scenes, derived from a rendered instance map: one-pixel edges, two-sided
contours and the distance to the nearest boundary (:mod:`tsn.data.synthetic_render` draws the instance map)."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from skimage.morphology import thin

from tsn.data.synthetic_scene import FLOAT

__all__ = ["instance_edges", "instance_contours", "boundary_distance"]


def instance_edges(instance: np.ndarray) -> np.ndarray:
    """One-pixel-thin boundaries of an instance map, as a bool map.

    Convention: a pixel is a boundary pixel when its instance differs from the pixel above or on its left (the
    lower/right side of each transition, the mirror of seg2bmap's); the map is then thinned
    (``skimage.morphology.thin``), which removes the corner pixels where a vertical and a horizontal run meet,
    so every kept pixel still has a different instance above or on its left. A 2x2 block survives only where
    topology needs it (a junction of three regions, a one-pixel tip): under 0.1% of the edge pixels.
    """
    edges = np.zeros(instance.shape, dtype=bool)
    edges[1:, :] = instance[1:, :] != instance[:-1, :]
    edges[:, 1:] |= instance[:, 1:] != instance[:, :-1]
    return thin(edges)


def instance_contours(instance: np.ndarray) -> np.ndarray:
    """Both sides of every instance boundary, as a bool map: pixels with a 4-neighbour of another instance.

    Unlike :func:`instance_edges` (one side, thinned), the map is symmetric, so it commutes with flips and
    transposes, and it contains every pixel of an occlusion boundary.
    """
    contours = np.zeros(instance.shape, dtype=bool)
    rows, columns = instance[1:, :] != instance[:-1, :], instance[:, 1:] != instance[:, :-1]
    contours[1:, :] |= rows
    contours[:-1, :] |= rows
    contours[:, 1:] |= columns
    contours[:, :-1] |= columns
    return contours


def boundary_distance(instance: np.ndarray) -> np.ndarray:
    """float32 Euclidean distance, in pixels, from each pixel centre to the nearest pixel of another instance.

    It is exactly 1 on :func:`instance_contours` and above 1 elsewhere; per instance it is the exact distance
    transform (``scipy.ndimage.distance_transform_edt``) of that instance's mask. An image of a single instance
    has no boundary: there the distance is the image diagonal, longer than any distance inside the image.
    """
    distance = np.full(instance.shape, math.hypot(*instance.shape), dtype=np.float64)
    ids, labelled = np.unique(instance, return_inverse=True)
    if ids.size > 1:
        # Each instance within its bounding box grown by one pixel: that ring holds only other instances and is
        # nearer to every inside pixel than anything beyond it, so the crop's transform is the whole image's.
        for k, box in enumerate(ndimage.find_objects(labelled.reshape(instance.shape) + 1)):
            assert box is not None  # every label of np.unique occurs
            grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
            mask = instance[grown] == ids[k]
            distance[grown][mask] = ndimage.distance_transform_edt(mask)[mask]
    return distance.astype(FLOAT)
