"""PASCAL-Context multi-task (``PASCAL_MT``), decoded exactly as the ASTMT / TSNs reference loader does.

Five tasks: semseg (21 VOC classes), human_parts (background + 6 parts), edges, normals and saliency (the last two
distilled). Layout, per image id::

    ImageSets/Context/<split>.txt            split lists (train 4998, val 5105)
    JPEGImages/<id>.jpg                      image
    pascal-context/trainval/<id>.mat         'LabelMap', 459 PASCAL-Context classes: edges and the normals mask
    semseg/VOC12/<id>.png | semseg/pascal-context/<id>.png   class indices, VOC12 wins
    human_parts/<id>.mat                     PASCAL-Part 'anno' struct
    normals_distill/<id>.png                 RGB-encoded normals
    sal_distill/<id>.png                     grey saliency

The reference decides which images show a person from a per-split list cached as JSON; it is recomputed when
missing and written to a cache folder, never into the (possibly read-only) dataset.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
from skimage.morphology import thin
from tqdm import tqdm

from tsn.data.paths import cache_dir
from tsn.data.readers import (
    FolderDataset,
    Transform,
    read_image,
    read_label_png,
    read_mat,
    rgb_to_normals,
)
from tsn.errors import TsnError
from tsn.tasks import TaskSpec
from tsn.utils.io import atomic_write_text
from tsn.utils.progress import progress_enabled

__all__ = [
    "PascalContext",
    "VALID_NORMAL_IDS",
    "PART_IDS",
    "PERSON_CLASS",
    "label_boundaries",
    "mask_normals",
    "binarize_saliency",
    "object_classes",
    "human_parts_label",
]

VALID_NORMAL_IDS: np.ndarray = np.array([
    3, 4, 6, 9, 10, 11, 13, 15, 17, 18, 22, 23, 29, 30, 33, 34, 36, 37, 38, 39, 41, 43, 46, 49, 50, 51, 53, 55, 56,
    59, 61, 62, 65, 66, 68, 69, 72, 73, 78, 83, 84, 85, 87, 88, 95, 96, 101, 104, 105, 107, 111, 113, 115, 122, 124,
    135, 141, 142, 143, 146, 150, 154, 157, 158, 159, 165, 172, 174, 181, 183, 184, 191, 193, 195, 197, 199, 202,
    213, 215, 216, 219, 220, 223, 225, 228, 230, 232, 233, 238, 239, 242, 243, 246, 250, 251, 252, 255, 260, 261,
    263, 269, 272, 273, 275, 281, 283, 284, 285, 286, 287, 288, 290, 291, 292, 293, 295, 304, 307, 309, 310, 314,
    315, 319, 323, 329, 330, 331, 336, 342, 345, 349, 350, 351, 352, 355, 357, 368, 370, 371, 374, 379, 380, 383,
    384, 397, 401, 403, 405, 407, 408, 411, 412, 413, 414, 417, 419, 421, 423, 427, 429, 430, 432, 440, 441, 442,
    443, 444, 446, 454, 457,
])
"""PASCAL-Context ``LabelMap`` ids where the distilled normals are valid (170 ids).

