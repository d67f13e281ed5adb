"""The dataset registry: names, aliases, the built-in datasets' facts, and registration of a user dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import Dataset

from tsn.data import build_dataset, dataset_options
from tsn.data.download import get_source
from tsn.dataset_catalog import (
    DatasetSpec,
    canonical_dataset_name,
    dataset_tasks,
    downloadable_datasets,
    get_dataset,
    list_datasets,
    register_dataset,
)
from tsn.errors import TsnError
from tsn.models import model_config
from tsn.tasks import PAPER_TASK_ORDER


def test_names_and_aliases() -> None:
    assert list_datasets()[:5] == ["pascal_context", "nyud", "synthetic", "nyuv2_13", "cityscapes_7"]
    assert canonical_dataset_name(" PASCAL-Context ") == "pascal_context"
    assert canonical_dataset_name("NYUv2") == "nyuv2_13" and canonical_dataset_name("cityscapes") == "cityscapes_7"
    with pytest.raises(TsnError, match="unknown dataset 'coco'; known: pascal_context, nyud") as error:
        get_dataset("coco")
    assert "\n" not in str(error.value)


def test_built_in_facts() -> None:
    assert tuple(get_dataset("pascal_context").tasks) == PAPER_TASK_ORDER
    assert [(s.name, s.channels) for s in dataset_tasks("nyud")] == [("semseg", 41), ("depth", 1), ("normals", 3),
                                                                    ("edges", 1)]
    assert model_config("tsn_r18_nyuv2").task_channels == {"semseg": 13, "depth": 1, "normals": 3}
    assert model_config("tsn_r18_cityscapes").task_channels == {"semseg": 7, "depth": 1}
    assert downloadable_datasets() == ["nyud", "pascal_context"]
    assert get_source("pascal").folder == "PASCAL_MT"
    assert get_dataset("synthetic").generated and get_dataset("synthetic").evaluation.split == "test"
    assert get_dataset("nyuv2_13").eval_size == (288, 384) and get_dataset("cityscapes_7").eval_size == (128, 256)
    assert dataset_options("nyuv2_13") == {"augment": bool}


class _Flat(Dataset):
    """A user dataset: one task, every label 0."""

    def __init__(self, root=None, split="val", tasks=None, transform=None, length: int = 2) -> None:
        self.specs, self.length, self.transform = get_dataset("user_flat").task_specs(tasks), length, transform

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        sample = {"image": np.zeros((8, 8, 3), np.uint8), "semseg": np.zeros((8, 8), np.float32),
                  "meta": {"id": str(index), "size": (8, 8), "dataset": "user_flat"}}
        return self.transform(sample) if self.transform else sample


def test_a_user_dataset_is_one_registration(tmp_path: Path) -> None:
    spec = DatasetSpec(name="user_flat", title="Flat", tasks={"semseg": 2}, loader=f"{__name__}:_Flat",
                       class_names={"semseg": ("floor", "wall")}, aliases=("flat",))
    if "user_flat" not in list_datasets():
        register_dataset(spec)
    dataset = build_dataset("Flat", "val", length=3)
    assert len(dataset) == 3 and dataset[0]["meta"]["dataset"] == "user_flat"
    assert dataset_tasks("flat")[0].class_names == ("floor", "wall")
    with pytest.raises(TsnError, match="option 'size' is not an option of the user_flat dataset"):
        build_dataset("flat", size=3)
    with pytest.raises(TsnError, match="'user_flat' is already registered"):
        register_dataset(spec)
    with pytest.raises(TsnError, match="dataset 'NYUv2' is already registered \\(an alias of 'nyuv2_13'\\)"):
        register_dataset(DatasetSpec(name="other", title="x", tasks={"depth": 1}, loader="x:y", aliases=("NYUv2",)))
    with pytest.raises(TsnError, match="class names of 'semseg' must be one per channel"):
        DatasetSpec(name="bad", title="x", tasks={"semseg": 3}, loader="x:y", class_names={"semseg": ("a",)})
