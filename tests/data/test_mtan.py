"""NYUv2-13 and Cityscapes-7 in MTAN's .npy layout: the loader, LibMTL's metrics (hand-computed golden values),
the training preset on the fixture, and `tsn evaluate` reporting LibMTL's numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fixture_datasets import MTAN_LENGTHS, make_mtan_fixture
from tsn.cli import main
from tsn.data import build_dataset
from tsn.data.mtan import Cityscapes, NYUv2
from tsn.dataset_catalog import get_dataset
from tsn.errors import TsnError
from tsn.metrics.libmtl import LibmtlDepthMetric, LibmtlNormalsMetric
from tsn.metrics.segmentation import SegmentationMetric
from tsn.tasks import IGNORE_INDEX
from tsn.training import load_config, train

SIZE = (32, 48)


@pytest.fixture
def mtan_root(tmp_path: Path) -> Path:
    """The data root holding tiny ``nyuv2`` and ``cityscapes`` folders."""
    make_mtan_fixture(tmp_path / "data", "nyuv2", SIZE)
    make_mtan_fixture(tmp_path / "data", "cityscapes", SIZE, seed=1)
    return tmp_path / "data"


# ------------------------------------------------------------------------------------------------------ loader
def test_nyuv2_samples_follow_the_shared_contract(mtan_root: Path) -> None:
    dataset = build_dataset("NYUv2", "val", root=mtan_root)
    assert isinstance(dataset, NYUv2) and len(dataset) == MTAN_LENGTHS["val"]
    assert [spec.channels for spec in dataset.tasks] == [13, 1, 3]
    assert dataset.tasks[0].class_names[0] == "bed"
    sample = dataset[1]
    image, semseg, depth, normals = (sample[k] for k in ("image", "semseg", "depth", "normals"))
    assert image.dtype == np.float32 and image.shape == (*SIZE, 3)
    assert image[0, 0].tolist() == [0, 127.5, 255]  # 255 x of (0, 0.5, 1): LibMTL's float image, not rounded
    raw = np.load(mtan_root / "nyuv2/val/image/1.npy")
    # ToTensor's / 255 gives LibMTL's float image back within one float32 rounding
    back = torch.from_numpy(image).float() / 255.0
    assert (back.numpy() - raw).__abs__().max() <= np.spacing(np.float32(1.0)) / 2
    assert semseg.shape == SIZE and (semseg[0] == IGNORE_INDEX).all()  # MTAN's -1
    assert (semseg[1:, : SIZE[1] // 2] == 1).all() and (semseg[1:, SIZE[1] // 2 :] == 1).all()
    assert depth.shape == SIZE and depth[0, 0] == 0 and depth[0, 1] == np.float32(1 + 1 / SIZE[1])
    assert normals.shape == (*SIZE, 3) and normals[0, 0].tolist() == [0, 0, 0] and normals[1, 1].tolist() == [0, 0, 1]
    assert sample["meta"] == {"id": "val_1", "size": SIZE, "dataset": "nyuv2_13"}


def test_cityscapes_has_two_tasks_and_both_splits_combine(mtan_root: Path) -> None:
    dataset = build_dataset("cityscapes", ["train", "val"], tasks=["seg"], root=mtan_root)
    assert isinstance(dataset, Cityscapes) and len(dataset) == sum(MTAN_LENGTHS.values())
    assert set(dataset[0]) == {"image", "semseg", "meta"} and dataset[4]["meta"]["id"] == "val_1"
    assert [spec.name for spec in get_dataset("cityscapes_7").task_specs()] == ["semseg", "depth"]
    with pytest.raises(TsnError, match="has no task 'normals'"):
        build_dataset("cityscapes_7", "val", tasks=["normals"], root=mtan_root)


def test_bad_folders_are_one_line_errors(mtan_root: Path) -> None:
    folder = mtan_root / "nyuv2" / "val"
    (folder / "depth" / "1.npy").unlink()
    with pytest.raises(TsnError, match=r"incomplete: missing .*depth/1\.npy") as error:
        build_dataset("nyuv2_13", "val", root=mtan_root)
    assert "\n" not in str(error.value)
    (folder / "image" / "1.npy").rename(folder / "image" / "5.npy")
    with pytest.raises(TsnError, match=r"no 1\.npy; files must be numbered from 0 without gaps"):
        build_dataset("nyuv2_13", "val", tasks=["semseg"], root=mtan_root)
    np.save(folder / "label" / "0.npy", np.full(SIZE, 13.0, np.float32))
    (folder / "image" / "5.npy").rename(folder / "image" / "1.npy")
    with pytest.raises(TsnError, match="holds class 13, but semseg has 13 classes"):
        build_dataset("nyuv2_13", "val", tasks=["semseg"], root=mtan_root)[0]
    with pytest.raises(TsnError, match=r"nyuv2 not found in .*github\.com/lorenmt/mtan"):
        build_dataset("nyuv2_13", "val", root=mtan_root / "elsewhere")
    with pytest.raises(TsnError, match="has no split 'test'"):
        build_dataset("nyuv2_13", "test", root=mtan_root)


def test_libmtl_augmentation_scales_depth_and_flips_normals(mtan_root: Path) -> None:
    plain = build_dataset("nyuv2_13", "train", root=mtan_root)[0]
    depths = set(np.unique(plain["depth"]).tolist())
    scales, flips = set(), 0
    for seed in range(12):
        torch.manual_seed(seed)
        sample = build_dataset("nyuv2_13", "train", root=mtan_root, augment=True)[0]
        assert sample["image"].dtype == np.float32 and sample["image"].shape == (*SIZE, 3)
        assert set(np.unique(sample["semseg"]).tolist()) <= {0.0, 1.0, float(IGNORE_INDEX)}
        # nearest depth divided by the scale: every value is an original one over 1, 1.2 or 1.5
        found = [s for s in (1.0, 1.2, 1.5) if all(any(math.isclose(v * s, d, rel_tol=1e-6, abs_tol=1e-9)
                                                          for d in depths) for v in np.unique(sample["depth"]))]
        assert found, seed
        scales.add(found[-1])
        z = sample["normals"][..., 2]
        flips += int(np.isclose(sample["normals"][..., 0], 0).all() and (z >= 0).all())
    assert len(scales) > 1 and flips == 12  # normals (0, 0, 1): the negated x stays 0


# ----------------------------------------------------------------------------------------------------- metrics
def test_libmtl_depth_metric_pools_valid_pixels() -> None:
    exact = LibmtlDepthMetric(ignore_index=IGNORE_INDEX)
    exact.update(np.array([[3.0]]), np.array([[IGNORE_INDEX]]))  # a batch without a valid pixel: NaN, as LibMTL
    exact.update(np.array([[5.0]]), np.array([[4.0]]))
    assert math.isnan(exact.compute()["abs_err"]) and exact.compute()["empty_batches"] == 1
    metric = LibmtlDepthMetric(ignore_index=IGNORE_INDEX, exact=False)  # the NaN-free variant skips it
    metric.update(np.array([[1.0, 2.0], [4.0, 9.0]]), np.array([[2.0, 2.0], [0.0, 3.0]]))  # (1,0) has no depth
    metric.update(np.array([[3.0]]), np.array([[IGNORE_INDEX]]))  # an image without a valid pixel
    metric.update(np.array([[5.0]]), np.array([[4.0]]))
    result = metric.compute()
    # errors 1, 0, 6, 1 over labels 2, 2, 3, 4: abs (1 + 0 + 6 + 1) / 4, rel (1/2 + 0 + 2 + 1/4) / 4
    assert result["abs_err"] == 2.0 and result["rel_err"] == pytest.approx(2.75 / 4, abs=1e-15)
    assert result["rmse"] == pytest.approx(math.sqrt(38 / 4), abs=1e-15)
    assert (result["n_pixels"], result["n_images"], result["n_skipped"]) == (4, 2, 1)


def test_libmtl_normals_metric_angles() -> None:
    metric = LibmtlNormalsMetric(ignore_index=IGNORE_INDEX, exact=False)
    label = np.zeros((3, 1, 4))
    label[:, 0, 0] = (0, 0, 1)
    label[:, 0, 1] = (0, 0, 1)
    label[:, 0, 2] = (1, 0, 0)  # pixel 3 stays all-zero: invalid
    pred = np.zeros((3, 1, 4))
    pred[:, 0, 0] = (0, 0, 5)  # 0 degrees once normalised
    pred[:, 0, 1] = (1, 0, 1)  # 45 degrees
    pred[:, 0, 2] = (0, 2, 0)  # 90 degrees
    pred[:, 0, 3] = (1, 1, 1)
    metric.update(pred, label)
    result = metric.compute()
    assert result["mean"] == result["mErr"] == pytest.approx(45.0, abs=1e-12)
    assert result["median"] == pytest.approx(45.0, abs=1e-12) and result["n_pixels"] == 3
    assert result["within_11.25"] == pytest.approx(100 / 3) and result["within_30"] == pytest.approx(100 / 3)
    assert result["protocol"] == "libmtl-nan-free"


def test_segmentation_metric_is_libmtls_confusion_matrix() -> None:
    metric = SegmentationMetric(3, ignore_index=IGNORE_INDEX)
    metric.update(np.array([[0, 1, 1, 2]]), np.array([[0, 1, 2, IGNORE_INDEX]]))
    metric.update(np.array([[2, 2]]), np.array([[2, 0]]))
    result = metric.compute()
    # confusion (label rows): 0 -> {0: 1, 2: 1}, 1 -> {1: 1}, 2 -> {1: 1, 2: 1}; IoU 1/2, 1/2, 1/3; acc 3/5
    assert result["mIoU"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 3) / 3, abs=1e-15)
    assert result["pixel_acc"] == pytest.approx(3 / 5, abs=1e-15)


# -------------------------------------------------------------------------------------- preset and evaluation
def test_the_nyuv2_preset_trains_and_evaluate_reports_libmtl_metrics(
    mtan_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config("tsn_r18_nyuv2", [
        f"data.root={mtan_root}", "data.size=64", "data.num_workers=0", "batch_size=2", "max_steps=1",
        "model.backbone=mobilenetv3_small_050", "model.pretrained=false", "model.decoder_channels=[16, 8, 8, 8, 8]",
    ])
    result = train(config, tmp_path / "run", progress=False)
    assert result.status == "finished" and result.step == 1
    assert set(result.validation["metrics"]) == {"semseg", "depth", "normals"}

    out = tmp_path / "eval.json"
    argv = ["evaluate", "--checkpoint", str(result.checkpoint), "--dataset", "nyuv2", "--data-root", str(mtan_root),
            "--size", "64", "--workers", "0", "--device", "cpu", "-o", str(out)]
    assert main(argv) == 0
    record = json.loads(out.read_text())
    assert record["dataset"]["name"] == "nyuv2_13" and record["n_images"]["semseg"] == MTAN_LENGTHS["val"]
    tasks = record["tasks"]
    assert {"mIoU", "pixel_acc"} <= set(tasks["semseg"])
    assert tasks["depth"]["protocol"] == "libmtl" and {"abs_err", "rel_err"} <= set(tasks["depth"])
    assert tasks["normals"]["protocol"] == "libmtl"
    assert {"mean", "median", "within_11.25", "within_22.5", "within_30"} <= set(tasks["normals"])
    assert tasks["depth"]["n_pixels"] == MTAN_LENGTHS["val"] * (SIZE[0] * SIZE[1] - 1)
    assert "as floats" in record["protocols"]["scoring"] and record["protocol"]["name"] == "libmtl"
    markdown = out.with_suffix(".md").read_text()
    assert "Reported metrics:" in markdown and "abs_err" in markdown and "within_22.5" in markdown
