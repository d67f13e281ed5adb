"""`tsn convert` refuses what it cannot convert faithfully, with one-line messages naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tsn.cli import main
from tsn.errors import TsnError
from tsn.models.convert import convert_official_state_dict
from tsns_reference import reference_weights


@pytest.fixture(scope="module")
def tsn_weights() -> dict[str, torch.Tensor]:
    return reference_weights("keys_tsn.json")


@pytest.fixture(scope="module")
def parts_weights() -> dict[str, torch.Tensor]:
    return reference_weights("keys_single_task_parts.json")


def _refusal(state, **kwargs) -> str:
    with pytest.raises(TsnError) as info:
        convert_official_state_dict(dict(state), source="ckpt.pth", **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def _convert_cli(tmp_path: Path, capsys, payload, name: str = "tsns_model.pth", *extra: str) -> tuple[int, str, str]:
    official = tmp_path / name
    torch.save(payload, official)
    code = main(["convert", str(official), "-o", str(tmp_path / "out.pt"), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_ninth_mapping_layer_is_refused_as_unexpected(tsn_weights) -> None:
    state = dict(tsn_weights)
    state["fcs.mapping.17.linear.weight_orig"] = torch.randn(100, 100)
    state["fcs.mapping.17.linear.bias"] = torch.zeros(100)
    message = _refusal(state)
    assert "2 unexpected weight(s)" in message and "'fcs.mapping.17.linear.weight_orig'" in message
    assert "missing" not in message
    assert "single-task networks only" in _refusal(tsn_weights, task="seg")  # a TSN serves every task


def test_missing_and_unexpected_keys_are_reported_as_such(tsn_weights) -> None:
    state = dict(tsn_weights)
    state["conv_up2.conv1.bias_renamed"] = state.pop("conv_up2.conv1.bias")
    for key in ["layer0.1.running_mean", "layer0.1.running_var", "fcs.mapping.15.linear.bias"]:
        del state[key]
    message = _refusal(state)
    assert "missing 4 weight(s)" in message and "'layer0.1.running_mean' (ours: encoder.bn1.running_mean)" in message
    assert "and 1 more" in message  # a few names and the count, not all of them
    assert "1 unexpected weight(s)" in message and "'conv_up2.conv1.bias_renamed'" in message


def test_a_missing_residual_block_is_named(tsn_weights) -> None:
    state = {k: v for k, v in tsn_weights.items() if not k.startswith("layer4.1.")}
    message = _refusal(state)
    assert "missing 12 weight(s)" in message and "'layer4.1.conv1.weight'" in message


def test_shape_mismatch_names_key_found_and_expected_shape(tsn_weights) -> None:
    state = dict(tsn_weights)
    state["fcs.mapping.1.linear.weight_orig"] = torch.randn(100, 120)  # a 120-long task code
    message = _refusal(state)
    assert "'fcs.mapping.1.linear.weight_orig'" in message and "(100, 120)" in message and "(100, 100)" in message


def test_tsn_head_must_have_21_channels(tsn_weights) -> None:
    state = dict(tsn_weights)
    state["conv_last.0.weight"] = state["conv_last.0.weight"][:7]
    state["conv_last.0.bias"] = state["conv_last.0.bias"][:7]
    message = _refusal(state)
    assert "'conv_last.0.weight'" in message and "(7, 64, 1, 1)" in message and "(21, 64, 1, 1)" in message


def test_single_task_channels_must_fit_the_named_task(parts_weights) -> None:
    message = _refusal(parts_weights, task="seg")
    assert "semseg, which has 21 channels" in message and "7 output channels" in message
    assert "--task human_parts" in message
    message = _refusal(parts_weights, task="edges")
    assert "edges, which has 1 channel," in message and "--task human_parts" in message
    assert "only" in _refusal(parts_weights, task="depth")  # no published single-task depth network
    assert convert_official_state_dict(dict(parts_weights), task="parts").tasks == ("human_parts",)


def test_unknown_channel_count_is_refused(parts_weights) -> None:
    state = dict(parts_weights)
    state["conv_last.0.weight"] = state["conv_last.0.weight"].repeat(2, 1, 1, 1)[:5]
    state["conv_last.0.bias"] = state["conv_last.0.bias"].repeat(2)[:5]
    assert "no PASCAL-Context task has 5 output channels" in _refusal(state)


def test_cli_file_name_task_that_does_not_fit_is_refused(tmp_path, capsys, parts_weights) -> None:
    code, _, err = _convert_cli(tmp_path, capsys, {"model_state": parts_weights}, "single_task_edges.pth")
    assert code == 2 and "the file name says edges" in err and "--task human_parts" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out.pt").exists()


def test_dataparallel_prefix_is_stripped_and_said(tmp_path, capsys, parts_weights) -> None:
    from tsn.models.checkpoint import load_model

    payload = {"model_state": {f"module.{k}": v for k, v in parts_weights.items()}}
    code, out, err = _convert_cli(tmp_path, capsys, payload, "single_task_parts.pth")
    assert code == 0, err
    assert "stripped the 'module.' prefix" in out and "wrote" in out
    model = load_model(tmp_path / "out.pt")
    assert model.tasks == ("human_parts",)
    assert torch.equal(model.state_dict()["head.weight"], parts_weights["conv_last.0.weight"])


def test_state_dict_nesting_and_model_prefix_are_unwrapped_and_said() -> None:
    from tsn.models.convert import _unwrap_state

    weights = {"layer0.0.weight": torch.zeros(1), "model_marker": torch.zeros(1)}
    notes: list[str] = []
    payload = {"state_dict": {f"module.model.{k}": v for k, v in weights.items()}, "epoch": 3}
    assert _unwrap_state(payload, "f.pth", notes.append) == weights
    assert len(notes) == 3 and "'state_dict'" in notes[0] and "'module.'" in notes[1] and "'model.'" in notes[2]
    partly = {"model.a": torch.zeros(1), "b": torch.zeros(1)}  # a prefix on some keys only is a real name
    assert _unwrap_state({"model_state": partly}, "f.pth", notes.append) == partly
    with pytest.raises(TsnError, match="no state_dict found"):
        _unwrap_state({"model_state": {}}, "f.pth", notes.append)


def test_output_location_is_checked_before_converting(tmp_path, capsys, monkeypatch, parts_weights) -> None:
    import tsn.models.convert

    official = tmp_path / "single_task_parts.pth"
    torch.save({"model_state": parts_weights}, official)

    def never(*args, **kwargs):
        raise AssertionError("the checkpoint was read before the output location was checked")

    monkeypatch.setattr(tsn.models.convert, "load_official_checkpoint", never)
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("x")
    for output, expected in [
        (tmp_path / "a_folder", "is a folder, not a file"),
        (tmp_path / "a_file" / "out.pt", "is a file, not a folder"),
        (tmp_path / "out.onnx", "must end in .pt"),
        (official, "is the authors' checkpoint itself"),
    ]:
        assert main(["convert", str(official), "-o", str(output)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (output, err)
    assert main(["convert", str(official), "-o", str(tmp_path / "x.pt"), "--task", "segmentations"]) == 2
    assert "unknown task" in capsys.readouterr().err
