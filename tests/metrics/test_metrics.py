"""The metric factory, the accumulator protocol, edge delegation and the multi-task score."""

from __future__ import annotations

import dataclasses
import json
import sys
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tsn.metrics as metrics
from tsn.dataset_catalog import dataset_tasks, get_dataset
from tsn.errors import TsnError
from tsn.metrics import (
    METRIC_OPTIONS,
    TaskMetric,
    average_drop,
    delta_m,
    make_metric,
    make_metrics,
    task_drops,
)
from tsn.tasks import TASKS, get_task

PAPER_SINGLE = {"edges": 71.3, "semseg": 64.3, "human_parts": 55.5, "normals": 16.3, "saliency": 62.9}
PAPER_TSN = {"edges": 70.6, "semseg": 64.2, "human_parts": 55.0, "normals": 16.3, "saliency": 63.3}


def registered(scores) -> list:
    """The registry's specs of the scored tasks: the multi-task score reads each metric's direction from them."""
    return [get_task(task) for task in scores]


class FakeEdgeMetric:
    """Stands in for tsn.metrics.edges.EdgeMetric, which another module provides."""

    def __init__(self, protocol: str = "mtl-survey", **overrides) -> None:
        self.protocol, self.overrides = protocol, overrides

    def update(self, pred, gt) -> None: ...

    def compute(self) -> dict:
        return {"odsF": 0.5, "oisF": 0.5, "AP": 0.5, "protocol": self.protocol, "n_images": 0}

    def reset(self) -> None: ...


@pytest.fixture
def fake_edges(monkeypatch: pytest.MonkeyPatch) -> type[FakeEdgeMetric]:
    module = types.ModuleType("tsn.metrics.edges")
    module.EdgeMetric = FakeEdgeMetric
    monkeypatch.setitem(sys.modules, "tsn.metrics.edges", module)
    return FakeEdgeMetric


# One tiny perfect (pred, label) pair per output kind.
_PERFECT = {
    "classes": (np.array([[0, 1], [1, 0]]), np.array([[0, 1], [1, 255]], dtype=np.float32)),
    "binary": (np.array([[[0.0, 1.0], [1.0, 0.0]]]), np.array([[0, 1], [1, 0]], dtype=np.float32)),
    "unit_vector": (np.tile(np.array([0.0, 0.0, 1.0])[:, None, None], (1, 2, 2)),) * 2,
    "scalar": (np.full((2, 2), 2.0), np.full((2, 2), 2.0)),
}


# Headline score of each synthetic task on its _PERFECT pair: 2 of 7 classes present; the fake edge score.
_EXPECTED = {"semseg": 2 / 7, "human_parts": 2 / 7, "edges": 0.5, "normals": 0.0, "saliency": 1.0, "depth": 0.0}


@pytest.mark.parametrize("name", sorted(get_dataset("synthetic").tasks))
def test_every_task_gets_a_metric_with_its_headline_key(name: str, fake_edges) -> None:
    spec = dataset_tasks("synthetic", [name])[0]
    metric = make_metric(spec)
    assert isinstance(metric, TaskMetric)
    metric.update(*_PERFECT[spec.output])
    result = metric.compute()
    assert result[spec.metric] == pytest.approx(_EXPECTED[name], abs=1e-6)
    json.dumps(result)  # JSON-ready: plain floats, ints, strings and lists


def test_the_real_edge_metric_follows_the_protocol() -> None:
    edges = pytest.importorskip("tsn.metrics.edges")
    assert isinstance(edges.EdgeMetric(), TaskMetric)


def test_segmentation_follows_the_dataset_class_count() -> None:
    (nyud_semseg,) = dataset_tasks("nyud", ["semseg"])
    metric = make_metric(nyud_semseg)
    assert metric.num_classes == 41 and metric.compute().get("class_names") is None


def test_edges_are_delegated_with_options(fake_edges) -> None:
    default = make_metric(get_task("edges"))
    assert isinstance(default, fake_edges) and default.protocol == "mtl-survey"
    chosen = make_metric(get_task("edges"), edge_protocol="seism", edge_options={"max_dist": 0.011})
    assert (chosen.protocol, chosen.overrides) == ("seism", {"max_dist": 0.011})
    assert metrics.EdgeMetric is fake_edges


def test_options_reach_only_the_metrics_that_read_them(fake_edges) -> None:
    built = make_metrics(
        dataset_tasks("synthetic"), depth_protocol="pooled", saliency_thresholds=(0.5,), edge_protocol=None
    )
    assert list(built) == list(get_dataset("synthetic").tasks)
    assert built["depth"].compute()["protocol"] == "pooled"
    assert built["saliency"].compute()["thresholds"] == [0.5]
    assert built["edges"].protocol == "mtl-survey"  # None means "the default"
    assert make_metric(get_task("normals"), normals_bins_per_degree=10).bins_per_degree == 10


