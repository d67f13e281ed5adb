"""``tsn evaluate``: the reference protocol end to end, hand-checked scores, baselines and error paths."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fixture_datasets import PASCAL_VAL_IDS
from tsn.cli import main
from tsn.data import build_dataset
from tsn.dataset_catalog import dataset_tasks
from tsn.errors import TsnError
from tsn.evaluation.evaluate import evaluate_checkpoint, evaluate_model
from tsn.evaluation.tables import TableRow, compare_with_baseline, load_baseline, markdown_table
from tsn.metrics import make_metric
from tsn.metrics.edges import evaluate_edge_folder, seism_ground_truth
from tsn.models import ModelConfig, create_model
from tsn.models.base import DensePredictionModel
from tsn.models.checkpoint import save_checkpoint

TINY_DECODER = (16, 8, 8, 8, 8)
SYNTHETIC = {"size": 64, "length": 6}


pytestmark = pytest.mark.usefixtures("one_thread_private_cache")


def _random_checkpoint(path: Path, preset: str) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(path, create_model(preset, decoder_channels=TINY_DECODER))


def _authors_tsn_checkpoint(tmp_path: Path) -> Path:
    """The authors' ``tsns_model.pth`` layout with the parity fixture's random weights, converted."""
    from tsn.models.convert import convert_official_checkpoint
    from tsns_reference import reference_weights

    official = tmp_path / "tsns_model.pth"
    torch.save({"model_state": reference_weights("keys_tsn.json")}, official)
    return convert_official_checkpoint(official, tmp_path / "tsn.pt")


def _read_back(spec, path: Path) -> np.ndarray:
    """A saved prediction file read as the reference evaluators read it."""
    if spec.saved_suffix == ".mat":
        from scipy.io import loadmat

        return loadmat(path)[spec.name]
    array = np.asarray(Image.open(path))
    if spec.output == "binary":
        return array / 255.0
    if spec.output == "unit_vector":
        return 2.0 * array.transpose(2, 0, 1) / 255.0 - 1.0
    return array


# --------------------------------------------------------------------------------------------- hand-checked


class _ConstantModel(DensePredictionModel):
    """Outputs the same raw value everywhere: semseg class 1, saliency logit 0, normals (0, 0, 1), depth 2 m."""

    def __init__(self) -> None:
        channels = {"semseg": 7, "saliency": 1, "normals": 3, "depth": 1}
        super().__init__(ModelConfig(arch="multi_head", tasks=tuple(channels), task_channels=channels))
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the model a device
        self.values = {"semseg": torch.eye(7)[1], "saliency": torch.zeros(1), "normals": torch.tensor([0.0, 0, 1]),
                       "depth": torch.tensor([2.0])}

    def predict_tasks(self, image, names):
        n, _, h, w = image.shape
        return {name: self.values[name][None, :, None, None].expand(n, -1, h, w) for name in names}


def _toy_samples() -> list[dict]:
    """Two images of different sizes (the predictions must come back at each one's size)."""
    semseg_a = np.ones((4, 6), np.float32)
    semseg_a[:, :2] = 2  # 8 pixels of class 2
    saliency_a = np.zeros((4, 6), np.float32)
    saliency_a[:2] = 1  # half salient
    normals = lambda h, w: np.broadcast_to(np.float32([0, 0, 1]), (h, w, 3)).copy()  # noqa: E731
    return [
        {"image": np.zeros((4, 6, 3), np.uint8), "semseg": semseg_a, "saliency": saliency_a,
         "normals": normals(4, 6), "depth": np.ones((4, 6), np.float32), "meta": {"id": "a", "size": (4, 6)}},
        {"image": np.zeros((2, 3, 3), np.uint8), "semseg": np.full((2, 3), 2, np.float32),
         "saliency": np.zeros((2, 3), np.float32), "normals": normals(2, 3), "depth": np.full((2, 3), 4, np.float32),
         "meta": {"id": "b", "size": (2, 3)}},
    ]


def test_scores_are_the_saved_predictions_at_original_size_hand_checked(tmp_path) -> None:
    specs = dataset_tasks("synthetic", ["semseg", "saliency", "normals", "depth"])
    results = evaluate_model(_ConstantModel(), _toy_samples(), specs, size=(32, 32), batch_size=2,
                             save_dir=tmp_path / "pred", progress=False)
    # semseg: class 1 predicted everywhere; class 1 has 16 TP and 8 + 6 FP -> IoU 16/30, the other 6 classes 0.
    assert results["semseg"]["mIoU"] == pytest.approx(16 / 30 / 7)
    # saliency: p = 0.5 is saved as 127 and read back as 127/255 < 0.5, so thresholds 0.2..0.45 see everything
    # salient (Jaccard a = 1/2, b = 0) and 0.5..0.9 nothing (a = 0, b = 1, both empty): max mean = 1/2.
    assert results["saliency"]["mIoU"] == pytest.approx(0.5)
    assert results["saliency"]["mIoU_per_threshold"][:6] == pytest.approx([0.25] * 6)
    # normals: (0, 0, 1) is saved as (127, 127, 255); read back its x and y are -1/255: error atan(sqrt(2)/255).
    assert results["normals"]["mErr"] == pytest.approx(math.degrees(math.atan(math.sqrt(2) / 255)), rel=1e-6)
    # depth (ASTMT): per-image RMSE |2 - 1| = 1 and |2 - 4| = 2, averaged over images.
    assert results["depth"]["rmse"] == pytest.approx(1.5)
    assert [results[t]["n_images"] for t in ("semseg", "saliency", "normals", "depth")] == [2, 2, 2, 2]
    assert np.asarray(Image.open(tmp_path / "pred/semseg/b.png")).shape == (2, 3)
    assert np.asarray(Image.open(tmp_path / "pred/normals/a.png"))[0, 0].tolist() == [127, 127, 255]
    assert np.asarray(Image.open(tmp_path / "pred/saliency/a.png")).max() == 127


# ----------------------------------------------------------------------------------------------- end to end


def test_synthetic_end_to_end_cli(tmp_path) -> None:
    checkpoint = _random_checkpoint(tmp_path / "tsn.pt", "tsn_r18_synthetic")
    out = tmp_path / "result.json"
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", "synthetic", "--workers", "0",
                 "--dataset-option", "size=64", "--dataset-option", "length=6", "--edge-protocol", "mtl-survey",
                 "--save-predictions", str(tmp_path / "pred"), "-o", str(out)])
    assert code == 0
    record = json.loads(out.read_text())
    tasks = [spec.name for spec in dataset_tasks("synthetic")]
    assert list(record["tasks"]) == tasks and list(record["headline"]) == tasks
    for spec in dataset_tasks("synthetic"):
        assert spec.metric in record["tasks"][spec.name]
        assert record["headline"][spec.name]["value"] == record["tasks"][spec.name][spec.metric]
    assert record["n_images"]["semseg"] == record["n_images"]["edges"] == 6
    assert record["tasks"]["edges"]["protocol"]["name"] == "mtl-survey"
    assert record["dataset"] == {"name": "synthetic", "split": "val", "root": None, "options": SYNTHETIC,
                                 "n_images": 6}
    assert record["input_size"] == [64, 64] and record["checkpoint"]["config"]["arch"] == "tsn"
    assert record["time"]["seconds"] > 0 and record["format"] == "tsn-evaluate"
    table = out.with_suffix(".md").read_text()
    assert "| tsn.pt (tsn) |" in table and "edges odsF ↑" in table and "normals mErr ↓" in table
    for spec in dataset_tasks("synthetic"):
        files = sorted((tmp_path / "pred" / spec.name).iterdir())
        assert [f.name for f in files] == [f"val_{i:06d}{spec.saved_suffix}" for i in range(6)]
    assert np.asarray(Image.open(tmp_path / "pred/normals/val_000003.png")).shape == (64, 64, 3)


