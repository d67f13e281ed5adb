"""NYUD_MT (ASTMT / TSNs version) loader on the fixture dataset: layout, exact decoding, resizing, errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from error_model import assert_close_float32
from fixture_datasets import NYUD_SMALL_LABELS_ID, NYUD_TRAIN_IDS, NYUD_VAL_IDS, Layout, image_size
from tsn.data import NYUD, build_dataset, build_transforms
from tsn.errors import TsnError

ALL_IDS = NYUD_TRAIN_IDS + NYUD_VAL_IDS


def sample_of(root: Path, image_id: str, **kwargs) -> dict:
    dataset = NYUD(root, ["train", "val"], **kwargs)
    return dataset[dataset.ids.index(image_id)]


def test_split_lengths(nyud_root: Path) -> None:
    assert len(NYUD(nyud_root, "train")) == 6
    assert len(NYUD(nyud_root, "val")) == 4
    assert NYUD(nyud_root.parent, ["val", "train"]).ids == list(ALL_IDS)


def test_sample_contract(nyud_root: Path) -> None:
    sample = NYUD(nyud_root, "train")[2]
    h, w = image_size(2)
    assert set(sample) == {"image", "semseg", "depth", "normals", "edges", "meta"}
    assert sample["image"].shape == (h, w, 3) and sample["image"].dtype == np.uint8
    assert sample["normals"].shape == (h, w, 3)
    assert all(sample[t].dtype == np.float32 and sample[t].shape[:2] == (h, w) for t in ("semseg", "depth", "edges"))
    assert sample["meta"] == {"id": NYUD_TRAIN_IDS[2], "size": (h, w), "dataset": "nyud"}


def test_exact_label_values(nyud_root: Path) -> None:
    image_id = NYUD_TRAIN_IDS[0]
    layout = Layout(*image_size(0))
    sample = sample_of(nyud_root, image_id)
    semseg = layout.halves(0, 40).astype(np.float32)
    semseg[0] = 7
    np.testing.assert_array_equal(sample["semseg"], semseg)  # 41 classes: 0 kept as a class, no shift
    depth = np.broadcast_to(np.linspace(1.0, 5.0, layout.w, dtype=np.float32), (layout.h, layout.w)).copy()
    depth[0, 0] = 0.0
    np.testing.assert_array_equal(sample["depth"], depth)  # as stored, 0 = invalid kept
    edges = np.zeros((layout.h, layout.w), dtype=np.float32)
    edges[:, layout.boundary] = 1.0
    edges[1, 1] = np.float32(100) / 255  # grey values pass through: no threshold
    assert_close_float32(sample["edges"], edges, reduction=1, sides=1)  # one float32 division by 255
    # JPEG-encoded (128, 64, 255) -> 2 x / 255 - 1 (JPEG may move a channel by a grey level or two)
    np.testing.assert_allclose(sample["normals"], np.broadcast_to([1 / 255, -0.498, 1.0], sample["normals"].shape),
                               atol=2 * 2 / 255)


def test_labels_smaller_than_the_image_are_resized(nyud_root: Path) -> None:
    index = ALL_IDS.index(NYUD_SMALL_LABELS_ID)
    h, w = image_size(index)
    sample = sample_of(nyud_root, NYUD_SMALL_LABELS_ID)
    small = Layout(h // 2, w // 2).halves(0, 40).astype(np.float32)
    small[0] = 7
    # nearest, 2x: every stored pixel becomes a 2 x 2 block
    np.testing.assert_array_equal(sample["semseg"], small.repeat(2, axis=0).repeat(2, axis=1))
    assert sample["normals"].shape == (h, w, 3)
    np.testing.assert_allclose(sample["normals"][h // 2, w // 2], [1 / 255, -0.498, 1.0], atol=0.02)  # bicubic


def test_eval_transform_marks_zero_depth_ignored(nyud_root: Path) -> None:
    sample = NYUD(nyud_root, "val", transform=build_transforms("eval"))[0]
    assert sample["image"].shape == (3, 512, 512) and sample["normals"].shape == (3, 512, 512)
    for task in ("semseg", "depth", "edges"):
        assert sample[task].shape == (1, 512, 512)
    assert sample["depth"][0, 0, 0] == 255 and sample["depth"][0, 511, 511] == pytest.approx(5.0)
    assert not (sample["normals"] == 255).any()  # 8-bit normals are never exactly the zero vector
    assert set(np.unique(sample["semseg"].numpy())) == {0.0, 7.0, 40.0}


def test_edge_eval_ground_truth_is_the_raw_png(nyud_root: Path) -> None:
    ground_truth = NYUD(nyud_root, "val").edge_eval_ground_truth(NYUD_VAL_IDS[0])
    assert ground_truth.dtype == np.uint8 and set(np.unique(ground_truth)) == {0, 100, 255}


def test_missing_file_and_split_errors(nyud_root: Path, tmp_path: Path) -> None:
    with pytest.raises(TsnError, match="tsn download nyud --root DIR"):
        NYUD(tmp_path / "elsewhere")
    with pytest.raises(TsnError, match=re.escape(f"split list {nyud_root / 'gt_sets/test.txt'} is missing")):
        NYUD(nyud_root, "test")
    missing = nyud_root / f"depth/{NYUD_VAL_IDS[3]}.mat"
    missing.unlink()
    with pytest.raises(TsnError, match=re.escape(f"NYUD_MT is incomplete: missing {missing};")):
        NYUD(nyud_root, "val")
    assert len(NYUD(nyud_root, "val", tasks=["semseg", "edges"])) == 4


def test_mtl_survey_layout_is_recognised(nyud_root: Path) -> None:
    for image_id in NYUD_VAL_IDS:
        (nyud_root / f"edge/{image_id}.png").rename(nyud_root / f"edge/{image_id}.npy")
    with pytest.raises(TsnError, match="MTL-survey NYUD_MT"):
        NYUD(nyud_root, "val")


def test_corrupt_mat_names_the_file(nyud_root: Path) -> None:
    path = nyud_root / f"segmentation/{NYUD_VAL_IDS[0]}.mat"
    path.write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(TsnError, match=re.escape(str(path))) as error:
        NYUD(nyud_root, "val")[0]
    assert "\n" not in str(error.value)


def test_build_dataset_by_name(nyud_root: Path) -> None:
    dataset = build_dataset("nyud", ["train", "val"], tasks=["depth"], root=nyud_root)
    assert isinstance(dataset, NYUD) and len(dataset) == 10 and dataset.task_names == ("depth",)