def test_factory_errors_are_one_line() -> None:
    with pytest.raises(TsnError, match="unknown metric option 'depth_protcol'; known options: "):
        make_metric(get_task("depth"), depth_protcol="pooled")
    odd = dataclasses.replace(get_task("depth"), name="height", metric="mae")
    with pytest.raises(TsnError, match="task 'height' has output 'scalar' with metric 'mae'"):
        make_metric(odd)
    assert {"depth_protocol", "edge_protocol", "skip_uniform_labels"} <= METRIC_OPTIONS


def test_a_new_task_of_a_known_kind_needs_no_code() -> None:
    roads = dataclasses.replace(get_task("saliency"), name="roads", title="Roads")
    metric = make_metric(roads)
    metric.update(*_PERFECT["binary"])
    assert metric.compute()["mIoU"] == 1.0


# ------------------------------------------------------------------------------------------ multi-task score
def test_paper_table_average_drop() -> None:
    """reference-model.md section 5: recomputed from the rounded table, the average drop is 0.28."""
    drops = task_drops(PAPER_TSN, PAPER_SINGLE, registered(PAPER_TSN))
    assert drops == pytest.approx(
        {"edges": 70 / 71.3, "semseg": 10 / 64.3, "human_parts": 50 / 55.5, "normals": 0.0, "saliency": -40 / 62.9}
    )
    specs = registered(PAPER_TSN)
    assert round(average_drop(PAPER_TSN, PAPER_SINGLE, specs), 2) == 0.28
    assert delta_m(PAPER_TSN, PAPER_SINGLE, specs) == -average_drop(PAPER_TSN, PAPER_SINGLE, specs)


def test_lower_is_better_tasks_flip_the_sign() -> None:
    # Normals error 16.3 -> 17.93 is 10 % worse; depth RMSE 0.5 -> 0.45 is 10 % better.
    specs = registered(["normals", "depth"])
    drops = task_drops({"normals": 17.93, "depth": 0.45}, {"normals": 16.3, "depth": 0.5}, specs)
    assert drops == pytest.approx({"normals": 10.0, "depth": -10.0})


def test_specs_decide_the_direction() -> None:
    inverted = dataclasses.replace(get_task("semseg"), higher_is_better=False)
    assert task_drops({"semseg": 0.6}, {"semseg": 0.5}, [inverted]) == pytest.approx({"semseg": 20.0})
    assert task_drops({"semseg": 0.6}, {"semseg": 0.5}, [get_task("semseg")]) == pytest.approx({"semseg": -20.0})


def test_multitask_errors_are_one_line() -> None:
    specs = registered(["semseg", "edges"])
    with pytest.raises(TsnError, match="on one side only"):
        average_drop({"semseg": 0.6}, {"semseg": 0.5, "edges": 0.7}, specs)
    with pytest.raises(TsnError, match="non-zero baseline"):
        average_drop({"semseg": 0.6}, {"semseg": 0.0}, specs)
    with pytest.raises(TsnError, match="no multi-task score"):
        average_drop({}, {}, specs)
    with pytest.raises(TsnError, match="no task spec given for 'sky'"):
        average_drop({"sky": 0.6}, {"sky": 0.5}, specs)


_scores = st.dictionaries(
    st.sampled_from(sorted(TASKS)), st.tuples(st.floats(0.01, 100), st.floats(0.01, 100)), min_size=1
)


@settings(max_examples=100, deadline=None)
@given(_scores, st.floats(0.1, 10))
def test_average_drop_properties(scores, scale) -> None:
    multi = {task: pair[0] for task, pair in scores.items()}
    single = {task: pair[1] for task, pair in scores.items()}
    specs = registered(scores)
    drop = average_drop(multi, single, specs)
    assert average_drop(single, single, specs) == 0.0
    assert delta_m(multi, single, specs) == -drop
    scaled_multi, scaled_single = ({t: v * scale for t, v in d.items()} for d in (multi, single))
    assert average_drop(scaled_multi, scaled_single, specs) == pytest.approx(drop, abs=1e-9)
    # Antisymmetry in the direction of each task: flipping every task's "better" flips the sign.
    flipped = [dataclasses.replace(TASKS[t], higher_is_better=not TASKS[t].higher_is_better) for t in scores]
    assert average_drop(multi, single, flipped) == pytest.approx(-drop)
    # Better on every task (in its own direction) means a negative drop.
    better = {t: v * (1.5 if TASKS[t].higher_is_better else 0.5) for t, v in single.items()}
    assert average_drop(better, single, specs) < 0
