"""The task space as a feature: a TSN run on task-code mixtures and on any task embedding (float64 exactness)."""

from __future__ import annotations

import pytest
import torch

from tsn.errors import TsnError
from tsn.models import TaskSwitchingNet, build_model, model_config
from tsn.models.layers import pool_channels

TASKS = ("semseg", "edges", "normals", "depth")


@pytest.fixture(scope="module")
def tsn() -> TaskSwitchingNet:
    torch.manual_seed(0)
    model = build_model(model_config("tsn_r10t_synthetic", tasks=list(TASKS), decoder_channels=(16, 8, 8, 8, 8)))
    assert isinstance(model, TaskSwitchingNet)
    return model.double().eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_a_one_task_mixture_is_that_task(tsn: TaskSwitchingNet, image: torch.Tensor) -> None:
    with torch.no_grad():
        raw = tsn.decode_mixtures(image, [{task: 1.0} for task in TASKS])
        expected = tsn(image, list(TASKS))
    assert raw.shape == (len(TASKS), 1, tsn.head.out_channels, 64, 64) and raw.dtype == torch.float64
    for k, task in enumerate(TASKS):
        got = pool_channels(raw[k], tsn.task_specs[task].channels)
        torch.testing.assert_close(got, expected[task], rtol=0, atol=1e-12)


def test_the_code_of_a_mixture_weights_each_task_block(tsn: TaskSwitchingNet) -> None:
    n = tsn.task_embedding.n_ones
    code = tsn.task_code({"normals": 0.25, "seg": 0.75})  # aliases are accepted
    assert code.shape == (1, len(TASKS) * n)
    expected = torch.zeros(len(TASKS) * n, dtype=tsn.head.weight.dtype)  # the code is in the model's precision
    expected[0:n], expected[2 * n : 3 * n] = 0.75, 0.25
    torch.testing.assert_close(code[0], expected, rtol=0, atol=0)
    one_hot = tsn.task_embedding.task_code(tsn.task_index(["edges"])).to(code.dtype)
    torch.testing.assert_close(tsn.task_code({"edges": 3.0}) / 3.0, one_hot, rtol=0, atol=0)


@pytest.mark.parametrize("factor", [4.0, 1024.0])
def test_only_the_ratios_of_a_mixture_matter(tsn: TaskSwitchingNet, factor: float) -> None:
    """PixelNorm divides the code by its RMS, so scaling every weight leaves the embedding unchanged up to the
    norm's eps: ``x / sqrt(m + eps)`` against ``x / sqrt(m + eps / f**2)``, a relative change below
    ``eps / (2 m) = 1e-8 / (2 * 0.09375) ~ 5.4e-8`` for this code's mean square ``m``. The weights are powers of
    two, so the codes are exact multiples of each other."""
    mixture = {"semseg": 0.25, "normals": 0.5, "depth": 0.25}
    with torch.no_grad():
        code = tsn.task_code(mixture).double()
        scaled_code = tsn.task_code({k: factor * v for k, v in mixture.items()}).double()
        torch.testing.assert_close(scaled_code, factor * code, rtol=0, atol=0)
        base, scaled = tsn.task_embedding.embed_code(code), tsn.task_embedding.embed_code(scaled_code)
    assert float(code.pow(2).mean()) == 0.09375
    torch.testing.assert_close(scaled, base, rtol=6e-8, atol=1e-12)
    assert not torch.equal(scaled, base)  # the eps is there: invariance is up to it, not exact


def test_any_embedding_decodes_like_the_task_embeddings(tsn: TaskSwitchingNet, image: torch.Tensor) -> None:
    with torch.no_grad():
        w = tsn.embed(["depth", "edges"])
        raw = tsn.decode_embeddings(image, w)
        halfway = tsn.decode_embeddings(image, 0.5 * (w[:1] + w[1:]))
        expected = tsn(image, ["depth", "edges"])
    torch.testing.assert_close(pool_channels(raw[0], 1), expected["depth"], rtol=0, atol=1e-12)
    torch.testing.assert_close(pool_channels(raw[1], 1), expected["edges"], rtol=0, atol=1e-12)
    assert halfway.shape == (1, 1, tsn.head.out_channels, 64, 64)
    assert not torch.allclose(halfway[0], raw[0]) and not torch.allclose(halfway[0], raw[1])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, x: m.task_code({"saliency": 1.0}), "this model has no task 'saliency'; its tasks: semseg"),
        (lambda m, x: m.task_code({"bogus": 1.0}), "unknown task 'bogus'"),
        (lambda m, x: m.task_code({"semseg": -1.0, "edges": 2.0}), "must be finite, non-negative and not all zero"),
        (lambda m, x: m.task_code({"semseg": 0.0}), "must be finite, non-negative and not all zero"),
        (lambda m, x: m.task_code({"semseg": float("nan")}), "must be finite, non-negative and not all zero"),
        (lambda m, x: m.task_embedding.embed_code(torch.ones(1, 7)), "a task code is a K x 80 matrix"),
        (lambda m, x: m.decode_embeddings(x, torch.ones(3)), "task embeddings are a K x 100 matrix"),
        (lambda m, x: m.decode_embeddings(x, torch.ones(2, 99)), "task embeddings are a K x 100 matrix"),
        (lambda m, x: m.decode_mixtures(x, [{"semseg": 1.0}, {"normal": 0.0}]), "not all zero"),
    ],
)
def test_bad_mixtures_and_embeddings_are_one_line_errors(tsn: TaskSwitchingNet, image: torch.Tensor, call,
                                                         message: str) -> None:
    with pytest.raises(TsnError, match=message) as error:
        call(tsn, image)
    assert "\n" not in str(error.value)