def test_workers_give_the_same_scores(tmp_path) -> None:
    model = create_model("multihead_r18_synthetic", decoder_channels=TINY_DECODER).eval()
    specs = dataset_tasks("synthetic", ["edges", "semseg"])
    data = build_dataset("synthetic", "val", tasks=["edges", "semseg"], **SYNTHETIC)
    kwargs = {"size": (64, 64), "edge_protocol": "astmt", "progress": False}
    inline = evaluate_model(model, data, specs, workers=0, batch_size=4, **kwargs)
    pooled = evaluate_model(model, data, specs, workers=2, batch_size=3, **kwargs)
    assert inline["edges"]["odsF"] == pooled["edges"]["odsF"] and inline["semseg"] == pooled["semseg"]


def test_authors_checkpoint_on_pascal_fixture_matches_the_saved_files(tmp_path, pascal_root) -> None:
    """Every score equals the reference evaluators run on the saved PNGs (edges: the folder benchmark)."""
    checkpoint = _authors_tsn_checkpoint(tmp_path)
    record = evaluate_checkpoint(checkpoint, "pascal_context", "val", data_root=pascal_root, size=64, workers=0,
                                 save_dir=tmp_path / "pred", progress=False)
    specs = dataset_tasks("pascal_context")
    assert list(record["tasks"]) == [s.name for s in specs] and record["checkpoint"]["parameters"] == 18_258_805
    assert record["protocols"]["edges"] == {"protocol": "astmt", "image_set": "val (the evaluated split)"}
    dataset = build_dataset("pascal_context", "val", root=pascal_root)
    for spec in specs:
        if spec.name == "edges":
            continue
        metric = make_metric(spec)
        for sample in dataset:
            prediction = _read_back(spec, tmp_path / "pred" / spec.name / f"{sample['meta']['id']}.png")
            assert prediction.shape[-2:] == sample["meta"]["size"]
            metric.update(prediction, sample[spec.name])
        expected = {k: v for k, v in metric.compute().items() if isinstance(v, (int, float))}
        assert {k: record["tasks"][spec.name][k] for k in expected} == pytest.approx(expected), spec.name
    # parts: two val images have no person or no parts -> uniform labels, skipped as the reference does
    assert record["n_images"] == {"semseg": 4, "human_parts": 2, "edges": 4, "normals": 4, "saliency": 4}
    truth = functools.partial(_seism_truth, dataset)
    folder = evaluate_edge_folder(tmp_path / "pred/edges", truth, PASCAL_VAL_IDS, "astmt", workers=1, progress=False)
    assert record["tasks"]["edges"]["odsF"] == folder["odsF"] and record["tasks"]["edges"]["AP"] == folder["AP"]


