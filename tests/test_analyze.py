"""``tsn analyze``: task similarities of a TSN's embeddings and AdaIN modulations, and the task dendrogram."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from error_model import assert_close_float32, assert_close_float64
from tsn.cli import main
from tsn.data.transforms import build_transforms
from tsn.errors import TsnError
from tsn.models import TaskSwitchingNet, build_model, model_config
from tsn.models.checkpoint import save_checkpoint
from tsn.studies.analysis import PATH_SPACES, analyze_tsn, cosine_similarity_matrix, path_image, task_path

DECODER = (32, 16, 16, 16, 16)
LAYERS = [f"decoder.laterals.{i}" for i in range(5)] + [f"decoder.fuse.{i}" for i in range(4)] + ["decoder.final"]


@pytest.fixture(scope="module")
def tsn() -> TaskSwitchingNet:
    torch.manual_seed(0)
    model = build_model(model_config("tsn_r18_synthetic", decoder_channels=DECODER))
    assert isinstance(model, TaskSwitchingNet)
    return model.eval()


def test_cosine_similarity_matrix_golden_values() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [-1.0, 0.0]])
    s = 1 / math.sqrt(2)
    expected = [[1, 0, s, -1], [0, 1, s, 0], [s, s, 1, -s], [-1, 0, -s, 1]]
    # A cosine is a dot product, two norms and a division: 3 accumulating steps over 2 components.
    assert_close_float64(cosine_similarity_matrix(vectors), expected, reduction=2, depth=3, sides=1)


@settings(max_examples=30, deadline=None)
@given(
    vectors=arrays(np.float64, st.tuples(st.integers(2, 6), st.integers(1, 8)),
                   elements=st.floats(-10, 10).filter(lambda v: abs(v) > 1e-3)),
    scale=st.floats(0.1, 10),
)
def test_cosine_matrix_is_symmetric_bounded_unit_diagonal_and_scale_invariant(
    vectors: np.ndarray, scale: float
) -> None:
    matrix = cosine_similarity_matrix(vectors)
    assert np.array_equal(matrix, matrix.T) and np.all(np.diag(matrix) == 1.0)
    assert matrix.min() >= -1.0 and matrix.max() <= 1.0
    assert_close_float64(cosine_similarity_matrix(scale * vectors), matrix, reduction=vectors.shape[1], depth=3,
                         scale=1.0)


def test_analysis_compares_embeddings_and_every_adain_layer(tsn: TaskSwitchingNet) -> None:
    analysis = analyze_tsn(tsn)
    assert analysis.tasks == tsn.tasks and len(tsn.tasks) == 6
    with torch.no_grad():
        w = tsn.embed(tsn.tasks).double()
        expected = F.cosine_similarity(w[:, None], w[None], dim=-1).numpy()
        scale, shift = tsn.decoder.fuse[1].modulation(tsn.embed(tsn.tasks))
    assert_close_float64(analysis.embedding_cosine, expected, reduction=w.shape[1], depth=3, scale=1.0)
    assert [layer.name for layer in analysis.layers] == LAYERS
    assert [layer.channels for layer in analysis.layers] == [64, 64, 128, 256, 512, *DECODER[:4], DECODER[4]]
    fuse = analysis.layers[6]
    # The expected cosines are float32 (torch), the analysis's float64: one float32 side.
    for got, vectors in ((fuse.scale_cosine, scale), (fuse.shift_cosine, shift)):
        expected32 = F.cosine_similarity(vectors[:, None], vectors[None], dim=-1)
        assert_close_float32(got, expected32, reduction=vectors.shape[1], depth=3, sides=1, scale=1.0)
    layer_mean = sum(layer.shift_cosine[0, 3] for layer in analysis.layers) / len(LAYERS)
    assert analysis.mean_shift_cosine[0, 3] == pytest.approx(layer_mean)
    assert analysis.linkage.shape == (5, 4)


def test_analyze_command_writes_json_and_both_figures(
    tsn: TaskSwitchingNet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = save_checkpoint(tmp_path / "tsn.pt", tsn)
    assert main(["analyze", "--checkpoint", str(checkpoint), "-o", str(tmp_path / "out")]) == 0
    assert "most similar embeddings" in capsys.readouterr().out
    data = json.loads((tmp_path / "out" / "analysis.json").read_text())
    tasks = list(tsn.tasks)
    assert data["tasks"] == tasks and data["checkpoint"] == str(checkpoint)
    for key in ("embedding_cosine", "mean_scale_cosine", "mean_shift_cosine"):
        matrix = np.array(data[key])
        assert matrix.shape == (6, 6) and np.array_equal(matrix, matrix.T)
        np.testing.assert_allclose(np.diag(matrix), 1.0)
        assert -1 <= matrix.min() and matrix.max() <= 1 + 1e-12
    assert [layer["name"] for layer in data["layers"]] == LAYERS
    assert {"scale_cosine", "shift_cosine", "channels"} <= set(data["layers"][0])
    assert sorted(data["dendrogram"]["leaves"]) == sorted(tasks) and data["dendrogram"]["method"] == "average"
    assert np.array(data["dendrogram"]["linkage"]).shape == (5, 4)
    for name in ("similarity.png", "dendrogram.png"):
        with Image.open(tmp_path / "out" / name) as image:
            assert image.format == "PNG" and min(image.size) > 100
    assert not list((tmp_path / "out").glob(".*.tsn-tmp-*"))  # atomic writes leave no temporary files


def test_non_tsn_checkpoint_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = build_model(model_config("single_r18_synthetic", decoder_channels=DECODER))
    checkpoint = save_checkpoint(tmp_path / "single.pt", model)
    assert main(["analyze", "--checkpoint", str(checkpoint), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "single_task model" in err[0] and "only Task Switching Networks" in err[0]
    assert not (tmp_path / "out").exists()


def test_single_task_tsn_has_no_relationships() -> None:
    model = build_model(model_config("tsn_r18_synthetic", tasks=["edges"], decoder_channels=DECODER))
    with pytest.raises(TsnError, match="at least two"):
        analyze_tsn(model)


# ------------------------------------------------------------------------------------------------ task paths
@pytest.fixture(scope="module")
def tsn64(tsn: TaskSwitchingNet) -> TaskSwitchingNet:
    """The same TSN in float64, where the path's ends match the tasks' own outputs to rounding."""
    return copy.deepcopy(tsn).double()


def own_picture(model: TaskSwitchingNet, image: np.ndarray, task: str) -> np.ndarray:
    tensor = build_transforms("eval", image.shape[:2], tasks=(), seed=0)({"image": image})["image"][None].double()
    spec = model.task_specs[task]
    with torch.no_grad():
        return spec.render(spec.postprocess(model(tensor, task))[0].numpy())


@pytest.mark.parametrize("space", PATH_SPACES)
def test_a_task_path_starts_and_ends_at_the_tasks_themselves(tsn64: TaskSwitchingNet, space: str) -> None:
    image = path_image("3", 64)
    path = task_path(tsn64, image, "seg", "normals", steps=4, space=space)
    assert (path.start, path.end, path.space) == ("semseg", "normals", space)
    assert path.weights == (0.0, 1 / 3, 2 / 3, 1.0) and np.array_equal(path.image, image)
    assert len(path.as_start) == len(path.as_end) == 4
    for picture in (*path.as_start, *path.as_end):
        assert picture.dtype == np.uint8 and picture.shape == (64, 64, 3)
    np.testing.assert_array_equal(path.as_start[0], own_picture(tsn64, image, "semseg"))
    np.testing.assert_array_equal(path.as_end[-1], own_picture(tsn64, image, "normals"))
    assert not np.array_equal(path.as_end[1], path.as_end[0]) and not np.array_equal(path.as_end[1], path.as_end[3])


def test_the_two_spaces_share_their_ends_but_not_their_middles(tsn64: TaskSwitchingNet) -> None:
    image = path_image("1", 64)
    code, embedding = (task_path(tsn64, image, "depth", "edges", steps=3, space=s) for s in PATH_SPACES)
    for a, b in ((code.as_start[0], embedding.as_start[0]), (code.as_end[2], embedding.as_end[2])):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(code.as_start[1], embedding.as_start[1])


@pytest.fixture(scope="module")
def tsn_checkpoint(tsn: TaskSwitchingNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("path") / "tsn.pt", tsn)


def test_analyze_draws_the_path_between_two_tasks(tsn_checkpoint: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = tsn_checkpoint
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(photo)
    args = ["analyze", "--checkpoint", str(checkpoint), "-o", str(tmp_path / "out"), "--path", "semseg", "depth",
            "--steps", "3", "--image", str(photo)]  # any size: the network pads and crops
    assert main(args) == 0
    assert "path_semseg_depth.png" in capsys.readouterr().out
    assert (tmp_path / "out" / "analysis.json").is_file()
    with Image.open(tmp_path / "out" / "path_semseg_depth.png") as figure:
        assert figure.format == "PNG" and figure.size[0] > figure.size[1] > 100


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--path", "semseg", "seg"], "two different tasks, got 'semseg' twice"),
        (["--path", "semseg", "albedo"], "this model has no task 'albedo'"),
        (["--path", "semseg", "bogus"], "unknown task 'bogus'"),
        (["--path", "semseg", "depth", "--steps", "1"], "at least 2 steps"),
        (["--path", "semseg", "depth", "--image", "missing.png"], "--image"),
        (["--path", "semseg", "depth", "--image", "4", "--size", "48"], "--size must be at least 64 x 64"),
    ],
)
def test_a_bad_path_is_one_line_and_writes_nothing(tsn_checkpoint: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str], extra: list[str],
                                                   message: str) -> None:
    checkpoint = tsn_checkpoint
    assert main(["analyze", "--checkpoint", str(checkpoint), "-o", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "out").exists()


def test_the_analyze_command_offers_the_library_path_spaces() -> None:
    """The command writes the choices out (building the parser must not import torch); they stay the library's."""
    from tsn.commands import analyze
    from tsn.studies.analysis import PATH_SPACES

    assert analyze._PATH_SPACES == PATH_SPACES
