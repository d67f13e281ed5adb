"""Scoring predictions saved elsewhere (``tsn evaluate --predictions``), the conventions ``tsn predict --format``
writes, and validation during training scoring as ``tsn evaluate`` does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from error_model import assert_close_float32
from fixture_datasets import PASCAL_VAL_IDS, make_mtan_fixture, make_pascal_fixture
from tsn.cli import main
from tsn.data import build_dataset, collate
from tsn.data.transforms import build_transforms
from tsn.dataset_catalog import dataset_tasks
from tsn.evaluation.evaluate import evaluate_checkpoint
from tsn.evaluation.saved_predictions import evaluate_predictions
from tsn.models import create_model
from tsn.models.checkpoint import load_model, save_checkpoint
from tsn.training.validation import validate

TINY_DECODER = (16, 8, 8, 8, 8)
pytestmark = pytest.mark.usefixtures("one_thread_private_cache")


def _checkpoint(path: Path, preset: str) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(path, create_model(preset, decoder_channels=TINY_DECODER))


def _scores(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task's result (plain values; the edge result's protocol entry included)."""
    return json.loads(json.dumps(record["tasks"]))


@pytest.mark.parametrize("convention", ["authors", "astmt", "invpt"])
def test_predict_format_then_evaluate_predictions_equals_evaluate_checkpoint(
    tmp_path: Path, pascal_root: Path, convention: str
) -> None:
    checkpoint = _checkpoint(tmp_path / "tsn.pt", "tsn_r18_pascal")
    images = [str(pascal_root / "JPEGImages" / f"{i}.jpg") for i in PASCAL_VAL_IDS]
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(checkpoint), *images, "-o", str(out), "--size", "64",
                 "--format", convention, "--workers", "0", "--no-progress"]) == 0
    folders = {p.name for p in out.iterdir()}
    assert ({"sal", "edge"} <= folders) == (convention != "authors") and "panels" not in folders
    result = tmp_path / "from-files.json"
    assert main(["evaluate", "--predictions", str(out), "--format", convention, "--dataset", "pascal_context",
                 "--data-root", str(pascal_root), "--workers", "0", "-o", str(result)]) == 0
    from_files = json.loads(result.read_text())
    # One image per forward pass, as tsn predict ran them (a batch's composition moves float32 results by a few
    # ulps, enough to flip an 8-bit truncation now and then).
    direct = evaluate_checkpoint(checkpoint, "pascal_context", "val", data_root=pascal_root, size=64, workers=0,
                                 batch_size=1, progress=False)
    assert from_files["protocol"]["name"] == direct["protocol"]["name"] == "astmt"
    assert from_files["predictions_from"]["convention"] == convention
    assert _scores(from_files) == _scores(direct)
    assert from_files["headline"] == direct["headline"]


