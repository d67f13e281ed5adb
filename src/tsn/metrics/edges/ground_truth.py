"""Ground-truth boundaries: seism's label-map boundaries (``seg2bmap`` + thinning) and BSDS500's annotator maps."""

from __future__ import annotations

import os

import numpy as np
import scipy.io

from tsn.errors import TsnError
from tsn.metrics.edges.thinning import thin_edges


def seg2bmap(labels: np.ndarray) -> np.ndarray:
    """Boundary map of a label map, as David Martin's ``seg2bmap`` (same size, no resizing).

    A pixel is a boundary when its label differs from its right, lower or lower-right neighbour, so a boundary
    sits on the pixel just before a label change (half a pixel toward the origin). On the last row only the right
    neighbour counts, on the last column only the lower one, and the last pixel is never a boundary: the image
    frame itself is no boundary.
    """
    seg = np.asarray(labels)
    if seg.ndim != 2:
        raise TsnError(f"seg2bmap needs an H x W label map, got shape {seg.shape}")
    right = seg[:, :-1] != seg[:, 1:]
    down = seg[:-1, :] != seg[1:, :]
    boundary = np.zeros(seg.shape, dtype=bool)
    boundary[:-1, :-1] = right[:-1] | down[:, :-1] | (seg[:-1, :-1] != seg[1:, 1:])
    boundary[-1, :-1] = right[-1]
    boundary[:-1, -1] = down[:, -1]
    return boundary


def seism_ground_truth(label_map: np.ndarray) -> np.ndarray:
    """seism's boundary ground truth of a label map: ``thin(seg2bmap(label_map))`` (bool ``H x W``).

    Use the PASCAL-Context ``LabelMap`` (459 classes), or for NYUD under the ATRC protocol the edge PNG itself;
    never the training edge labels (thinned Laplacian), which differ from what seism scores against.
    """
    return thin_edges(seg2bmap(label_map))


def load_bsds_ground_truth(path: str | os.PathLike[str]) -> list[np.ndarray]:
    """The annotators' boundary maps (``groundTruth{i}.Boundaries``) of a BSDS500 ``.mat`` file, as bool arrays."""
    try:
        cells = scipy.io.loadmat(path)["groundTruth"]
        return [np.asarray(cell["Boundaries"][0, 0], dtype=bool) for cell in cells.ravel()]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        raise TsnError(
            f"cannot read BSDS ground truth {path}: {error}; expected a .mat file with a 'groundTruth' cell of "
            "structs with 'Boundaries'"
        ) from None
