"""Thinning of binary boundary maps to one-pixel-wide lines (the algorithm of MATLAB's ``bwmorph thin Inf``)."""

from __future__ import annotations

import itertools

import numpy as np


def _thinning_tables() -> tuple[np.ndarray, np.ndarray]:
    """Deletion tables of the two sub-iterations of Guo & Hall's parallel thinning, indexed by neighbourhood code.

    Bit ``i - 1`` of a code is neighbour ``x_i``, counter-clockwise from east (E, NE, N, NW, W, SW, S, SE). A pixel
    is deleted when it has one 8-connected crossing (G1), ``2 <= min(n1, n2) <= 3`` (G2), and G3 (first
    sub-iteration) or G3' (second): the conditions MATLAB's ``bwmorph(..., 'thin', Inf)`` and
    ``skimage.morphology.thin`` implement (Lam, Lee & Suen 1992).
    """
    codes = np.arange(256)
    bits = [((codes >> bit) & 1).astype(bool) for bit in range(8)]
    x = [bits[7], *bits, bits[0]]  # x0 = x8 and x9 = x1: the neighbourhood is circular (x0 is never read)
    crossings = sum((~x[2 * i - 1] & (x[2 * i] | x[2 * i + 1])).astype(int) for i in range(1, 5))
    n1 = sum((x[2 * k - 1] | x[2 * k]).astype(int) for k in range(1, 5))
    n2 = sum((x[2 * k] | x[2 * k + 1]).astype(int) for k in range(1, 5))
    g12 = (crossings == 1) & (np.minimum(n1, n2) >= 2) & (np.minimum(n1, n2) <= 3)
    g3 = ~((x[2] | x[3] | ~x[8]) & x[1])
    g3_prime = ~((x[6] | x[7] | ~x[4]) & x[5])
    return g12 & g3, g12 & g3_prime


_THINNING_TABLES = _thinning_tables()


_OFFSETS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))
"""(dy, dx) of neighbour ``x_i`` (bit ``i - 1`` of a code): E, NE, N, NW, W, SW, S, SE."""

_WHOLE_IMAGE_SHARE = 0.25
"""A sub-iteration examines every pixel (from contiguous slices) when it would otherwise gather the neighbours of
more than this share of the image's pixels: slicing costs about as much as gathering for a quarter of them."""


def _whole_image_deletions(flat: np.ndarray, neighbours: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Flat indices of every set pixel of the padded map that ``table`` deletes: codes from eight shifted slices.

    Position ``i`` of a slice ``flat[lo + offset : hi + offset]`` holds neighbour ``offset`` of pixel ``lo + i``;
    ``lo .. hi`` spans every pixel that has all eight neighbours in the array, which includes the whole image (the
    frame pixels in that span are never set, so never deleted).
    """
    width = int(neighbours[6])  # the southern neighbour is one padded row further
    lo, hi = width + 1, flat.size - width - 1
    codes = flat[lo + neighbours[0] : hi + neighbours[0]].copy()
    for bit in range(1, 8):
        codes |= flat[lo + neighbours[bit] : hi + neighbours[bit]] << np.uint8(bit)
    return np.flatnonzero(np.take(table, codes) & flat[lo:hi].view(bool)) + lo


def thin_edges(mask: np.ndarray) -> np.ndarray:
    """Thin a binary map to 1-pixel-wide curves: the same result as ``skimage.morphology.thin(mask)``.

    scikit-image re-examines every pixel of the image in each sub-iteration; here a pixel is only re-examined when
    a neighbour was deleted since the last sub-iteration that used the same table (any other pixel would get the
    same answer as then). That visits a few pixels per curve instead of the whole image, which matters at 99
    thresholds per image. The pixels to re-examine are de-duplicated with a stamp map (each flat index remembers
    the last position that wrote it), linear time where ``np.unique`` would sort. When a sub-iteration would
    re-examine a large share of the image (blobs at low thresholds) it examines every pixel as scikit-image does,
    its codes from eight shifted slices of the map instead of eight gathers per pixel: the same deletions, since a
    pixel that needs no re-examination is not deleted.
    """
    mask = np.asarray(mask, dtype=bool)
    padded = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), dtype=np.uint8)  # zero frame: skimage's 'constant'
    padded[1:-1, 1:-1] = mask
    flat = padded.ravel()  # 0/1 bytes: flat.view(bool) is valid, and np.flatnonzero of it ~8x faster
    width = padded.shape[1]
    neighbours = np.array([dy * width + dx for dy, dx in _OFFSETS])
    whole_image = _WHOLE_IMAGE_SHARE * mask.size
    candidates = np.flatnonzero(flat.view(bool))
    stamp = np.empty(flat.size, dtype=np.int64)
    recent: list[np.ndarray] = []  # deletions of the last two sub-iterations
    for step in itertools.count():
        table = _THINNING_TABLES[step % 2]
        if step >= 2:
            changed = np.concatenate(recent)
            if changed.size == 0:  # a fixed point of both tables: skimage's loop would stop here too
                break
        to_examine = candidates.size if step < 2 else 8 * changed.size  # an upper bound after the first two
        if to_examine > whole_image:
            deleted = _whole_image_deletions(flat, neighbours, table)
        else:
            if step >= 2:
                around = (changed[:, None] + neighbours).ravel()
                around = around[flat[around] == 1]
                stamp[around] = np.arange(around.size)
                candidates = around[stamp[around] == np.arange(around.size)]  # each pixel once: its last write
            codes = np.packbits(flat[candidates[:, None] + neighbours], axis=1, bitorder="little")[:, 0]
            deleted = candidates[table[codes]]
        flat[deleted] = 0
        recent = [*recent[-1:], deleted]
    return padded[1:-1, 1:-1].astype(bool)

