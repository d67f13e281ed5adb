"""The model card states what the model is and quotes its evaluation exactly; converted checkpoints carry their origin.

The end-to-end test is the user's path: ``tsn train --save-pretrained`` (the card lists the recipe and the run's
validation), ``tsn evaluate`` of that folder, then ``tsn save-pretrained --evaluation`` (the card quotes the
evaluation file's protocol and every metric, and its Hub metadata holds the very same numbers).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml

import tsn
from training.tiny_runs import tiny_run
from tsn.cli import main
from tsn.errors import TsnError
from tsn.hub.card import CITATION, scalar_metrics

pytestmark = pytest.mark.usefixtures("one_thread_private_cache")


def _card(folder: Path):
    from huggingface_hub import ModelCard

    return ModelCard.load(folder / "README.md")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny `tsn train --save-pretrained` run: (run folder, pretrained folder)."""
    root = tmp_path_factory.mktemp("card")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_run({"epochs": 1, "validation.metrics": True})))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TSN_CACHE_DIR", str(root / "cache"))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            code = main(["train", "--config", str(config), "--out", str(root / "run"), "--no-progress",
                         "--save-pretrained", str(root / "tiny-tsn")])
        finally:
            torch.set_num_threads(threads)
    assert code == 0
    return root / "run", root / "tiny-tsn"


def test_train_writes_a_card_with_the_recipe_and_its_validation(trained) -> None:
    run, folder = trained
    card = (folder / "README.md").read_text()
    result = json.loads((run / "result.json").read_text())
    assert "Trained with `tsn train` on **synthetic**, split `train`" in card
    for line in ("- optimizer: `adam`", "- learning rate: `0.001`", "- batch size: `4`", "- seed: `3`"):
        assert line in card
    assert "The last validation during training" in card and "not the reference protocol" in card
    semseg = result["validation"]["metrics"]["semseg"]["mIoU"]
    assert f"| semseg | mIoU (higher is better) | {semseg:.6g} |" in card
    assert _card(folder).data.eval_results is None  # the Hub metadata quotes evaluations only, not validations
    assert torch.equal(tsn.load_model(folder).state_dict()["head.weight"],
                       tsn.load_model(run).state_dict()["head.weight"])  # the run's best checkpoint


def test_the_card_quotes_the_evaluation_file_exactly(trained, tmp_path: Path, capsys) -> None:
    run, folder = trained
    evaluation = tmp_path / "evaluate.json"
    assert main(["evaluate", "--checkpoint", str(folder), "--dataset", "synthetic", "--dataset-option", "length=3",
                 "--dataset-option", "size=64", "--workers", "0", "-o", str(evaluation)]) == 0
    capsys.readouterr()
    shared = tmp_path / "shared"
    assert main(["save-pretrained", str(run), "-o", str(shared), "--evaluation", str(evaluation)]) == 0
    record = json.loads(evaluation.read_text())
    copied = json.loads((shared / "evaluation.json").read_text())
    assert copied["tasks"] == record["tasks"] and copied["protocols"] == record["protocols"]
    assert copied["checkpoint"]["path"] == ".../tiny-tsn"  # the saver's folders are not published
    for name in ("README.md", "config.json", "evaluation.json"):
        assert str(tmp_path.parent) not in (shared / name).read_text(), name
    card = _card(shared)
    quoted = {(r.task_type, r.metric_type): r.metric_value for r in card.data.eval_results}
    expected = {(task, metric): value for task, result in record["tasks"].items()
                for metric, value in scalar_metrics(result).items()}
    assert quoted == expected and len(expected) > 3 * len(record["tasks"])
    assert all(r.dataset_type == "synthetic" and r.dataset_split == "val" for r in card.data.eval_results)
    text = card.text
    assert "Scored with `tsn evaluate`" in text and "split `val` (3 images), network input 64 x 64" in text
    for task, entry in record["protocols"].items():
        assert f"- {task}: " in text, task
        if isinstance(entry, dict):
            assert all(f"`{value}`" in text for value in entry.values())
    for task, entry in record["headline"].items():
        assert f"| {task} | {entry['metric']} (" in text and f"{entry['table_value']:.6g}" in text
    assert "- optimizer: `adam`" in text  # the run's recipe too
    assert CITATION in text and "## Licence" in text and "`mit`" in text
    size = record["input_size"]
    assert f"for one task at {size[0]} x {size[1]}" in text and f"{record['checkpoint']['parameters']:,}" in text