def test_saved_predictions_under_every_protocol_record_it(tmp_path: Path, pascal_root: Path) -> None:
    checkpoint = _checkpoint(tmp_path / "tsn.pt", "tsn_r18_pascal")
    out = tmp_path / "pred"
    evaluate_checkpoint(checkpoint, "pascal_context", tasks=["semseg", "sal", "normals"], data_root=pascal_root,
                        size=64, workers=0, save_dir=out, save_convention="invpt", progress=False)
    for protocol in ("astmt", "mtl-survey", "invpt", "invpt-corrected", "libmtl", "libmtl-nan-free"):
        record = evaluate_predictions(out, "pascal_context", protocol=protocol, convention="invpt",
                                      data_root=pascal_root, progress=False)
        assert record["protocol"]["name"] == protocol and set(record["tasks"]) == {"semseg", "saliency", "normals"}
    invpt = evaluate_predictions(out, "pascal_context", protocol="invpt", convention="invpt", data_root=pascal_root,
                                 progress=False)
    assert invpt["headline"]["saliency"]["metric"] == "maxF" and invpt["input_size"] is None


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str], message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_bad_saved_predictions_are_one_line_errors(
    tmp_path: Path, pascal_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = _checkpoint(tmp_path / "tsn.pt", "tsn_r18_pascal")
    out = tmp_path / "pred"
    evaluate_checkpoint(checkpoint, "pascal_context", tasks=["semseg", "sal"], data_root=pascal_root, size=64,
                        workers=0, save_dir=out, progress=False)
    base = ["evaluate", "--predictions", str(out), "--dataset", "pascal_context", "--data-root", str(pascal_root),
            "--workers", "0", "-o", str(tmp_path / "r.json")]
    first = PASCAL_VAL_IDS[0]
    saliency, semseg = out / "saliency" / f"{first}.png", out / "semseg" / f"{first}.png"
    original = np.asarray(Image.open(saliency))
    # wrong value range: probabilities saved as 0 / 1
    Image.fromarray((original > 127).astype(np.uint8)).save(saliency)
    _one_line_error(base, capsys, "holds only values 0 and 1")
    # mismatched size
    Image.fromarray(original[:-2]).save(saliency)
    _one_line_error(base, capsys, "save predictions at the original image size")
    Image.fromarray(original).save(saliency)
    # a class the dataset does not have
    Image.fromarray(np.full(original.shape, 40, np.uint8)).save(semseg)
    _one_line_error(base, capsys, "holds class 40 but semseg has 21 classes")
    # missing files
    semseg.unlink()
    _one_line_error(base, capsys, "1 of 8 predictions are missing")
    _one_line_error([*base[:2], str(tmp_path / "nowhere"), *base[3:]], capsys, "is not a folder")
    # the ASTMT convention looks for sal/, which this folder (tsn's authors convention) does not have
    _one_line_error([*base, "--format", "astmt", "--tasks", "sal"], capsys, "4 of 4 predictions are missing")
    _one_line_error([*base[:2], str(tmp_path), *base[3:]], capsys, "no prediction folder of 'pascal_context'")


# ------------------------------------------------------------------------- validation scores as tsn evaluate


def _validation_metrics(checkpoint: Path, dataset: str, root: Path | None, size: tuple[int, int],
                        tasks: list[str], options: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], int]:
    """The validation metrics of ``checkpoint`` on the split, and the number of pixels they score."""
    from tsn.inference.speed import exact_options, optimize

    # The model as tsn evaluate runs it (its float32 "exact" options), so that both see the same raw outputs.
    model = optimize(load_model(checkpoint), exact_options("cpu")).eval()
    specs = {spec.name: spec for spec in dataset_tasks(dataset, tasks)}
    transform = build_transforms("eval", size, tasks=list(specs.values()), seed=0)
    data = build_dataset(dataset, "val", tasks=tasks, root=root, transform=transform, **options)
    batches = [collate([data[i] for i in range(start, min(start + 3, len(data)))]) for start in range(0, len(data), 3)]
    result = validate(model, batches, specs, dict.fromkeys(specs, 1.0), metric_tasks=tasks)
    return result.metrics, len(data) * size[0] * size[1]


def _same_scores(validation: dict[str, dict[str, Any]], evaluation: dict[str, Any], tasks: list[str],
                 pixels: int) -> None:
    """Both score the same float32 outputs; their labels differ by float32 rounding (the transforms normalise them
    in float32) and their metric sums are accumulated in different orders over the ``pixels`` scored: the error
    model's bound for a reduction of that length, both sides rounded, relative to each value."""
    for task in tasks:
        ours, theirs = validation[task], evaluation["tasks"][task]
        assert set(ours) == set(theirs) - {"image_set"}, task
        for key, value in theirs.items():
            numbers = value if isinstance(value, list) else [value]
            if numbers and all(isinstance(v, float) for v in numbers):
                actual = np.atleast_1d(np.asarray(ours[key], np.float64))
                expected = np.atleast_1d(np.asarray(value, np.float64))
                assert np.array_equal(np.isnan(actual), np.isnan(expected)), (task, key)
                finite = ~np.isnan(expected)
                for a, e in zip(actual[finite], expected[finite], strict=True):
                    assert_close_float32(a, e, reduction=pixels, what=f"{task} {key}")
            elif key != "image_set":
                assert ours[key] == value, (task, key)


@pytest.mark.parametrize("dataset", ["synthetic", "pascal_context", "nyuv2_13"])
def test_validation_reports_what_tsn_evaluate_reports(tmp_path: Path, dataset: str) -> None:
    """Same checkpoint, split and size: the same metric names and values (edges on PASCAL excepted: the benchmark's
    ground truth comes from the context labels, training's edge label is the thinned Laplacian map)."""
    options: dict[str, Any] = {}
    if dataset == "synthetic":
        preset, root, size, tasks = "tsn_r10t_synthetic", None, (64, 64), [s.name for s in dataset_tasks("synthetic")]
        options = {"size": 64, "length": 4}
    elif dataset == "pascal_context":
        preset, size = "tsn_r18_pascal", (64, 64)
        root = make_pascal_fixture(tmp_path / "data", size=size)
        tasks = ["semseg", "human_parts", "normals", "saliency"]
    else:
        preset, size, tasks = "tsn_r18_nyuv2", (64, 96), ["semseg", "depth", "normals"]
        make_mtan_fixture(tmp_path / "data", "nyuv2", size)
        root = tmp_path / "data"
    checkpoint = _checkpoint(tmp_path / "model.pt", preset)
    evaluation = evaluate_checkpoint(checkpoint, dataset, "val", tasks=tasks, data_root=root, dataset_options=options,
                                     size=size, workers=0, batch_size=3, progress=False)  # validation's batches
    metrics, pixels = _validation_metrics(checkpoint, dataset, root, size, tasks, options)
    _same_scores(metrics, evaluation, tasks, pixels)


