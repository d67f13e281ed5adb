"""Edge-benchmark protocols: every choice of a published codebase (thresholds, comparison, matching distance,
thinning, aggregation), pinned by name in :data:`PROTOCOLS`."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tsn.errors import TsnError

Comparison = Literal[">=", ">"]
Aggregation = Literal["seism", "bsds"]



def bsds_thresholds(n: int) -> tuple[float, ...]:
    """BSDS500's ``n`` thresholds ``linspace(1/(n+1), n/(n+1), n)``."""
    if n < 1:
        raise TsnError(f"the number of edge thresholds must be at least 1, got {n}")
    return tuple(np.linspace(1 / (n + 1), n / (n + 1), n).tolist())


def _percent_thresholds() -> tuple[float, ...]:
    """MTL-PyTorch's 99 thresholds, written with ``'%.2f'`` and parsed back by MATLAB: 0.01 .. 0.99."""
    return tuple(float(f"{k / 100:.2f}") for k in range(1, 100))


def _hed_thresholds() -> tuple[float, ...]:
    """seism's ``parameters/HED.txt``: 0.001, 0.01, 0.02, ..., 0.99, 0.999 (101 values)."""
    return (0.001, *_percent_thresholds(), 0.999)


@dataclass(frozen=True)
class EdgeProtocol:
    """Every choice that changes an edge score; recorded in the result of an evaluation."""

    name: str
    nms: bool
    """Apply seism's ``read_one_cont_png`` non-maximum suppression before thresholding."""
    thresholds: tuple[float, ...]
    comparison: Comparison
    """How the soft map is binarised: ``pred >= t`` (no-NMS readers, BSDS) or ``pred > t`` (after NMS)."""
    max_dist: float
    """Match tolerance as a fraction of the image diagonal."""
    thin_ground_truth: bool = True
    """seism thins the ground truth (``bwmorph thin Inf``); BSDS uses the annotated boundaries as they are."""
    thin_prediction: bool = True
    aggregation: Aggregation = "seism"
    image_set: str | None = None
    """The list of image ids the published numbers use (informative: the caller chooses the ids)."""
    source: str = ""

    def __post_init__(self) -> None:
        thresholds = tuple(float(t) for t in self.thresholds)
        object.__setattr__(self, "thresholds", thresholds)
        if not thresholds or any(b <= a for a, b in itertools.pairwise(thresholds)):
            raise TsnError(f"edge protocol {self.name!r}: thresholds must be a non-empty increasing sequence")
        if self.comparison not in (">=", ">"):
            raise TsnError(f"edge protocol {self.name!r}: comparison must be '>=' or '>', got {self.comparison!r}")
        if self.aggregation not in ("seism", "bsds"):
            raise TsnError(
                f"edge protocol {self.name!r}: aggregation must be 'seism' or 'bsds', got {self.aggregation!r}"
            )
        if not self.max_dist > 0:
            raise TsnError(f"edge protocol {self.name!r}: max_dist must be positive, got {self.max_dist}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, plus ``modified`` = the fields that differ from the preset of the same name."""
        fields = dataclasses.asdict(self)
        fields["thresholds"] = list(self.thresholds)
        preset = PROTOCOLS.get(self.name)
        fields["modified"] = (
            []
            if preset is None
            else [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(preset, f.name)]
        )
        return fields

    def fingerprint(self) -> str:
        """A short hash of every field, naming the cached counts this protocol produced."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]


PROTOCOLS: dict[str, EdgeProtocol] = {
    protocol.name: protocol
    for protocol in (
        EdgeProtocol(
            name="mtl-survey",
            nms=False,
            thresholds=_percent_thresholds(),
            comparison=">=",
            max_dist=0.0075,
            image_set="test_new",
            source="MTL-PyTorch (MTI-Net, MTL survey): evaluation/eval_edge.py, seism read_one_png.m",
        ),
        EdgeProtocol(
            name="astmt",
            nms=True,
            thresholds=_hed_thresholds(),
            comparison=">",
            max_dist=0.0075,
            image_set="val",
            source="ASTMT: fblib/evaluation/eval_edges.py, seism read_one_cont_png.m, parameters/HED.txt",
        ),
        EdgeProtocol(
            name="atrc",
            nms=True,
            thresholds=_hed_thresholds(),
            comparison=">",
            max_dist=0.0075,
            image_set="test_new",
            source="ATRC / InvPT on PASCAL-Context: prismformore evaluation tools, seism read_one_cont_png.m",
        ),
        EdgeProtocol(
            name="atrc-nyud",
            nms=True,
            thresholds=_hed_thresholds(),
            comparison=">",
            max_dist=0.011,
            image_set="test_new",
            source="ATRC / InvPT on NYUD-v2: eval_method.m maxDist 0.011, GT = thin(seg2bmap(edge png))",
        ),
        EdgeProtocol(
            name="bsds",
            nms=False,
            thresholds=bsds_thresholds(99),
            comparison=">=",
            max_dist=0.0075,
            thin_ground_truth=False,
            aggregation="bsds",
            source="BSDS500 bench: evaluation_bdry_image.m, collect_eval_bdry.m",
        ),
    )
}
"""Protocol presets named after the codebases whose published edge numbers they reproduce."""


def get_protocol(protocol: str | EdgeProtocol | None = "mtl-survey", **overrides: Any) -> EdgeProtocol:
    """A preset by name (None: ``mtl-survey``) or a given protocol, with some fields replaced (``max_dist=0.011``)."""
    if protocol is None:
        protocol = "mtl-survey"
    if isinstance(protocol, str):
        try:
            protocol = PROTOCOLS[protocol.strip().lower()]
        except KeyError:
            raise TsnError(f"unknown edge protocol {protocol!r}; known protocols: {', '.join(PROTOCOLS)}") from None
    if not overrides:
        return protocol
    known = {f.name for f in dataclasses.fields(EdgeProtocol)} - {"name"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TsnError(
            f"unknown edge protocol option(s) {', '.join(unknown)}; known options: {', '.join(sorted(known))}"
        )
    return dataclasses.replace(protocol, **overrides)