def _seism_truth(dataset, image_id: str) -> np.ndarray:
    return seism_ground_truth(dataset.edge_eval_ground_truth(image_id))


def test_edge_image_set_list_is_used_when_the_dataset_has_it(tmp_path, pascal_root) -> None:
    (pascal_root / "ImageSets/Context/test_new.txt").write_text("\n".join(PASCAL_VAL_IDS[1:3]) + "\n")
    checkpoint = _random_checkpoint(tmp_path / "tsn.pt", "tsn_r18_pascal")
    record = evaluate_checkpoint(checkpoint, "pascal_context", tasks=["edges", "sal"], data_root=pascal_root,
                                 size=64, workers=0, edge_protocol="mtl-survey", progress=False)
    assert record["n_images"] == {"edges": 2, "saliency": 4}
    assert record["protocols"]["edges"]["image_set"].startswith("test_new (")
    # without the list every image of the split is scored, and the record says so
    (pascal_root / "ImageSets/Context/test_new.txt").unlink()
    record = evaluate_checkpoint(checkpoint, "pascal_context", tasks=["edges"], data_root=pascal_root, size=64,
                                 workers=0, edge_protocol="mtl-survey", progress=False)
    assert record["n_images"] == {"edges": 4}
    assert record["protocols"]["edges"]["image_set"].startswith("all images of the split (no test_new list")


def test_nyud_fixture(tmp_path, nyud_root) -> None:
    checkpoint = _random_checkpoint(tmp_path / "nyud.pt", "multihead_r18_nyud")
    record = evaluate_checkpoint(checkpoint, "nyud", "val", data_root=nyud_root, size=(64, 96), workers=0,
                                 save_dir=tmp_path / "pred", progress=False)
    assert record["input_size"] == [64, 96]
    assert list(record["tasks"]) == ["semseg", "depth", "normals", "edges"]
    assert record["n_images"] == {"semseg": 4, "depth": 4, "normals": 4, "edges": 4}
    assert record["tasks"]["semseg"]["num_classes"] == 41 and record["tasks"]["depth"]["protocol"] == "astmt"
    assert record["protocols"]["edges"]["protocol"] == "atrc-nyud"
    assert sorted(p.name for p in (tmp_path / "pred/depth").iterdir()) == [f"{i}.mat" for i in
                                                                         ("0100", "0101", "0102", "0103")]


# ------------------------------------------------------------------------------------------------ baselines


def test_paper_table_average_drop() -> None:
    """The README table: recomputed from its rounded numbers the average drop is 0.28 (reference-model.md)."""
    specs = dataset_tasks("pascal_context")
    single = {"edges": 71.3, "semseg": 64.3, "human_parts": 55.5, "normals": 16.3, "saliency": 62.9}
    tsn = {"edges": 70.6, "semseg": 64.2, "human_parts": 55.0, "normals": 16.3, "saliency": 63.3}
    comparison = compare_with_baseline(tsn, single, specs)
    assert comparison["average_drop"] == pytest.approx(0.2805, abs=1e-4)
    assert comparison["drops"]["saliency"] == pytest.approx(-100 * 0.4 / 62.9)
    assert comparison["delta_m"] == -comparison["average_drop"] and comparison["missing"] == []


def test_baseline_drops_hand_checked_and_lower_is_better_sign() -> None:
    specs = dataset_tasks("pascal_context", ["semseg", "normals", "edges"])
    comparison = compare_with_baseline({"semseg": 60.0, "normals": 18.0, "edges": 50.0},
                                       {"semseg": 64.0, "normals": 16.0}, specs)
    # semseg 100 * (64 - 60) / 64 = 6.25; normals (lower is better) 100 * (18 - 16) / 16 = 12.5
    assert comparison["drops"] == pytest.approx({"semseg": 6.25, "normals": 12.5})
    assert comparison["average_drop"] == pytest.approx(9.375) and comparison["missing"] == ["edges"]
    with pytest.raises(TsnError, match="none of the evaluated tasks"):
        compare_with_baseline({"semseg": 60.0}, {"depth": 1.0}, dataset_tasks("pascal_context", ["semseg"]))


