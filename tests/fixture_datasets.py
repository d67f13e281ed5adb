"""Tiny PASCAL_MT and NYUD_MT datasets in the exact on-disk layout of the real archives (datasets.md section 7).

Importable by any test (``tests/`` is on ``sys.path``)::

    from fixture_datasets import make_pascal_fixture, make_nyud_fixture

Every image has its own non-square size (:func:`image_size`) unless ``size`` is given (the loading benchmark uses
the real 500 x 375). The content is laid out from the image size (:class:`Layout`) so tests can state expected
values by hand:

* ``LabelMap``: wall (440, normals valid) left of column ``W // 2``, person (284, valid) right of it, a 6 x 6
  sky square (360, invalid) at rows/cols 2..7, and a "plus" at ``Layout.plus``: centre 2, up/down 1, left/right 3
  (4 x 2 = 1 + 1 + 3 + 3, so the centre's Laplacian is 0 although its neighbours differ);
* semseg (``semseg/pascal-context``, grey): 0 left, 15 right; one val image (``VOC12_ID``) also has a palette
  ``semseg/VOC12`` PNG (0, 12 right, 255 on the top 3 rows) that must win;
* normals: R 0 left / 255 right, G 128, B 255 -> (-1 | +1, 1/255, 1) before masking;
* saliency: 127 left / 128 right, first row 0 and last row 255;
* human parts: one PASCAL-Part case per image (:data:`PARTS_CASES`), cases (a)-(e) of the spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

from tsn.tasks import color_palette

__all__ = [
    "PASCAL_TRAIN_IDS",
    "PASCAL_VAL_IDS",
    "PARTS_CASES",
    "PERSON_LISTS",
    "VOC12_ID",
    "NYUD_TRAIN_IDS",
    "NYUD_VAL_IDS",
    "NYUD_SMALL_LABELS_ID",
    "Layout",
    "image_size",
    "make_pascal_fixture",
    "make_nyud_fixture",
    "MTAN_LENGTHS",
    "make_mtan_fixture",
]

PASCAL_TRAIN_IDS = tuple(f"2008_{i:06d}" for i in range(1, 7))
PASCAL_VAL_IDS = tuple(f"2008_{i:06d}" for i in range(100, 104))

PARTS_CASES: dict[str, str] = dict(zip(PASCAL_TRAIN_IDS + PASCAL_VAL_IDS, "abecda" + "adbc", strict=True))
"""Image id -> human-parts case: (a) person with head/torso/llleg parts (val's also has a cat), (b) only a cat,
(c) a person without parts, (d) two persons whose parts overlap, (e) a person with an empty mask (but parts)."""

_CASE_LISTS = {"a": [15], "b": [8], "c": [15], "d": [15, 15], "e": [-1]}
PERSON_LISTS: dict[str, list[int]] = {image_id: _CASE_LISTS[case] for image_id, case in PARTS_CASES.items()}
PERSON_LISTS[PASCAL_VAL_IDS[0]] = [15, 8]
"""The reference's person list of each image (what the parts cache must contain)."""

VOC12_ID = PASCAL_VAL_IDS[1]
"""The image with a ``semseg/VOC12`` palette PNG besides its ``semseg/pascal-context`` one."""

NYUD_TRAIN_IDS = tuple(f"{i:04d}" for i in range(1, 7))
NYUD_VAL_IDS = tuple(f"{i:04d}" for i in range(100, 104))
NYUD_SMALL_LABELS_ID = NYUD_VAL_IDS[1]
"""The NYUD image whose segmentation and normals are stored at half resolution (the loader must resize them)."""


def image_size(index: int) -> tuple[int, int]:
    """``(H, W)`` of the ``index``-th image of a fixture: non-square and different for every image."""
    return 40 + 2 * index, 56 - 2 * index


@dataclass(frozen=True)
class Layout:
    """Where things are in a fixture image of ``(h, w)`` pixels."""

    h: int
    w: int

    @property
    def boundary(self) -> int:
        """First column of the right half."""
        return self.w // 2

    @property
    def plus(self) -> tuple[int, int]:
        """Centre of the plus pattern (in the right half, away from every other feature)."""
        return self.h // 2, self.boundary + (self.w - self.boundary) // 2

    def rows(self, start: float, stop: float) -> slice:
        """Rows between two fractions of the height."""
        return slice(int(self.h * start), int(self.h * stop))

    def label_map(self) -> np.ndarray:
        lm = np.full((self.h, self.w), 440, dtype=np.uint16)
        lm[:, self.boundary:] = 284
        lm[2:8, 2:8] = 360
        r, c = self.plus
        lm[r, c] = 2
        lm[r - 1, c] = lm[r + 1, c] = 1
        lm[r, c - 1] = lm[r, c + 1] = 3
        return lm

    def halves(self, left: int, right: int, dtype: type = np.uint8) -> np.ndarray:
        out = np.full((self.h, self.w), left, dtype=dtype)
        out[:, self.boundary:] = right
        return out

    def mask(self, rows: slice, cols: slice | None = None) -> np.ndarray:
        out = np.zeros((self.h, self.w), dtype=np.uint8)
        out[rows, cols if cols is not None else slice(self.boundary, self.w)] = 1
        return out


def _write_ids(path: Path, ids: tuple[str, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


def _save_png(path: Path, array: np.ndarray, palette: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette is None:
        image = Image.fromarray(array)
    else:  # a palette image whose pixels are exactly these indices
        image = Image.frombytes("P", array.shape[::-1], array.tobytes())
        image.putpalette(palette.ravel().tolist())
    image.save(path)


def _save_jpg(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95)


def _save_mat(path: Path, variables: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, variables)


def _struct(dtype: list[tuple[str, str]], records: list[tuple[object, ...]]) -> np.ndarray:
    """A ``1 x N`` MATLAB struct array with object fields (field order matters: the loader reads by position)."""
    out = np.zeros((1, len(records)), dtype=dtype)
    for j, record in enumerate(records):
        out[0, j] = record
    return out


def _person(mask: np.ndarray, parts: list[tuple[str, np.ndarray]]) -> tuple[object, ...]:
    part_struct = _struct([("part_name", "O"), ("mask", "O")], parts) if parts else np.zeros((0, 0))
    return "person", np.array([[15.0]]), mask, part_struct


def _cat(layout: Layout) -> tuple[object, ...]:
    return "cat", np.array([[8.0]]), layout.mask(layout.rows(0.0, 0.25), slice(0, layout.boundary)), np.zeros((0, 0))


def _objects(case: str, layout: Layout) -> list[tuple[object, ...]]:
    """The PASCAL-Part objects of one human-parts case."""
    body = layout.mask(layout.rows(0.25, 0.75))
    head, torso, legs = layout.rows(0.25, 0.4), layout.rows(0.4, 0.6), layout.rows(0.6, 0.75)
    if case == "a":
        parts = [("head", layout.mask(head)), ("torso", layout.mask(torso)), ("llleg", layout.mask(legs))]
        return [_person(body, parts)]
    if case == "b":
        return [_cat(layout)]
    if case == "c":
        return [_person(body, [])]
    if case == "d":  # the second person's upper leg overlaps the first one's torso: the later object wins
        return [_person(body, [("torso", layout.mask(layout.rows(0.25, 0.6)))]),
                _person(body, [("ruleg", layout.mask(layout.rows(0.5, 0.75)))])]
    if case == "e":
        return [_person(np.zeros((layout.h, layout.w), dtype=np.uint8), [("head", layout.mask(head))])]
    raise ValueError(case)


def _anno(image_id: str, objects: list[tuple[object, ...]]) -> np.ndarray:
    anno = np.zeros((1, 1), dtype=[("imname", "O"), ("objects", "O")])
    anno[0, 0] = (image_id, _struct([("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")], objects))
    return anno


def make_pascal_fixture(data_root: Path, size: tuple[int, int] | None = None, seed: int = 0) -> Path:
    """Write ``<data_root>/PASCAL_MT`` (6 train + 4 val images) and return that folder.

    ``size = (H, W)`` gives every image that size instead of :func:`image_size`.
    """
    root = Path(data_root) / "PASCAL_MT"
    rng = np.random.default_rng(seed)
    _write_ids(root / "ImageSets/Context/train.txt", PASCAL_TRAIN_IDS)
    _write_ids(root / "ImageSets/Context/val.txt", PASCAL_VAL_IDS)
    (root / "ImageSets/Parts").mkdir(parents=True)
    for index, image_id in enumerate(PASCAL_TRAIN_IDS + PASCAL_VAL_IDS):
        layout = Layout(*(size or image_size(index)))
        h, w = layout.h, layout.w
        _save_jpg(root / f"JPEGImages/{image_id}.jpg", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        _save_mat(root / f"pascal-context/trainval/{image_id}.mat", {"LabelMap": layout.label_map()})
        _save_png(root / f"semseg/pascal-context/{image_id}.png", layout.halves(0, 15))
        if image_id == VOC12_ID:
            voc = layout.halves(0, 12)
            voc[:3] = 255
            _save_png(root / f"semseg/VOC12/{image_id}.png", voc, palette=color_palette())
        normals = np.stack([layout.halves(0, 255), np.full((h, w), 128, np.uint8), np.full((h, w), 255, np.uint8)], -1)
        _save_png(root / f"normals_distill/{image_id}.png", normals)
        saliency = layout.halves(127, 128)
        saliency[0], saliency[-1] = 0, 255
        _save_png(root / f"sal_distill/{image_id}.png", saliency)
        objects = _objects(PARTS_CASES[image_id], layout)
        if image_id == PASCAL_VAL_IDS[0]:
            objects.append(_cat(layout))
        _save_mat(root / f"human_parts/{image_id}.mat", {"anno": _anno(image_id, objects)})
    return root


def make_nyud_fixture(data_root: Path, size: tuple[int, int] | None = None, seed: int = 0) -> Path:
    """Write ``<data_root>/NYUD_MT`` (6 train + 4 val images) and return that folder.

    Per image: edges 255 on column ``W // 2`` and one grey 100 pixel at (1, 1); segmentation 0 left, 40 right,
    7 on the first row; normals RGB (128, 64, 255); depth a ramp 1..5 m with a 0 (invalid) at (0, 0).
    :data:`NYUD_SMALL_LABELS_ID` stores segmentation and normals at half resolution.
    """
    root = Path(data_root) / "NYUD_MT"
    rng = np.random.default_rng(seed)
    _write_ids(root / "gt_sets/train.txt", NYUD_TRAIN_IDS)
    _write_ids(root / "gt_sets/val.txt", NYUD_VAL_IDS)
    for index, image_id in enumerate(NYUD_TRAIN_IDS + NYUD_VAL_IDS):
        layout = Layout(*(size or image_size(index)))
        h, w = layout.h, layout.w
        _save_jpg(root / f"images/{image_id}.jpg", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        edges = layout.halves(0, 0)
        edges[:, layout.boundary] = 255
        edges[1, 1] = 100
        _save_png(root / f"edge/{image_id}.png", edges)
        label_layout = Layout(h // 2, w // 2) if image_id == NYUD_SMALL_LABELS_ID else layout
        segmentation = label_layout.halves(0, 40)
        segmentation[0] = 7
        _save_mat(root / f"segmentation/{image_id}.mat", {"segmentation": segmentation})
        normals = np.broadcast_to(np.array([128, 64, 255], np.uint8), (label_layout.h, label_layout.w, 3))
        _save_jpg(root / f"normals/{image_id}.jpg", np.ascontiguousarray(normals))
        depth = np.broadcast_to(np.linspace(1.0, 5.0, w, dtype=np.float32), (h, w)).copy()
        depth[0, 0] = 0.0
        _save_mat(root / f"depth/{image_id}.mat", {"depth": depth})
    return root


MTAN_LENGTHS = {"train": 3, "val": 2}
"""Images per split of the MTAN-layout fixtures."""


def make_mtan_fixture(
    data_root: Path, dataset: str = "nyuv2", size: tuple[int, int] = (32, 48), seed: int = 0
) -> Path:
    """Write ``<data_root>/<dataset>`` (``nyuv2`` or ``cityscapes``) in MTAN's ``.npy`` layout and return it.

    Exactly as MTAN stores them: float32, channels last, files numbered from 0 in ``image``, ``label``, ``depth``
    (and ``normal`` for NYUv2) of ``train`` (3 images) and ``val`` (2). Per image ``i``: the image is random in
    [0, 1] with pixel (0, 0) = (0, 0.5, 1); the label is class ``i`` left of column ``W // 2`` and class 1 right of
    it, with -1 (ignore) on the first row; depth is ``1 + column / W`` with 0 (no measurement) at (0, 0); normals
    are (0, 0, 1), all-zero (invalid) at (0, 0).
    """
    root = Path(data_root) / dataset
    rng = np.random.default_rng(seed)
    h, w = size
    for split, length in MTAN_LENGTHS.items():
        for i in range(length):
            image = rng.random((h, w, 3), dtype=np.float32)
            image[0, 0] = (0.0, 0.5, 1.0)
            label = np.full((h, w), 1.0, np.float32)
            label[:, : w // 2] = float(i)
            label[0] = -1.0
            depth = np.broadcast_to(1.0 + np.arange(w, dtype=np.float32) / w, (h, w)).copy()[..., None]
            depth[0, 0] = 0.0
            arrays = {"image": image, "label": label, "depth": depth}
            if dataset == "nyuv2":
                normal = np.zeros((h, w, 3), np.float32)
                normal[..., 2] = 1.0
                normal[0, 0] = 0.0
                arrays["normal"] = normal
            for folder, array in arrays.items():
                (root / split / folder).mkdir(parents=True, exist_ok=True)
                np.save(root / split / folder / f"{i}.npy", array.astype(np.float32))
    return root
