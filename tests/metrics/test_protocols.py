"""Every evaluation protocol against the outputs of the code that defines it (``tests/protocol_reference``).

The reference outputs were produced by running ASTMT's, the MTL survey's, InvPT's and LibMTL's own evaluators on
``fixture.npz`` (``run_reference.py`` says how); here each protocol scores the same predictions with ``tsn``'s
metrics. Tolerances come from the error model: references computed in float32 (ASTMT's normals and depth arrays,
InvPT's and LibMTL's torch meters) within float32 rounding of a sum over the set's pixels, the others within
float64 rounding. NaN must be where the reference has it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from error_model import assert_close_float32, assert_close_float64
from tsn.dataset_catalog import dataset_tasks
from tsn.errors import TsnError
from tsn.evaluation.protocols import (
    ScoringProtocol,
    default_protocol,
    get_protocol,
    list_protocols,
    register_protocol,
)

REFERENCE = Path(__file__).resolve().parents[1] / "protocol_reference"
sys.path.insert(0, str(REFERENCE))
from fixture import SIZES, load  # noqa: E402

PIXELS = sum(h * w for h, w in SIZES)
_PASCAL = {spec.name: spec for spec in dataset_tasks("pascal_context")}
_SYNTHETIC = {spec.name: spec for spec in dataset_tasks("synthetic")}
SPECS = {
    "semseg21": _PASCAL["semseg"], "semseg7": _SYNTHETIC["semseg"], "human_parts": _PASCAL["human_parts"],
    "saliency": _PASCAL["saliency"], "normals": _PASCAL["normals"], "normals_clean": _PASCAL["normals"],
    "depth": _SYNTHETIC["depth"], "depth_clean": _SYNTHETIC["depth"],
}


def _reference(codebase: str) -> dict[str, Any]:
    results = json.loads((REFERENCE / f"reference_{codebase}.json").read_text())["results"]
    return {name: {k: _nan(v) for k, v in values.items()} for name, values in results.items()}


def _nan(value: Any) -> Any:
    if value == "nan":
        return float("nan")
    if isinstance(value, list):
        return [_nan(v) for v in value]
    return value


def _score(protocol: str, name: str, dataset: str = "synthetic") -> dict[str, Any]:
    chosen = get_protocol(protocol)
    spec = SPECS[name]
    metric = spec.make_metric(**chosen.options_for(dataset))
    for pred, label in load()[name]:
        metric.update(chosen.prepare(spec, pred), label)
    return metric.compute()


def _close(ours: Any, theirs: Any, *, float32: bool, what: str) -> None:
    ours, theirs = np.atleast_1d(np.asarray(ours, dtype=np.float64)), np.atleast_1d(np.asarray(theirs, np.float64))
    if float32:
        assert_close_float32(ours, theirs, reduction=PIXELS, what=what)
    else:
        assert_close_float64(ours, theirs, reduction=PIXELS, what=what)


# ------------------------------------------------------------------------------------- ASTMT and the survey

_FILE_BASED_KEYS = {
    "semseg21": {"mIoU": "mIoU", "jaccards_all_categs": "IoU"},
    "semseg7": {"mIoU": "mIoU", "jaccards_all_categs": "IoU"},
    "human_parts": {"mIoU": "mIoU", "jaccards_all_categs": "IoU"},
    "saliency": {"mIoU": "mIoU", "maxF": "maxF", "mIoUs": "mIoU_per_threshold"},
    "normals": {"mean": "mErr", "median": "median", "rmse": "rmse", "11.25": "within_11.25",
                "22.5": "within_22.5", "30": "within_30"},
    "depth": {"rmse": "rmse", "log_rmse": "log_rmse"},
}


@pytest.mark.parametrize("codebase", ["astmt", "mtl_survey"])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_file_based_protocols_match_their_code(codebase: str, name: str) -> None:
    protocol = codebase.replace("_", "-")
    ours, theirs = _score(protocol, name), _reference(codebase)[name]
    keys = _FILE_BASED_KEYS[name.removesuffix("_clean")]
    # Their normals and depth are float32 arrays (cv2 / .mat reads); everything else is exact counting in float64.
    float32 = name.startswith(("normals", "depth"))
    for their_key, our_key in keys.items():
        _close(ours[our_key], theirs[their_key], float32=float32, what=f"{protocol} {name} {our_key}")


def test_saved_files_match_the_authors_saving_code() -> None:
    """``TaskSpec.to_saved`` writes the files ASTMT's (and the survey's) saving code writes."""
    saved = np.load(REFERENCE / "reference_astmt_saved.npz")
    for name, pairs in load().items():
        for i, (pred, _) in enumerate(pairs):
            ours, theirs = SPECS[name].to_saved(pred), saved[f"{name}/{i}"]
            if SPECS[name].saved_suffix == ".png" and ours.ndim == 3 and ours.shape[0] == 3:
                ours = ours.transpose(1, 2, 0)
            assert ours.shape == theirs.shape, name
            np.testing.assert_array_equal(ours.astype(theirs.dtype), theirs, err_msg=f"{name}/{i}")


# ---------------------------------------------------------------------------------------------------- InvPT

_INVPT_KEYS = {
    "semseg21": ("mIoU",), "semseg7": ("mIoU",), "human_parts": ("mIoU",), "saliency": ("maxF",),
    "normals": ("mean",), "normals_clean": ("mean",), "depth": ("rmse", "log_rmse", "abs_rel", "sq_rel"),
    "depth_clean": ("rmse", "log_rmse", "abs_rel", "sq_rel"),
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_invpt_matches_its_meters(name: str) -> None:
    ours, theirs = _score("invpt", name), _reference("invpt")[name]
    for key in _INVPT_KEYS[name]:
        _close(ours[key], theirs[key], float32=True, what=f"invpt {name} {key}")


def test_invpt_saliency_quirk_and_its_correction() -> None:
    """The double sigmoid squeezes every probability into [0.5, 0.731]: only thresholds >= 0.5 can separate."""
    quirk, corrected = _score("invpt", "saliency"), _score("invpt-corrected", "saliency")
    assert quirk["threshold"] >= 0.5
    assert corrected["protocol"] == "invpt-corrected" and quirk["protocol"] == "invpt"
    assert corrected["maxF"] != pytest.approx(quirk["maxF"])
    # The corrected variant is the same meter on the probabilities themselves: check one threshold by hand.
    tp = predicted = actual = 0
    t = float(torch.arange(0.05, 1, 0.05)[9])
    for pred, label in load()["saliency"]:
        above = pred >= np.float32(t)
        tp += int((above & (label == 1)).sum())
        predicted += int(above.sum())
        actual += int((label == 1).sum())
    precision, recall = tp / predicted, tp / actual
    expected = 1.3 * precision * recall / (0.3 * precision + recall)
    assert corrected["F_per_threshold"][9] == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------------------------------- LibMTL

_LIBMTL_KEYS = {
    "semseg21": ("mIoU", "pixel_acc"), "semseg7": ("mIoU", "pixel_acc"),
    "depth": ("abs_err", "rel_err"), "depth_clean": ("abs_err", "rel_err"),
    "normals": ("mean", "median", "within_11.25", "within_22.5", "within_30"),
    "normals_clean": ("mean", "median", "within_11.25", "within_22.5", "within_30"),
}


@pytest.mark.parametrize("name", sorted(_LIBMTL_KEYS))
def test_libmtl_matches_its_metrics(name: str) -> None:
    ours, theirs = _score("libmtl", name), _reference("libmtl")[name]
    for key in _LIBMTL_KEYS[name]:
        scale = 100.0 if key.startswith("within") else 1.0  # LibMTL prints fractions, tsn percentages
        _close(ours[key], theirs[key] * scale, float32=True, what=f"libmtl {name} {key}")


def test_libmtl_nan_cases_and_the_nan_free_variant() -> None:
    exact = {name: _score("libmtl", name) for name in ("semseg21", "depth", "normals")}
    assert np.isnan(exact["semseg21"]["mIoU"]) and np.isnan(exact["depth"]["abs_err"])
    assert np.isnan(exact["normals"]["mean"]) and exact["normals"]["n_nan"] == 2
    free = {name: _score("libmtl-nan-free", name) for name in ("semseg21", "depth", "normals")}
    assert all(np.isfinite(free[n][k]) for n, k in (("semseg21", "mIoU"), ("depth", "abs_err"), ("normals", "mean")))
    # Without the empty image, both variants pool the same pixels.
    assert _score("libmtl-nan-free", "depth_clean")["abs_err"] == pytest.approx(
        _score("libmtl", "depth_clean")["abs_err"], rel=1e-15)


def test_libmtl_depth_nan_is_per_test_batch() -> None:
    """LibMTL's NaN comes from a batch without a valid pixel: with NYUv2's 8-image batches one empty image among
    valid ones does not make it."""
    spec = SPECS["depth"]
    batched = spec.make_metric(**get_protocol("libmtl").options_for("nyuv2_13"))
    for pred, label in load()["depth"]:
        batched.update(pred, label)
    assert np.isfinite(batched.compute()["abs_err"])


# -------------------------------------------------------------------------------------------- the registry


def test_registry_names_defaults_and_refusals() -> None:
    assert {"astmt", "mtl-survey", "invpt", "invpt-corrected", "libmtl", "libmtl-nan-free"} <= set(list_protocols())
    assert default_protocol("pascal_context").name == "astmt" and default_protocol("nyud").name == "astmt"
    assert default_protocol("nyuv2_13").name == "libmtl" and default_protocol("cityscapes_7").name == "libmtl"
    with pytest.raises(TsnError, match="already registered"):
        register_protocol(get_protocol("astmt"))
    with pytest.raises(TsnError, match="unknown evaluation protocol 'nope'"):
        get_protocol("nope")
    with pytest.raises(TsnError, match="unknown metric option"):
        ScoringProtocol(name="x", title="x", source="x", used_by="x", metric_options={"depth_protcol": "x"}).check()


def test_invpt_pads_to_its_test_scale_per_dataset() -> None:
    """InvPT / TaskPrompter's TEST.SCALE (utils/config.py): PASCAL-Context 512 x 512, NYUD 448 x 576, centred;
    the datasets they never ran keep a pad to a multiple of 32. The record says which fit was used."""
    for name in ("invpt", "invpt-corrected"):
        protocol = get_protocol(name)
        assert protocol.fit_for("pascal_context") == "pad-to-size" and protocol.fit_size("pascal_context") == (512, 512)
        assert protocol.fit_for("nyud") == "pad-to-size" and protocol.fit_size("nyud") == (448, 576)
        assert protocol.fit_for("synthetic") == "pad" and protocol.fit_size("synthetic") is None
        record = protocol.record("nyud")
        assert record["fit"] == "pad-to-size" and record["fit_sizes"]["nyud"] == [448, 576]
    assert get_protocol("astmt").fit_for("nyud") == "resize" and get_protocol("astmt").record()["fit"] == "resize"
    base = {"title": "x", "source": "x", "used_by": "x"}
    with pytest.raises(TsnError, match="fit must be one of resize, pad, pad-to-size, got 'crop'"):
        ScoringProtocol(name="x", fit="crop", **base)
    with pytest.raises(TsnError, match="needs a '\\*' entry"):
        ScoringProtocol(name="x", fit={"nyud": "pad"}, **base)
    with pytest.raises(TsnError, match="must be \\(H, W\\)"):
        ScoringProtocol(name="x", fit="pad-to-size", fit_sizes={"nyud": (448,)}, **base)  # type: ignore[dict-item]


def test_every_protocol_scores_every_set() -> None:
    """No protocol fails on the edge cases (empty images, absent classes, zero vectors, zero depth)."""
    for protocol in list_protocols():
        for name in SPECS:
            result = _score(protocol, name)
            assert get_protocol(protocol).headline_key(SPECS[name]) in result


def test_evaluate_help_is_generated_from_the_registries(capsys: pytest.CaptureFixture[str]) -> None:
    from tsn.cli import main
    from tsn.dataset_catalog import list_datasets

    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in [*list_datasets(), *list_protocols()]:
        assert name in text, name
    assert "nyuv2_13 (libmtl, 288x384)" in text and "cityscapes_7 (libmtl, 128x256)" in text