Derived as the reference does: the PASCAL-Context id (``context_classes.json``, names -> 1..459) of every class
name of ``nyu_classes.json`` that PASCAL-Context also has, 'unknown' excluded, plus 'tvmonitor' (427). The
normals teacher was trained on NYUD, so only those (indoor-like) classes are trusted: wall 440, floor 158,
person 284 are in; sky 360, grass 187, tree 420, building 44, road 324 are out. Stated here as numbers so the
non-commercially licensed JSON files need not be shipped."""

_PART_GROUPS: dict[int, tuple[str, ...]] = {
    1: ("hair", "head", "lear", "rear", "lebrow", "rebrow", "leye", "reye", "mouth", "nose"),  # head
    2: ("torso", "neck"),  # torso
    3: ("luarm", "ruarm"),  # upper arms
    4: ("llarm", "rlarm", "lhand", "rhand"),  # lower arms
    5: ("luleg", "ruleg"),  # upper legs
    6: ("llleg", "rlleg", "lfoot", "rfoot"),  # lower legs
}
PART_IDS: dict[str, int] = {name: part_id for part_id, names in _PART_GROUPS.items() for name in names}
"""PASCAL-Part part name -> human_parts class id (the reference's default 6-part grouping; 0 = background)."""

PERSON_CLASS = 15
"""VOC class id of 'person' in PASCAL-Part's ``class_ind``."""

_AREA_THRESHOLD = 0
"""An object counts in the person list when its mask has more pixels than this (the reference never changes it)."""

_NO_PERSON_SHAPE = (512, 512)
"""The reference's placeholder shape for images without annotated parts (then resized to the image: all 0)."""


def label_boundaries(label_map: np.ndarray) -> np.ndarray:
    """The edge label of a ``LabelMap``: float32 {0, 1}, one pixel wide.

    A pixel is an edge where OpenCV's 4-neighbour Laplacian (float64, reflect-101 border so the image frame is
    no edge) is non-zero; the mask is then thinned to convergence. This differs from "a neighbour differs": a
    pixel whose four neighbours sum to four times its own value is not an edge, exactly as in the reference.
    """
    laplacian = cv2.Laplacian(np.asarray(label_map, dtype=np.float64), cv2.CV_64F)
    return thin(np.abs(laplacian) > 0).astype(np.float32)


def mask_normals(normals: np.ndarray, label_map: np.ndarray) -> np.ndarray:
    """Distilled normals with every pixel whose ``LabelMap`` class is not in :data:`VALID_NORMAL_IDS` zeroed."""
    return np.where(np.isin(label_map, VALID_NORMAL_IDS)[..., None], normals, 0.0).astype(np.float32)


def binarize_saliency(grey: np.ndarray) -> np.ndarray:
    """Distilled saliency -> float32 {0, 1}: ``grey / 255 > 0.5`` strictly (128 -> 1, 127 -> 0)."""
    return (grey.astype(np.float64) / 255.0 > 0.5).astype(np.float32)


def _objects(anno: np.ndarray) -> np.ndarray:
    """The PASCAL-Part object records of an ``anno`` struct (fields accessed by position, as the reference)."""
    return np.asarray(anno[0, 0][1]).ravel()


def _class_id(record: np.void) -> int:
    return int(np.asarray(record[1]).item())


def object_classes(anno: np.ndarray) -> list[int]:
    """The reference's person-list entry of one image: each object's VOC class id, or -1 for an empty mask."""
    return [_class_id(obj) if np.asarray(obj[2]).sum() > _AREA_THRESHOLD else -1 for obj in _objects(anno)]


def human_parts_label(anno: np.ndarray, has_person: bool) -> np.ndarray:
    """The human_parts label (float32 part ids) of one PASCAL-Part annotation.

    Every person object that has parts writes its part masks, in file order, so later objects overwrite
    earlier ones where they overlap; person pixels outside any part stay 0. Without a qualifying person the
    label is all 0. An unknown part name raises ``KeyError`` (as the reference).
    """
    target: np.ndarray | None = None
    if has_person:
        for obj in _objects(anno):
            parts = np.asarray(obj[3])
            if _class_id(obj) != PERSON_CLASS or parts.size == 0:
                continue
            if target is None:
                target = np.zeros(np.asarray(obj[2]).shape, dtype=np.float32)
            for part in parts.ravel():
                target[np.asarray(part[1]).astype(bool)] = PART_IDS[str(np.asarray(part[0]).ravel()[0])]
    return target if target is not None else np.zeros(_NO_PERSON_SHAPE, dtype=np.float32)


def _person_list_json(ids: Sequence[str], lists: dict[str, list[int]]) -> str:
    """The reference's cache format: a JSON object, one tab-indented ``"id": [..]`` line per image."""
    lines = ",\n".join(f"\t{json.dumps(image_id)}: {json.dumps(lists[image_id])}" for image_id in ids)
    return "{\n" + lines + "\n}\n"


class PascalContext(FolderDataset):
    """PASCAL-Context multi-task dataset (``<root>/PASCAL_MT``) returning samples of the shared contract.

    Args:
        root: the data root holding ``PASCAL_MT`` (or that folder itself); default :func:`tsn.data.paths.data_root`.
        split: ``"train"``, ``"val"``, a list such as ``["train", "val"]``, or ``"val_new"`` / ``"test_new"`` (the
            seism edge-benchmark halves of val, when their lists are placed in ``ImageSets/Context``).
        tasks: task names (aliases allowed) or specs; ``None`` = all five. With ``["human_parts"]`` alone,
            images without a person are dropped, as in the reference's parts training and evaluation.
        transform: applied to each raw sample (see :func:`tsn.data.transforms.build_transforms`).
        parts_cache_dir: where the person lists are cached; default ``cache_dir("pascal_parts")/<root hash>``.
        check_files: check at construction that every file the enabled tasks read exists.
    """

    name = "pascal_context"
    folder = "PASCAL_MT"
    split_folder = "ImageSets/Context"
    files: ClassVar[Mapping[str, str]] = {
        "image": "JPEGImages/{}.jpg",
        "label_map": "pascal-context/trainval/{}.mat",
        "semseg": "semseg/pascal-context/{}.png",
        "semseg_voc12": "semseg/VOC12/{}.png",
        "human_parts": "human_parts/{}.mat",
        "normals": "normals_distill/{}.png",
        "saliency": "sal_distill/{}.png",
    }
    sources: ClassVar[Mapping[str, tuple[str, ...]]] = {"edges": ("label_map",), "normals": ("normals", "label_map")}
    optional_splits: ClassVar[Mapping[str, str]] = {
        split: f"{split} is the seism edge-benchmark half of val: copy seism's "
        f"src/gt_wrappers/gt_sets/PASCALContext/{split}.txt into ImageSets/Context"
        for split in ("val_new", "test_new")
    }

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str | Sequence[str] = "val",
        tasks: Sequence[str | TaskSpec] | None = None,
        transform: Transform | None = None,
        parts_cache_dir: str | os.PathLike[str] | None = None,
        check_files: bool = True,
    ) -> None:
        super().__init__(root, split, tasks, transform, check_files)
        self._parts_cache_dir = Path(parts_cache_dir) if parts_cache_dir is not None else None
        self.has_person: dict[str, bool] = {}
        if "human_parts" in self.task_names:
            self.has_person = {i: PERSON_CLASS in classes for i, classes in self._person_lists().items()}
            if self.task_names == ("human_parts",):
                self.ids = [i for i in self.ids if self.has_person[i]]

    @functools.cached_property
    def _voc12_files(self) -> frozenset[str]:
        """Names in ``semseg/VOC12`` (those PNGs take priority): one folder listing instead of a stat per image."""
        folder = self.root / Path(self.files["semseg_voc12"]).parent
        return frozenset(os.listdir(folder)) if folder.is_dir() else frozenset()

    def path(self, kind: str, image_id: str) -> Path:
        if kind == "semseg" and f"{image_id}.png" in self._voc12_files:
            kind = "semseg_voc12"
        return super().path(kind, image_id)

    @property
    def parts_cache_file(self) -> Path:
        """The person-list cache of this split combination (e.g. ``trainval.txt``), as the reference names it."""
        folder = self._parts_cache_dir
        if folder is None:
            folder = cache_dir("pascal_parts") / hashlib.sha1(str(self.root).encode()).hexdigest()[:16]
        return folder / f"{''.join(self.splits)}.txt"

    def edge_eval_ground_truth(self, image_id: str) -> np.ndarray:
        """The raw ``LabelMap`` of ``image_id``, from which the seism edge benchmark builds its boundaries."""
        return read_mat(self.path("label_map", image_id), "LabelMap")

    def read_labels(self, image_id: str) -> dict[str, np.ndarray]:
        label_map = functools.cache(functools.partial(self.edge_eval_ground_truth, image_id))
        readers = {
            "semseg": lambda: read_label_png(self.path("semseg", image_id)).astype(np.float32),
            "human_parts": lambda: self._human_parts(image_id),
            "edges": lambda: label_boundaries(label_map()),
            "normals": lambda: self._normals(image_id, label_map()),
            "saliency": lambda: binarize_saliency(read_label_png(self.path("saliency", image_id))),
        }
        return {name: readers[name]() for name in self.task_names}

    def _normals(self, image_id: str, label_map: np.ndarray) -> np.ndarray:
        path = self.path("normals", image_id)
        normals = rgb_to_normals(read_image(path))
        if normals.shape[:2] != label_map.shape:
            raise TsnError(f"{path} is {normals.shape[:2]} but its LabelMap is {label_map.shape}; "
                           "the dataset is corrupt, download it again")
        return mask_normals(normals, label_map)

    def _human_parts(self, image_id: str) -> np.ndarray:
        path = self.path("human_parts", image_id)
        anno, has_person = read_mat(path, "anno"), self.has_person[image_id]
        try:
            return human_parts_label(anno, has_person)
        except KeyError as error:  # a part name outside the table (the reference fails the same way)
            raise TsnError(f"{path} has an unknown PASCAL-Part part name {error.args[0]!r}; "
                           f"known: {', '.join(PART_IDS)}") from None

    def _read_person_list(self, path: Path) -> dict[str, list[int]] | None:
        """A cached person list if it exists, parses and covers exactly this split's images, else None."""
        try:
            lists = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return lists if isinstance(lists, dict) and set(lists) == set(self.ids) else None

    def _person_lists(self) -> dict[str, list[int]]:
        """Image id -> object classes (see :func:`object_classes`), from the cache or computed and cached.

        A list shipped in the dataset's ``ImageSets/Parts`` is used as well, as the reference would.
        """
        cache = self.parts_cache_file
        for candidate in (cache, self.root / "ImageSets" / "Parts" / cache.name):
            lists = self._read_person_list(candidate)
            if lists is not None:
                return lists
        lists = {}
        for image_id in tqdm(self.ids, desc=f"Listing PASCAL-Part persons ({cache.stem})", leave=False,
                             disable=None if progress_enabled() else True):
            lists[image_id] = object_classes(read_mat(self.path("human_parts", image_id), "anno"))
        atomic_write_text(cache, _person_list_json(self.ids, lists))
        return lists
