"""Score ``fixture.npz`` with the evaluators of the codebases that define each protocol; write their outputs.

Nothing of those codebases is stored here: this script imports their evaluation modules from a checkout given on
the command line and records only what they return (most of them are CC BY-NC or unlicensed; LibMTL is MIT).

    # ASTMT (facebookresearch/astmt) and the MTL survey (SimonVandenhende/Multi-Task-Learning-PyTorch) are
    # numpy-only file-based evaluators of 2019-2020 (np.bool, numpy < 1.24): run them with numpy 1.23.5,
    # opencv-python-headless 4.8, pillow, scipy 1.11, imageio in a separate venv (no torch: it is stubbed, they
    # import it for their online meters only).
    VENV123/bin/python run_reference.py astmt CHECKOUT/astmt
    VENV123/bin/python run_reference.py mtl-survey CHECKOUT/Multi-Task-Learning-PyTorch
    # InvPT (prismformore/Multi-Task-Transformer, InvPT/) and LibMTL (median-research-group/LibMTL) need torch:
    .venv/bin/python run_reference.py invpt CHECKOUT/Multi-Task-Transformer
    .venv/bin/python run_reference.py libmtl CHECKOUT/LibMTL

Each run writes ``reference_<codebase>.json``: the codebase's commit (pass ``--commit``), the library versions
and, per fixture set, the codebase's own result dictionary (NaN written as the string "nan"). The ASTMT run
also writes ``reference_astmt_saved.npz``: the files its saving code (the survey's is the same) would write for
the fixture's predictions (uint8 PNG arrays, float32 depth), which the tests compare with ``tsn``'s writers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixture import CLASSES, HERE, IGNORE, PAD_TO, load


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars and arrays to Python, NaN to "nan"."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _load_module(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _stub_torch() -> None:
    """The file-based evaluators import torch for their online meters (``@torch.no_grad()`` at class level)."""
    if "torch" in sys.modules:
        return
    try:
        import torch  # noqa: F401
    except ImportError:
        stub = types.ModuleType("torch")
        stub.no_grad = lambda: (lambda function: function)  # type: ignore[attr-defined]
        sys.modules["torch"] = stub


# ------------------------------------------------------------------------------ saved files (ASTMT / survey)


def saved_arrays(fixture: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> dict[str, np.ndarray]:
    """What the ASTMT / survey saving code writes for each prediction: ``get_output`` in float32 (255 * p;
    ``(normalise(n) + 1) * 255 / 2``; class indices; raw depth), then ``astype(np.uint8)`` for the PNGs."""
    saved = {}
    for name, pairs in fixture.items():
        for i, (pred, _) in enumerate(pairs):
            if name in CLASSES:
                out = pred.astype(np.uint8)
            elif name == "saliency":
                out = (np.float32(255) * pred.astype(np.float32)).astype(np.uint8)
            elif name.startswith("normals"):
                vectors = pred.astype(np.float32).transpose(1, 2, 0)
                norm = np.maximum(np.sqrt(np.sum(vectors * vectors, axis=2, keepdims=True)), np.float32(1e-12))
                out = ((vectors / norm + np.float32(1.0)) * np.float32(255) / np.float32(2.0)).astype(np.uint8)
            else:
                out = pred.astype(np.float32)
            saved[f"{name}/{i}"] = out
    return saved


def _write_files(folder: Path, saved: dict[str, np.ndarray]) -> None:
    import imageio
    import scipy.io as sio

    for key, array in saved.items():
        name, index = key.split("/")
        (folder / name).mkdir(parents=True, exist_ok=True)
        if name.startswith("depth"):
            sio.savemat(folder / name / f"{index}.mat", {"depth": array})
        else:
            imageio.imwrite(folder / name / f"{index}.png", array)


def _loader(pairs: list[tuple[np.ndarray, np.ndarray]], key: str) -> list[dict[str, Any]]:
    """Samples as the ASTMT / survey datasets yield them without transforms (float labels, meta image id)."""
    return [{"meta": {"image": str(i)}, key: label.astype(np.float32).copy()} for i, (_, label) in enumerate(pairs)]


def run_file_based(root: Path, package: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """ASTMT's ``fblib.evaluation`` or the survey's ``evaluation`` on files written as their saving code does."""
    _stub_torch()
    sys.path.insert(0, str(root))
    modules = {
        task: importlib.import_module(f"{package}.eval_{task}")
        for task in ("semseg", "human_parts", "normals", "sal", "depth")
    }
    fixture = load()
    saved = saved_arrays(fixture)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _write_files(folder, saved)
        for name in ("semseg21", "semseg7"):
            results[name] = modules["semseg"].eval_semseg(
                _loader(fixture[name], "semseg"), str(folder / name), n_classes=CLASSES[name] - 1, has_bg=True
            )
        results["human_parts"] = modules["human_parts"].eval_human_parts(
            _loader(fixture["human_parts"], "human_parts"), str(folder / "human_parts")
        )
        results["saliency"] = modules["sal"].eval_sal(
            _loader(fixture["saliency"], "sal"), str(folder / "saliency"), mask_thres=np.linspace(0.2, 0.9, 15)
        )
        for name in ("normals", "normals_clean"):
            results[name] = modules["normals"].eval_normals(_loader(fixture[name], "normals"), str(folder / name))
        for name in ("depth", "depth_clean"):
            results[name] = modules["depth"].eval_depth(_loader(fixture[name], "depth"), str(folder / name))
    return results, saved


# ------------------------------------------------------------------------------------------------- InvPT


def _pad(array: np.ndarray, fill: Any, rng: np.random.Generator | None = None) -> np.ndarray:
    """A prediction placed as InvPT's ``PadImage`` places its image (centred, offset ``delta // 2``), with random
    values around it: the network predicts something in the padding too, which the evaluation must ignore."""
    h, w = array.shape[:2]
    top, left = (PAD_TO[0] - h) // 2, (PAD_TO[1] - w) // 2
    if rng is not None:
        out = rng.random((*PAD_TO, *array.shape[2:])).astype(array.dtype) * fill
    else:
        out = np.full((*PAD_TO, *array.shape[2:]), fill, dtype=array.dtype)
    out[top : top + h, left : left + w] = array
    return out


def run_invpt(root: Path) -> dict[str, Any]:
    """InvPT's online meters, fed as its ``test_phase`` feeds them: labels through its own ``PadImage`` and
    ``AddIgnoreRegions``, predictions as its ``get_output`` makes them at the padded size."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(root / "InvPT"))
    transforms = importlib.import_module("data.transforms")
    meters = {
        task: importlib.import_module(f"evaluation.eval_{task}")
        for task in ("semseg", "human_parts", "normals", "sal", "depth")
    }
    fixture = load()
    rng = np.random.default_rng(7)
    label_key = {"semseg21": "semseg", "semseg7": "semseg", "human_parts": "human_parts", "saliency": "sal",
                 "normals": "normals", "normals_clean": "normals", "depth": "depth", "depth_clean": "depth"}
    results: dict[str, Any] = {}
    for name, pairs in fixture.items():
        key = label_key[name]
        labels, preds = [], []
        for pred, label in pairs:
            sample = {"image": np.zeros((*label.shape[:2], 3), np.float32),
                      key: label.astype(np.float32).reshape(*label.shape[:2], -1).copy()}
            sample = transforms.AddIgnoreRegions()(transforms.PadImage(size=PAD_TO)(sample))
            labels.append(torch.from_numpy(sample[key].transpose(2, 0, 1)).float())
            if name in CLASSES:
                k = CLASSES[name]
                scores = torch.from_numpy(_pad(np.eye(k, dtype=np.float32)[pred], 1.0, rng))  # H x W x K logits
                preds.append(torch.max(scores, dim=2)[1])  # get_output: argmax over the channels
            elif name == "saliency":
                preds.append(torch.from_numpy(_pad(pred, 1.0, rng)) * 255)  # softmax(...)[:, 1] * 255
            elif name.startswith("normals"):
                raw = torch.from_numpy(_pad(pred.transpose(1, 2, 0), 1.0, rng))
                preds.append((F.normalize(raw, p=2, dim=2) + 1.0) * 255 / 2.0)
            else:
                preds.append(torch.from_numpy(_pad(pred, 5.0, rng)).clamp(min=0.0)[..., None])
        if name in CLASSES:
            if key == "semseg":
                meter = meters["semseg"].SemsegMeter("PASCALContext", ignore_idx=IGNORE)
                # The meter is written for PASCAL's 21 or NYUD's 40 classes; set the fixture's count and reset.
                meter.n_classes = CLASSES[name]
                meter.reset()
            else:
                meter = meters["human_parts"].HumanPartsMeter("PASCALContext", ignore_idx=IGNORE)
        elif name == "saliency":
            meter = meters["sal"].SaliencyMeter(ignore_index=IGNORE, threshold_step=0.05, beta_squared=0.3)
        elif name.startswith("normals"):
            meter = meters["normals"].NormalsMeter(ignore_index=IGNORE)
        else:
            meter = meters["depth"].DepthMeter(ignore_index=IGNORE)
        meter.update(torch.stack(preds), torch.stack(labels))
        if name == "human_parts":
            # get_score prints the table; its result is all that is kept.
            results[name] = meter.get_score()
        else:
            results[name] = meter.get_score(verbose=False)
    return results


