"""PASCAL_MT loader on the fixture dataset: layout, exact decoding per task, parts cache, errors, `tsn data show`."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from error_model import assert_close_float32
from fixture_datasets import (
    PARTS_CASES,
    PASCAL_TRAIN_IDS,
    PASCAL_VAL_IDS,
    PERSON_LISTS,
    VOC12_ID,
    Layout,
    image_size,
)
from tsn.cli import main
from tsn.data import build_dataset, build_transforms
from tsn.data.pascal_context import VALID_NORMAL_IDS, PascalContext, label_boundaries
from tsn.errors import TsnError

ALL_IDS = PASCAL_TRAIN_IDS + PASCAL_VAL_IDS
NORMAL_Y = 2 * 128 / 255 - 1  # G = 128 -> 0.0039, not 0: the distilled normals are not renormalised


def sample_of(root: Path, image_id: str, **kwargs) -> dict:
    split = "val" if image_id in PASCAL_VAL_IDS else "train"
    dataset = PascalContext(root, split, **kwargs)
    return dataset[dataset.ids.index(image_id)]


def layout_of(image_id: str) -> Layout:
    return Layout(*image_size(ALL_IDS.index(image_id)))


# ------------------------------------------------------------------------------------------- splits and contract
def test_split_lengths_and_combined_splits(pascal_root: Path) -> None:
    assert len(PascalContext(pascal_root, "train")) == 6
    assert len(PascalContext(pascal_root, "val")) == 4
    both = PascalContext(pascal_root, ["val", "train"])
    assert both.splits == ["train", "val"] and both.ids == list(ALL_IDS)


def test_root_may_be_the_data_root_the_folder_or_the_environment(
    pascal_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert PascalContext(pascal_root.parent).root == pascal_root
    assert PascalContext(pascal_root).root == pascal_root
    monkeypatch.setenv("TSN_DATA_ROOT", str(pascal_root.parent))
    assert PascalContext().root == pascal_root


def test_sample_contract_and_meta_size(pascal_root: Path) -> None:
    dataset = PascalContext(pascal_root, ["train", "val"])
    for index in (0, 5, 9):
        sample = dataset[index]
        h, w = image_size(index)
        assert set(sample) == {"image", "semseg", "human_parts", "edges", "normals", "saliency", "meta"}
        assert sample["image"].shape == (h, w, 3) and sample["image"].dtype == np.uint8
        assert sample["normals"].shape == (h, w, 3)
        for task in ("semseg", "human_parts", "edges", "normals", "saliency"):
            assert sample[task].dtype == np.float32 and sample[task].shape[:2] == (h, w)
        assert sample["meta"] == {"id": ALL_IDS[index], "size": (h, w), "dataset": "pascal_context"}


def test_task_subset_and_aliases(pascal_root: Path) -> None:
    sample = PascalContext(pascal_root, "val", tasks=["sal", "edge"])[0]
    assert set(sample) == {"image", "saliency", "edges", "meta"}
    with pytest.raises(TsnError, match="no task 'depth'"):
        PascalContext(pascal_root, "val", tasks=["depth"])


# ------------------------------------------------------------------------------------------- edges
def test_edges_are_the_thinned_nonzero_laplacian() -> None:
    label_map = np.ones((6, 8), dtype=np.uint16)
    label_map[:, 4:] = 2
    # Laplacian: +1 in column 3, -1 in column 4, 0 elsewhere (reflect-101: no edge at the frame); thinning the
    # two-pixel band leaves column 3 (its top end is eroded away).
    expected = np.zeros((6, 8), dtype=np.float32)
    expected[1:, 3] = 1
    np.testing.assert_array_equal(label_boundaries(label_map), expected)
    assert not label_boundaries(np.full((5, 7), 440, dtype=np.uint16)).any()  # a constant map has no frame edge


@settings(max_examples=30, deadline=None)
@given(arrays(np.uint16, st.tuples(st.integers(3, 12), st.integers(3, 12)), elements=st.integers(0, 20)),
       st.integers(0, 400))
def test_edges_depend_only_on_label_differences(label_map: np.ndarray, offset: int) -> None:
    edges = label_boundaries(label_map)
    assert edges.dtype == np.float32 and set(np.unique(edges)) <= {0.0, 1.0}
    np.testing.assert_array_equal(label_boundaries(label_map + np.uint16(offset)), edges)


def test_fixture_edges_one_pixel_wide_and_laplacian_plus(pascal_root: Path) -> None:
    image_id = PASCAL_VAL_IDS[0]
    layout = layout_of(image_id)
    edges = sample_of(pascal_root, image_id, tasks=["edges"])["edges"]
    r, c = layout.plus
    for row in range(9, layout.h):  # below the sky square: the straight wall/person boundary only
        expected = [layout.boundary - 1] + ([c] if row in (r - 1, r + 1) else [c - 1, c + 1] if row == r else [])
        assert list(np.flatnonzero(edges[row])) == expected
    # The plus centre differs from all 4 neighbours, yet 1 + 1 + 3 + 3 == 4 * 2: no edge there.
    assert edges[r, c] == 0


# ------------------------------------------------------------------------------------------- semseg, saliency
def test_semseg_values_unchanged(pascal_root: Path) -> None:
    image_id = PASCAL_TRAIN_IDS[0]
    layout = layout_of(image_id)
    semseg = sample_of(pascal_root, image_id, tasks=["semseg"])["semseg"]
    np.testing.assert_array_equal(semseg, layout.halves(0, 15).astype(np.float32))


def test_voc12_palette_png_has_priority_and_indices_are_read(pascal_root: Path) -> None:
    layout = layout_of(VOC12_ID)
    assert Image.open(pascal_root / f"semseg/VOC12/{VOC12_ID}.png").mode == "P"
    semseg = sample_of(pascal_root, VOC12_ID, tasks=["semseg"])["semseg"]
    expected = layout.halves(0, 12).astype(np.float32)
    expected[:3] = 255  # ignore stays 255, not the palette's white
    np.testing.assert_array_equal(semseg, expected)


def test_saliency_threshold_is_strict_half(pascal_root: Path) -> None:
    image_id = PASCAL_VAL_IDS[2]
    layout = layout_of(image_id)
    saliency = sample_of(pascal_root, image_id, tasks=["saliency"])["saliency"]
    expected = layout.halves(0, 1).astype(np.float32)  # 127 -> 0, 128 -> 1
    expected[0], expected[-1] = 0, 1  # grey 0 and 255
    np.testing.assert_array_equal(saliency, expected)


# ------------------------------------------------------------------------------------------- normals
def test_valid_normal_ids_constant() -> None:
    assert len(VALID_NORMAL_IDS) == 170 and len(set(VALID_NORMAL_IDS.tolist())) == 170
    assert {440, 158, 284, 65, 113, 427} <= set(VALID_NORMAL_IDS.tolist())
    assert not {360, 187, 420, 44, 324} & set(VALID_NORMAL_IDS.tolist())


def test_normals_decoded_and_masked_by_label_map(pascal_root: Path) -> None:
    image_id = PASCAL_TRAIN_IDS[3]
    layout = layout_of(image_id)
    normals = sample_of(pascal_root, image_id, tasks=["normals"])["normals"]
    assert normals.dtype == np.float32
    # 2 * v / 255 - 1 in float32: 2 roundings (depth) against the exact value
    assert_close_float32(normals[-1, 0], [-1.0, NORMAL_Y, 1.0], reduction=1, depth=2, sides=1)  # R 0, wall
    assert_close_float32(normals[-1, -1], [1.0, NORMAL_Y, 1.0], reduction=1, depth=2, sides=1)  # R 255, person
    zero = np.all(normals == 0, axis=-1)
    label_map = layout.label_map()
    np.testing.assert_array_equal(zero, ~np.isin(label_map, VALID_NORMAL_IDS))
    assert zero[2:8, 2:8].all() and zero.sum() == 36 + 3  # sky square, plus centre (2) and up/down arms (1)


# ------------------------------------------------------------------------------------------- human parts
def test_parts_cache_content_format_and_location(pascal_root: Path, tmp_path: Path) -> None:
    dataset = PascalContext(pascal_root, "val")
    cache = dataset.parts_cache_file
    assert cache.parent.parent == tmp_path / "cache" / "pascal_parts" and cache.name == "val.txt"
    lines = cache.read_text().splitlines()
    assert lines[0] == "{" and lines[-1] == "}"
    assert lines[1] == f'\t"{PASCAL_VAL_IDS[0]}": [15, 8],'
    assert json.loads(cache.read_text()) == {i: PERSON_LISTS[i] for i in PASCAL_VAL_IDS}
    assert os.listdir(pascal_root / "ImageSets/Parts") == []  # never written into the dataset
    combined = PascalContext(pascal_root, ["val", "train"], parts_cache_dir=tmp_path / "parts")
    assert combined.parts_cache_file == tmp_path / "parts" / "trainval.txt"
    assert json.loads(combined.parts_cache_file.read_text()) == PERSON_LISTS


def test_parts_cache_is_reused_and_stale_caches_recomputed(pascal_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "parts" / "val.txt"
    cache.parent.mkdir()
    cache.write_text(json.dumps({i: [] for i in PASCAL_VAL_IDS}))  # same ids: trusted, as in the reference
    assert len(PascalContext(pascal_root, "val", tasks=["parts"], parts_cache_dir=cache.parent)) == 0
    cache.write_text(json.dumps({PASCAL_VAL_IDS[0]: [15]}))  # other ids: recomputed
    assert len(PascalContext(pascal_root, "val", tasks=["parts"], parts_cache_dir=cache.parent)) == 3
    assert json.loads(cache.read_text()) == {i: PERSON_LISTS[i] for i in PASCAL_VAL_IDS}


def test_parts_list_shipped_with_the_dataset_is_used(pascal_root: Path, tmp_path: Path) -> None:
    shipped = {i: [15] for i in PASCAL_TRAIN_IDS}
    (pascal_root / "ImageSets/Parts/train.txt").write_text(json.dumps(shipped))
    dataset = PascalContext(pascal_root, "train", tasks=["parts"], parts_cache_dir=tmp_path / "parts")
    assert len(dataset) == 6 and not (tmp_path / "parts").exists()


def test_parts_only_dataset_drops_images_without_person(pascal_root: Path) -> None:
    train = PascalContext(pascal_root, "train", tasks=["human_parts"])
    assert train.ids == [i for i in PASCAL_TRAIN_IDS if PARTS_CASES[i] in "acd"]
    val = PascalContext(pascal_root, "val", tasks=["human_parts"])
    assert val.ids == [PASCAL_VAL_IDS[0], PASCAL_VAL_IDS[1], PASCAL_VAL_IDS[3]]
    assert len(PascalContext(pascal_root, "val", tasks=["human_parts", "semseg"])) == 4


@pytest.mark.parametrize("image_id", ALL_IDS)
def test_human_parts_label_per_case(pascal_root: Path, image_id: str) -> None:
    layout = layout_of(image_id)
    parts = sample_of(pascal_root, image_id, tasks=["human_parts", "semseg"])["human_parts"]
    expected = np.zeros((layout.h, layout.w), dtype=np.float32)
    right = slice(layout.boundary, layout.w)
    case = PARTS_CASES[image_id]
    if case == "a":  # head, torso, llleg -> 1, 2, 6
        expected[layout.rows(0.25, 0.4), right] = 1
        expected[layout.rows(0.4, 0.6), right] = 2
        expected[layout.rows(0.6, 0.75), right] = 6
    elif case == "d":  # torso of the first person, overwritten by the second person's ruleg (5) where they overlap
        expected[layout.rows(0.25, 0.6), right] = 2
        expected[layout.rows(0.5, 0.75), right] = 5
    # (b) no person, (c) a person without parts, (e) a person of zero area: all 0
    np.testing.assert_array_equal(parts, expected)


# ------------------------------------------------------------------------------------------- with transforms
def test_eval_transform_shapes_and_ignore_regions(pascal_root: Path) -> None:
    dataset = PascalContext(pascal_root, "val", transform=build_transforms("eval"))
    for index, image_id in enumerate(PASCAL_VAL_IDS):
        sample = dataset[index]
        assert sample["image"].shape == (3, 512, 512) and sample["normals"].shape == (3, 512, 512)
        for task in ("semseg", "human_parts", "edges", "saliency"):
            assert sample[task].shape == (1, 512, 512)
        h, w = image_size(6 + index)
        assert sample["meta"]["size"] == (h, w)
        no_parts = PARTS_CASES[image_id] in "bc"
        assert bool((sample["human_parts"] == 255).all()) == no_parts
        assert set(np.unique(sample["edges"].numpy())) == {0.0, 1.0}
        centre = int(5 * 512 / h), int(5 * 512 / w)  # inside the sky square (rows/cols 2..7)
        assert (sample["normals"][:, centre[0], centre[1]] == 255).all()
        assert (sample["normals"][:, 500, 500] != 255).all()


# ------------------------------------------------------------------------------------------- errors
def test_missing_dataset_names_the_download_command(tmp_path: Path) -> None:
    with pytest.raises(TsnError, match="tsn download pascal_context --root DIR") as error:
        PascalContext(tmp_path)
    assert "\n" not in str(error.value)


def test_missing_split_list(pascal_root: Path) -> None:
    with pytest.raises(TsnError, match=r"trainaug.txt is missing \(splits present: train, val\); .*tsn download"):
        PascalContext(pascal_root, "trainaug")
    with pytest.raises(TsnError, match="seism"):
        PascalContext(pascal_root, "test_new")
    (pascal_root / "ImageSets/Context/test_new.txt").write_text(f"{PASCAL_VAL_IDS[3]}\n")
    assert PascalContext(pascal_root, "test_new").ids == [PASCAL_VAL_IDS[3]]


def test_missing_file_is_named_at_construction_or_on_read(pascal_root: Path) -> None:
    missing = pascal_root / f"sal_distill/{PASCAL_VAL_IDS[2]}.png"
    missing.unlink()
    with pytest.raises(TsnError, match=re.escape(f"missing {missing};")):
        PascalContext(pascal_root, "val")
    assert len(PascalContext(pascal_root, "val", tasks=["semseg"])) == 4  # only the enabled tasks' files count
    dataset = PascalContext(pascal_root, "val", check_files=False)
    with pytest.raises(TsnError, match=re.escape(f"missing file {missing}")):
        dataset[2]


@pytest.mark.parametrize("relative", ["JPEGImages/{}.jpg", "human_parts/{}.mat", "pascal-context/trainval/{}.mat"])
def test_corrupt_file_gives_one_line_error_naming_it(pascal_root: Path, relative: str) -> None:
    path = pascal_root / relative.format(PASCAL_VAL_IDS[0])
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(TsnError, match="corrupt") as error:
        PascalContext(pascal_root, "val")[0]  # the parts .mat is already read by the person scan
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_edge_eval_ground_truth_is_the_raw_label_map(pascal_root: Path) -> None:
    image_id = PASCAL_VAL_IDS[1]
    ground_truth = PascalContext(pascal_root, "val").edge_eval_ground_truth(image_id)
    assert ground_truth.dtype == np.uint16
    np.testing.assert_array_equal(ground_truth, layout_of(image_id).label_map())


# ------------------------------------------------------------------------------------------- factory and command
def test_build_dataset_by_name(pascal_root: Path) -> None:
    dataset = build_dataset("pascal-context", "train", tasks=["semseg"], root=pascal_root.parent)
    assert isinstance(dataset, PascalContext) and len(dataset) == 6
    with pytest.raises(TsnError, match="unknown dataset 'coco'"):
        build_dataset("coco")


def test_data_show_writes_a_grid(pascal_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "grid.png"
    args = ["data", "show", "pascal_context", "--data-root", str(pascal_root.parent), "--n", "3", "-o", str(output)]
    assert main(args) == 0
    width, height = Image.open(output).size
    assert width > height > 0  # 3 rows of 6 pictures
    assert "3 samples" in capsys.readouterr().out
    assert main(["data", "show", "pascal_context", "--data-root", str(tmp_path / "none")]) == 2
    assert "tsn download pascal_context" in capsys.readouterr().err