def test_a_record_that_is_not_an_evaluation_is_refused(trained, tmp_path: Path, capsys) -> None:
    run, _ = trained
    (tmp_path / "result.json").write_text('{"format": "something-else"}')
    assert main(["save-pretrained", str(run), "-o", str(tmp_path / "out"), "--evaluation",
                 str(tmp_path / "result.json")]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_a_converted_checkpoint_states_its_origin_and_evidence(tmp_path: Path, capsys) -> None:
    from tsn.models.convert import convert_official_state_dict
    from tsns_reference import reference_weights

    state = reference_weights("keys_tsn.json")
    official = tmp_path / "tsns_model.pth"
    torch.save({"model_state": state}, official)
    assert main(["convert", str(official), "--save-pretrained", str(tmp_path / "tsns")]) == 0
    assert "tsn push" in capsys.readouterr().out
    folder = tmp_path / "tsns"
    digest = hashlib.sha256(official.read_bytes()).hexdigest()
    config = json.loads((folder / "config.json").read_text())
    assert config["converted_from"]["sha256"] == digest and config["license"] == "unknown"
    assert config["converted_from"]["tensors"] == len(state)
    card = (folder / "README.md").read_text()
    assert "## Origin" in card and f"sha256 `{digest}`" in card and "`tsns_model.pth`" in card
    assert f"each of the {len(state)} tensors of the file" in card and "tests/models/test_parity.py" in card
    assert "grants no licence" in card and "license: unknown" in card
    expected = convert_official_state_dict(state, source="fixture").state_dict()
    loaded = tsn.load_model(folder).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())


def test_provenance_refuses_a_model_not_converted_from_the_file(tmp_path: Path) -> None:
    from tsn.hub import conversion_provenance
    from tsn.models.convert import convert_official_state_dict
    from tsns_reference import reference_weights

    state = reference_weights("keys_tsn.json")
    official = tmp_path / "tsns_model.pth"
    torch.save({"model_state": state}, official)
    model = convert_official_state_dict(state, source="fixture")
    with torch.no_grad():
        model.head.bias[0] += 1.0
    with pytest.raises(TsnError, match=r"1 of its \d+ tensors are not among the converted model's"):
        conversion_provenance(official, model)


def test_a_runs_own_evaluation_is_quoted_when_it_scored_that_run(trained, tmp_path: Path, capsys) -> None:
    import shutil

    run = Path(shutil.copytree(trained[0], tmp_path / "run"))
    assert main(["evaluate", "--checkpoint", str(run), "--dataset", "synthetic", "--dataset-option", "length=2",
                 "--dataset-option", "size=64", "--workers", "0", "-o", str(run / "evaluation.json")]) == 0
    assert main(["save-pretrained", str(run / "checkpoints" / "best.pt"), "-o", str(tmp_path / "a")]) == 0
    assert "Scored with `tsn evaluate`" in (tmp_path / "a" / "README.md").read_text()  # found through the run
    record = json.loads((run / "evaluation.json").read_text())
    record["checkpoint"]["path"] = str(tmp_path / "elsewhere.pt")  # a record of another model is not quoted
    (run / "evaluation.json").write_text(json.dumps(record))
    assert main(["save-pretrained", str(run), "-o", str(tmp_path / "b")]) == 0
    card = (tmp_path / "b" / "README.md").read_text()
    assert "Scored with" not in card and "The last validation during training" in card
    capsys.readouterr()