def test_evaluate_under_invpt_pads_each_image_centred_and_scores_the_crop(
    tmp_path: Path, pascal_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``tsn evaluate --protocol invpt`` on the PASCAL fixture: every image (40..46 x 56..50, odd differences
    included) runs centred in the fixed input (InvPT's 512 x 512 by default, here ``--size 64``) and what it
    scores and saves is the pipeline's centred-pad prediction, cropped back."""
    from tsn.inference.pipeline import PadToSize, Pipeline
    from tsn.inference.speed import exact_options, optimize

    checkpoint = _checkpoint(tmp_path / "tsn.pt", "tsn_r18_pascal")
    out, result = tmp_path / "pred", tmp_path / "invpt.json"
    tasks = ["semseg", "saliency", "normals"]
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "pascal_context", "--data-root",
                 str(pascal_root), "--protocol", "invpt", "--tasks", *tasks, "--size", "64", "--batch-size", "1",
                 "--workers", "0", "--save-predictions", str(out), "-o", str(result)]) == 0
    record = json.loads(result.read_text())
    assert record["protocol"]["fit"] == "pad-to-size" and record["input_size"] == [64, 64]
    model = optimize(load_model(checkpoint), exact_options("cpu")).eval()  # as tsn evaluate runs it
    pipeline = Pipeline(model, tasks=tasks, fit=PadToSize((64, 64)), budget=None)
    data = build_dataset("pascal_context", "val", tasks=tasks, root=pascal_root)
    for index in range(len(data)):
        sample = data[index]
        image_id = sample["meta"]["id"]
        for task, prediction in pipeline.predict(np.asarray(sample["image"])).items():
            spec = pipeline.specs[task]
            saved = np.asarray(Image.open(out / task / f"{image_id}.png"))
            np.testing.assert_array_equal(saved, spec.to_saved(prediction), err_msg=f"{image_id} {task}")
    # No --size: InvPT's own test scale.
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "pascal_context", "--data-root",
                 str(pascal_root), "--protocol", "invpt", "--tasks", "semseg", "--workers", "0", "-o",
                 str(tmp_path / "default.json")]) == 0
    assert json.loads((tmp_path / "default.json").read_text())["input_size"] == [512, 512]


def test_invpt_refuses_an_image_larger_than_its_fixed_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """InvPT's network runs only at its test scale: a larger image is refused in one line naming it (also from a
    data-loading worker), and no result is written."""
    root = make_pascal_fixture(tmp_path / "data", size=(70, 90))
    checkpoint = _checkpoint(tmp_path / "tsn.pt", "tsn_r18_pascal")
    result = tmp_path / "invpt.json"
    _one_line_error(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "pascal_context", "--data-root",
                     str(root), "--protocol", "invpt", "--tasks", "semseg", "--size", "64", "--workers", "1",
                     "-o", str(result)], capsys,
                    f"image {PASCAL_VAL_IDS[0]} is 70x90, larger than the fixed network input 64x64")
    assert not result.exists() and not result.with_suffix(".md").exists()


def test_an_average_drop_refuses_to_mix_protocols(
    tmp_path: Path, pascal_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = _checkpoint(tmp_path / "tsn.pt", "tsn_r18_pascal")
    base = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "pascal_context", "--data-root",
            str(pascal_root), "--tasks", "semseg", "--size", "64", "--workers", "0"]
    assert main([*base, "--protocol", "invpt", "-o", str(tmp_path / "invpt.json")]) == 0
    capsys.readouterr()
    _one_line_error([*base, "--baseline", str(tmp_path / "invpt.json"), "-o", str(tmp_path / "astmt.json")], capsys,
                    "cannot mix protocols (astmt and invpt)")
    assert not (tmp_path / "astmt.json").exists()
    assert main([*base, "--protocol", "invpt", "--baseline", str(tmp_path / "invpt.json"), "-o",
                 str(tmp_path / "same.json")]) == 0
    assert json.loads((tmp_path / "same.json").read_text())["baseline"]["average_drop"] == 0.0
