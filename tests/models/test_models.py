"""The model family: API, parameter counts, presets, backbones, checkpoints."""

from __future__ import annotations

import pytest
import torch

from error_model import assert_close_float32
from tsn.errors import TsnError
from tsn.models import MODEL_PRESETS, ModelConfig, TaskSwitchingNet, build_model, create_model, model_config
from tsn.models.checkpoint import load_model, read_checkpoint, save_checkpoint
from tsn.models.layers import channel_pool_matrix, pool_channels

PASCAL = ("semseg", "human_parts", "edges", "normals", "saliency")


def test_paper_preset_has_the_authors_parameter_count() -> None:
    model = create_model("tsn_r18_pascal")
    assert isinstance(model, TaskSwitchingNet)
    assert model.num_parameters() == 18_258_805
    assert model.config.backbone == "resnet18.tv_in1k" and model.tasks == PASCAL


def test_tsn_size_is_constant_in_the_number_of_tasks_multi_head_is_not() -> None:
    """Adding a task adds only the task code's first-layer inputs (n_ones x latent) to a TSN."""
    config = model_config("tsn_r18_synthetic")
    tsn_counts = [build_model(config.replace(tasks=config.tasks[:n])).num_parameters() for n in (2, 6)]
    mh_counts = [build_model(config.replace(arch="multi_head", tasks=config.tasks[:n])).num_parameters()
                 for n in (2, 6)]
    assert tsn_counts[1] - tsn_counts[0] == 4 * config.n_ones * config.latent_dim
    assert mh_counts[1] - mh_counts[0] > 4 * 6_000_000  # a whole decoder per extra task


def test_forward_api_single_task_tensor_several_tasks_dict() -> None:
    model = create_model("tsn_r18_pascal").eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        one = model(image, "normals")
        some = model(image, ["sal", "seg"])  # aliases resolve to canonical names
        everything = model(image)
    assert one.shape == (1, 3, 64, 64)
    assert list(some) == ["saliency", "semseg"] and some["semseg"].shape == (1, 21, 64, 64)
    assert [everything[t].shape[1] for t in PASCAL] == [21, 7, 1, 3, 1]


def test_unknown_task_is_a_clear_error() -> None:
    model = create_model("tsn_r18_pascal")
    with pytest.raises(TsnError, match="has no task 'depth'"):
        model(torch.randn(1, 3, 32, 32), "depth")
    with pytest.raises(TsnError, match="unknown task 'colour'"):
        model(torch.randn(1, 3, 32, 32), "colour")


def test_task_embeddings_differ_and_switch_the_output() -> None:
    model = create_model("tsn_r18_pascal").eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        w = model.embed(list(PASCAL))
        edges, saliency = model(image, "edges"), model(image, "saliency")
    assert torch.cdist(w, w).triu(1)[torch.triu(torch.ones(5, 5), 1).bool()].min() > 0
    assert not torch.allclose(edges, saliency)


@pytest.mark.parametrize("arch", ["single_task", "multi_head"])
def test_baselines_forward(arch: str) -> None:
    tasks = ("normals",) if arch == "single_task" else ("semseg", "depth")
    model = build_model(model_config("tsn_r18_nyud").replace(arch=arch, tasks=tasks)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    assert {k: v.shape[1] for k, v in out.items()} == ({"normals": 3} if arch == "single_task"
                                                        else {"semseg": 41, "depth": 1})


def test_single_task_has_no_task_embedding_and_paper_block() -> None:
    model = create_model("single_r18_pascal", tasks=["human_parts"])
    assert not any("task_embedding" in k or "style" in k for k in model.state_dict())
    assert isinstance(model.decoder.final.norm, torch.nn.InstanceNorm2d) and model.decoder.final.norm.affine


def test_any_timm_backbone_with_four_levels() -> None:
    config = ModelConfig(arch="tsn", tasks=("semseg", "normals"), backbone="convnext_atto")
    model = build_model(config).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out["semseg"].shape == (1, 21, 64, 64) and out["normals"].shape == (1, 3, 64, 64)


def test_batch_norm_variant_and_custom_sizes() -> None:
    config = model_config("tsn_r18_synthetic", norm="batch", n_ones=4, n_fc=2, latent_dim=16,
                          decoder_channels=(64, 32, 32, 16, 8))
    model = build_model(config).eval()
    assert model.task_embedding.task_code(torch.tensor([1])).shape == (1, 6 * 4)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32), "depth").shape == (1, 1, 32, 32)


def test_channel_pooling_is_the_authors_adaptive_average() -> None:
    x = torch.randn(2, 21, 4, 5)
    for c in (21, 7, 3, 1):
        ref = torch.nn.functional.adaptive_avg_pool3d(x, (c, 4, 5))
        assert_close_float32(pool_channels(x, c), ref, reduction=21, what=f"{c} channels")  # 21-long matmul
    m = channel_pool_matrix(5, 2)  # overlapping groups: 0..2 and 2..4
    assert_close_float32(m, [[1 / 3] * 3 + [0, 0], [0, 0] + [1 / 3] * 3], reduction=1, sides=1)  # exact 1/3


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_round_trip_rebuilds_from_the_file_alone(tmp_path, suffix) -> None:
    model = build_model(model_config("tsn_r18_nyud")).eval()
    path = save_checkpoint(tmp_path / f"m{suffix}", model)
    payload = read_checkpoint(path)
    assert payload["format"] == "tsn-checkpoint" and payload["format_version"] == 1
    assert payload["config"]["task_channels"]["semseg"] == 41
    loaded = load_model(path)
    image = torch.randn(1, 3, 64, 64)  # instance norm needs more than 1x1 at stride 32
    with torch.no_grad():
        # Same weights, same kernels, same process: bit-identical on any CPU.
        assert torch.equal(loaded(image, "depth"), model(image, "depth"))


def test_checkpoint_errors(tmp_path) -> None:
    with pytest.raises(TsnError, match="does not exist"):
        load_model(tmp_path / "nope.pt")
    torch.save({"model_state": {}}, tmp_path / "authors.pth")
    with pytest.raises(TsnError, match="convert it first"):
        load_model(tmp_path / "authors.pth")
    (tmp_path / "trunc.pt").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(TsnError, match="cannot read checkpoint"):
        load_model(tmp_path / "trunc.pt")


def test_every_preset_builds() -> None:
    # On the meta device: shapes and parameter counts without allocating or initialising any weight.
    with torch.device("meta"):
        for name in MODEL_PRESETS:
            assert create_model(name).num_parameters() > 1_000_000
