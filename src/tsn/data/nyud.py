"""NYUD-v2 multi-task (``NYUD_MT``, the ASTMT / TSNs version), decoded exactly as the reference loader does.

Four tasks: semseg (41 classes, class 0 trained and scored as a real class), depth, normals and edges. Layout,
per image id::

    gt_sets/<split>.txt          split lists (train 795, val 654)
    images/<id>.jpg              image
    edge/<id>.png                edges, grey 0..255 -> /255 without thresholding
    segmentation/<id>.mat        'segmentation', classes 0..40
    normals/<id>.jpg             RGB-encoded normals (JPEG)
    depth/<id>.mat               'depth', metres, 0 = invalid

The MTL-survey repackaging of NYUD_MT (same folder name, ``.npy`` labels, 40 classes) is a different dataset; it
is recognised and refused with a message rather than decoded wrongly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from tsn.data.readers import FolderDataset, Transform, read_image, read_label_png, read_mat, rgb_to_normals
from tsn.errors import TsnError
from tsn.tasks import TaskSpec

__all__ = ["NYUD"]


class NYUD(FolderDataset):
    """NYUD-v2 multi-task dataset (``<root>/NYUD_MT``) returning samples of the shared contract.

    Args:
        root: the data root holding ``NYUD_MT`` (or that folder itself); default :func:`tsn.data.paths.data_root`.
        split: ``"train"``, ``"val"``, a list such as ``["train", "val"]``, or ``"test_new"`` (the edge-benchmark
            list, when placed in ``gt_sets``).
        tasks: task names (aliases allowed) or specs; ``None`` = all four.
        transform: applied to each raw sample (see :func:`tsn.data.transforms.build_transforms`).
        check_files: check at construction that every file the enabled tasks read exists.
    """

    name = "nyud"
    folder = "NYUD_MT"
    split_folder = "gt_sets"
    files: ClassVar[Mapping[str, str]] = {
        "image": "images/{}.jpg",
        "edges": "edge/{}.png",
        "semseg": "segmentation/{}.mat",
        "normals": "normals/{}.jpg",
        "depth": "depth/{}.mat",
    }
    optional_splits: ClassVar[Mapping[str, str]] = {
        "test_new": "test_new is the edge-benchmark list (the 654 val ids): copy it into gt_sets or use split 'val'"
    }

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str | Sequence[str] = "val",
        tasks: Sequence[str | TaskSpec] | None = None,
        transform: Transform | None = None,
        check_files: bool = True,
    ) -> None:
        super().__init__(root, split, tasks, transform, check_files)

    def edge_eval_ground_truth(self, image_id: str) -> np.ndarray:
        """The raw edge PNG of ``image_id`` (uint8), from which the edge benchmark builds its boundaries."""
        return read_label_png(self.path("edges", image_id))

    def read_labels(self, image_id: str) -> dict[str, np.ndarray]:
        readers = {
            "semseg": lambda: read_mat(self.path("semseg", image_id), "segmentation").astype(np.float32),
            "depth": lambda: read_mat(self.path("depth", image_id), "depth").astype(np.float32),
            "normals": lambda: rgb_to_normals(read_image(self.path("normals", image_id))).astype(np.float32),
            "edges": lambda: self.edge_eval_ground_truth(image_id).astype(np.float32) / 255.0,
        }
        return {name: readers[name]() for name in self.task_names}

    def _check_files(self) -> None:
        try:
            super()._check_files()
        except TsnError:
            survey_edge = self.root / "edge" / f"{self.ids[0]}.npy"
            if survey_edge.exists():
                raise TsnError(f"{self.root} is the MTL-survey NYUD_MT (.npy labels such as {survey_edge}), which "
                               f"TSNs does not use; {self._download_hint()}") from None
            raise