# ------------------------------------------------------------------------------------------------ LibMTL


def run_libmtl(root: Path) -> dict[str, Any]:
    """LibMTL's ``examples/nyu/utils.py`` metrics (also used by its Cityscapes example), one image per batch.

    ``LibMTL/__init__`` imports its weighting methods (cvxpy, qpsolvers, torch_geometric), which the metrics do
    not use: the package is registered without running it, so that ``LibMTL.metrics`` and ``LibMTL.loss`` load.
    """
    import torch

    package = types.ModuleType("LibMTL")
    package.__path__ = [str(root / "LibMTL")]
    sys.modules["LibMTL"] = package
    utils = _load_module("libmtl_nyu_utils", root / "examples" / "nyu" / "utils.py")
    fixture = load()
    results: dict[str, Any] = {}
    for name in ("semseg21", "semseg7"):
        metric = utils.SegMetric(num_classes=CLASSES[name])
        for pred, label in fixture[name]:
            logits = torch.from_numpy(np.eye(CLASSES[name], dtype=np.float32)[pred].transpose(2, 0, 1))[None] * 5
            truth = torch.from_numpy(np.where(label == IGNORE, -1, label).astype(np.float32))[None]  # MTAN: -1
            metric.update_fun(logits, truth)
        miou, pixel_acc = metric.score_fun()
        results[name] = {"mIoU": miou, "pixel_acc": pixel_acc}
    for name in ("depth", "depth_clean"):
        metric = utils.DepthMetric()
        metric.reinit()
        for pred, label in fixture[name]:
            metric.update_fun(torch.from_numpy(pred)[None, None], torch.from_numpy(label)[None, None])
        abs_err, rel_err = metric.score_fun()
        results[name] = {"abs_err": abs_err, "rel_err": rel_err}
    for name in ("normals", "normals_clean"):
        metric = utils.NormalMetric()
        metric.reinit()
        for pred, label in fixture[name]:
            metric.update_fun(torch.from_numpy(pred)[None], torch.from_numpy(label.transpose(2, 0, 1).copy())[None])
        keys = ("mean", "median", "within_11.25", "within_22.5", "within_30")
        results[name] = dict(zip(keys, metric.score_fun(), strict=True))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("codebase", choices=("astmt", "mtl-survey", "invpt", "libmtl"))
    parser.add_argument("checkout", type=Path, help="the codebase's source tree")
    parser.add_argument("--commit", default="", help="the checkout's commit, recorded in the output")
    args = parser.parse_args()
    saved = None
    if args.codebase == "astmt":
        results, saved = run_file_based(args.checkout, "fblib.evaluation")
    elif args.codebase == "mtl-survey":
        results, saved = run_file_based(args.checkout, "evaluation")
    elif args.codebase == "invpt":
        results = run_invpt(args.checkout)
    else:
        results = run_libmtl(args.checkout)
    versions = {"python": sys.version.split()[0], "numpy": np.__version__}
    torch_module = sys.modules.get("torch")
    if torch_module is not None and hasattr(torch_module, "__version__"):
        versions["torch"] = torch_module.__version__
    record = {"codebase": args.codebase, "commit": args.commit, "versions": versions, "results": _plain(results)}
    out = HERE / f"reference_{args.codebase.replace('-', '_')}.json"
    out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    if saved is not None and args.codebase == "astmt":  # the survey saves exactly as ASTMT does
        np.savez_compressed(out.with_name(out.stem + "_saved.npz"), **saved)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
