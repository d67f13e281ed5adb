"""A metric family registered by a plugin brings its options: they are read when used, not frozen at import, so
``tsn --plugin`` can add a family and a protocol that sets its option."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tsn.cli import main
from tsn.errors import TsnError
from tsn.evaluation import protocols
from tsn.metrics import METRIC_FAMILIES, build_metric, check_metric_options, metric_options
from tsn.models import create_model
from tsn.models.checkpoint import save_checkpoint

PLUGIN = '''
import dataclasses

import numpy as np

from tsn.evaluation.protocols import get_protocol, register_protocol
from tsn.metrics import register_metric_family


class DepthWithin:
    """Share of valid pixels whose depth error is below a tolerance."""

    def __init__(self, tolerance):
        self.tolerance, self.hits, self.total = tolerance, 0, 0

    def update(self, pred, label):
        valid = np.asarray(label) > 0
        self.hits += int((np.abs(np.asarray(pred) - np.asarray(label))[valid] < self.tolerance).sum())
        self.total += int(valid.sum())

    def compute(self):
        return {"within": self.hits / max(self.total, 1), "n_images": 0}

    def reset(self):
        self.hits = self.total = 0


def build(channels, ignore_index, class_names, *, tolerance=0.5):
    return DepthWithin(tolerance)


register_metric_family("depth_within", build, options={"depth_within_tolerance": "tolerance"})
register_protocol(dataclasses.replace(
    get_protocol("tsn-synthetic"), name="plugin-within", title="tsn-synthetic, with a plugin's option",
    metric_options={**get_protocol("tsn-synthetic").metric_options, "depth_within_tolerance": 2.0},
))
'''


@pytest.fixture
def registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin's registrations are undone after the test."""
    monkeypatch.setattr("tsn.metrics.families.METRIC_FAMILIES", METRIC_FAMILIES)
    saved_families, saved_protocols = dict(METRIC_FAMILIES), dict(protocols._PROTOCOLS)
    yield
    METRIC_FAMILIES.clear()
    METRIC_FAMILIES.update(saved_families)
    protocols._PROTOCOLS.clear()
    protocols._PROTOCOLS.update(saved_protocols)


def test_a_plugin_family_and_its_option_through_tsn_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registries: None, one_thread_private_cache: None
) -> None:
    with pytest.raises(TsnError, match="unknown metric option 'depth_within_tolerance'"):
        check_metric_options({"depth_within_tolerance": 1.0})
    plugin = tmp_path / "within_plugin.py"
    plugin.write_text(PLUGIN)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "m.pt", create_model("tsn_r10t_synthetic"))
    out = tmp_path / "r.json"
    argv = ["--plugin", "./within_plugin.py", "evaluate", "--checkpoint", str(checkpoint), "--dataset", "synthetic",
            "--dataset-option", "size=64", "--dataset-option", "length=2", "--tasks", "depth", "--protocol",
            "plugin-within", "--workers", "0", "-o", str(out)]
    assert main(argv) == 0
    record = json.loads(out.read_text())
    assert record["protocol"]["name"] == "plugin-within"
    assert record["protocol"]["metric_options"]["depth_within_tolerance"] == 2.0
    # the option is known now, and reaches the plugin's family (and no other)
    assert "depth_within_tolerance" in metric_options()
    metric = build_metric("depth_within", ignore_index=255, depth_within_tolerance=0.25)
    metric.update(torch.tensor([[1.0, 2.0]]).numpy(), torch.tensor([[1.1, 3.0]]).numpy())
    assert metric.compute()["within"] == 0.5
    with pytest.raises(TsnError, match="already registered"):
        from tsn.metrics import register_metric_family

        register_metric_family("depth_within", lambda *a, **k: metric)