def test_load_baseline_formats(tmp_path) -> None:
    (tmp_path / "map.json").write_text(json.dumps({"seg": 0.643, "normals": 16.3, "edges": 71.3}))
    (tmp_path / "reproduce.json").write_text(json.dumps({"rows": {"single_task": {"values": {"saliency": 62.9}}}}))
    (tmp_path / "eval.json").write_text(json.dumps({"format": "tsn-evaluate", "headline": {
        "human_parts": {"metric": "mIoU", "value": 0.555, "table_value": 55.5, "higher_is_better": True}}}))
    values = load_baseline([tmp_path / "map.json", tmp_path / "reproduce.json", tmp_path / "eval.json"])
    assert values == pytest.approx({"semseg": 64.3, "normals": 16.3, "edges": 71.3, "saliency": 62.9,
                                    "human_parts": 55.5})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TsnError, match="not valid JSON"):
        load_baseline([tmp_path / "bad.json"])
    (tmp_path / "text.json").write_text(json.dumps({"semseg": "high"}))
    with pytest.raises(TsnError, match="one number per task"):
        load_baseline([tmp_path / "text.json"])


def test_cli_baseline_adds_drops_to_json_and_table(tmp_path) -> None:
    checkpoint = _random_checkpoint(tmp_path / "tsn.pt", "tsn_r18_synthetic")
    common = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "synthetic", "--workers", "0",
              "--dataset-option", "size=64", "--dataset-option", "length=6", "--tasks", "semseg", "normals",
              "--size", "64"]
    assert main([*common, "-o", str(tmp_path / "single.json")]) == 0
    single = json.loads((tmp_path / "single.json").read_text())
    assert main([*common, "--baseline", str(tmp_path / "single.json"), "-o", str(tmp_path / "multi.json")]) == 0
    baseline = json.loads((tmp_path / "multi.json").read_text())["baseline"]
    assert baseline["drops"] == pytest.approx({"semseg": 0.0, "normals": 0.0})  # same model: no drop
    assert baseline["values"]["semseg"] == pytest.approx(100 * single["tasks"]["semseg"]["mIoU"])
    assert "positive = worse" in baseline["sign"]
    table = (tmp_path / "multi.md").read_text()
    assert "| single-task baseline |" in table and "positive = worse" in table


def test_markdown_table_layout() -> None:
    specs = dataset_tasks("pascal_context", ["semseg", "normals"])
    table = markdown_table([TableRow("TSN", {"semseg": 64.2, "normals": 16.3}, 0.3, 18_258_805),
                            TableRow("Single task", {"semseg": 64.3})], specs)
    assert table.splitlines() == [
        "| Model | semseg mIoU ↑ | normals mErr ↓ | Avg. drop % ↓ | Parameters |",
        "|---|---|---|---|---|",
        "| TSN | 64.20 | 16.30 | 0.30 | 18,258,805 |",
        "| Single task | 64.30 | - | - | - |",
    ]


# ---------------------------------------------------------------------------------------------- error paths


def test_error_paths_are_one_line(tmp_path, capsys) -> None:
    checkpoint = _random_checkpoint(tmp_path / "tsn.pt", "tsn_r18_pascal")
    base = ["evaluate", "--checkpoint", str(checkpoint), "--workers", "0", "-o", str(tmp_path / "r.json")]
    cases = {
        "missing dataset": ([*base, "--data-root", str(tmp_path / "nowhere")], "PASCAL_MT not found"),
        "unknown task": ([*base, "--tasks", "colour"], "unknown task 'colour'"),
        "task not in checkpoint": ([*base, "--dataset", "nyud", "--tasks", "depth"], "no task 'depth'"),
        "wrong dataset": ([*base, "--dataset", "nyud"], "predicts 21 channels for semseg but 'nyud' has 41"),
        "missing checkpoint": (["evaluate", "--checkpoint", str(tmp_path / "none.pt")], "does not exist"),
        "bad baseline": ([*base, "--baseline", str(tmp_path / "none.json")], "none.json cannot be read"),
        "unknown dataset": ([*base, "--dataset", "coco"], "unknown dataset 'coco'"),
        "bad option": ([*base, "--dataset", "synthetic", "--dataset-option", "size"], "not KEY=VALUE"),
        "tiny input": ([*base, "--size", "32"], "--size must be at least 64 x 64 for this model"),
    }
    for case, (argv, message) in cases.items():
        assert main(argv) == 2, case
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("tsn evaluate: error:") and message in err[0], (case, err)
    assert not (tmp_path / "r.json").exists()
