"""The predictions and labels every protocol is checked on (``fixture.npz``), and how they were made.

Six images of different sizes per task, random but plausible, plus the edge cases where the field's evaluators
disagree: pixels and whole images without a label, classes absent from labels and predictions, a one-pixel
object, saliency grey levels that fall exactly on a threshold, zero-length and non-unit normals, normals whose
components sum to zero, zero and negative depth. Predictions are what :meth:`tsn.tasks.TaskSpec.postprocess`
gives at the label's size (class indices, probabilities, unit vectors, depth); labels are as the loaders give
them (ignore value 255).

``python tests/protocol_reference/fixture.py`` rewrites ``fixture.npz``; ``run_reference.py`` scores it with the
codebases that define each protocol and writes ``reference_*.json``. The tests read both files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixture.npz"
SIZES = ((20, 28), (22, 26), (24, 24), (18, 30), (16, 16), (21, 27))
"""``(H, W)`` of the six images; all fit in :data:`PAD_TO`."""
PAD_TO = (24, 32)
"""The network size InvPT's ``PadImage`` pads the fixture to (its PASCAL / NYUD test scales play this role)."""
IGNORE = 255
SETS = ("semseg21", "semseg7", "human_parts", "saliency", "normals", "normals_clean", "depth", "depth_clean")
CLASSES = {"semseg21": 21, "semseg7": 7, "human_parts": 7}


def _segmentation(rng: np.random.Generator, name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    k = CLASSES[name]
    # semseg21 uses a few classes only, so most of the 21 are absent from labels and predictions alike.
    present = np.array([0, 1, 2, 3, 5, 15]) if name == "semseg21" else np.arange(k)
    guessed = np.array([0, 1, 2, 3, 4, 15]) if name == "semseg21" else np.arange(k)
    pairs = []
    for i, (h, w) in enumerate(SIZES):
        label = rng.choice(present, size=(h, w)).astype(np.uint8)
        pred = np.where(rng.random((h, w)) < 0.6, label, rng.choice(guessed, size=(h, w)))
        pred = np.where(np.isin(pred, guessed), pred, 0).astype(np.int64)
        label[rng.random((h, w)) < 0.1] = IGNORE
        if name == "human_parts":
            if i == 1:
                label[:] = 0  # a person without labelled parts
            elif i == 2:
                label[:] = IGNORE  # no person
            elif i == 3:
                label = np.where(rng.random((h, w)) < 0.5, 0, IGNORE).astype(np.uint8)  # background and ignore only
            elif i == 5:
                label[:] = 0
                label[h // 2, w // 2] = 3  # a one-pixel part
        elif i == 2:
            label[:] = IGNORE  # an image without any labelled pixel
        elif i == 4:
            label[:] = 0
            label[7, 9] = 15 if name == "semseg21" else 6  # a one-pixel object, found by the prediction
            pred[7, 9] = label[7, 9]
        pairs.append((pred, label))
    return pairs


def _saliency(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for i, (h, w) in enumerate(SIZES):
        label = (rng.random((h, w)) < 0.35).astype(np.float32)
        pred = np.clip(0.6 * label + 0.5 * rng.random((h, w)) - 0.05, 0, 1).astype(np.float32)
        # Grey levels exactly on the ASTMT thresholds (0.2, 0.4, 0.6, 0.8 = 51, 102, 153, 204 / 255) and at 0.5.
        flat = pred.reshape(-1)
        flat[: 6 * 4] = np.repeat(np.array([51, 102, 127, 128, 153, 204], dtype=np.float32) / np.float32(255), 4)
        if i == 1:
            label[:] = 0
            pred[:] = 0  # nothing salient, nothing predicted
        elif i == 3:
            label[:] = 0  # nothing salient, something predicted
        elif i == 4:
            pred[:] = 0  # something salient, nothing predicted
        pairs.append((pred, label))
    return pairs


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=0, keepdims=True)


def _normals(rng: np.random.Generator, clean: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for i, (h, w) in enumerate(SIZES):
        label = _unit(rng.normal(size=(3, h, w)) + np.array([0, 0, 2.0])[:, None, None])
        pred = _unit(label + 0.4 * rng.normal(size=(3, h, w)))
        label = label.transpose(1, 2, 0).copy()  # the loaders' H x W x 3
        label[: h // 4, : w // 3] = 0  # an invalid region
        s = 1 / np.sqrt(2)
        label[h - 1, :3] = (s, -s, 0.0)  # valid, but its components sum to zero
        label[h - 2, :3] *= 0.8  # not unit length (PASCAL's distilled labels are not renormalised)
        if i == 4:
            label[:] = 0  # an image without any valid normal
        if not clean and i in (0, 3):
            pred[:, 5, 5] = 0  # a zero-length prediction
        pairs.append((pred.astype(np.float32), label.astype(np.float32)))
    return pairs


def _depth(rng: np.random.Generator, clean: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for i, (h, w) in enumerate(SIZES):
        label = (1 + 9 * rng.random((h, w))).astype(np.float32)
        label[rng.random((h, w)) < 0.15] = 0  # no measurement
        pred = (label + rng.normal(scale=0.8, size=(h, w))).astype(np.float32)
        pred[0, :4] = (0.0, -0.5, 1e-12, 3.0)  # zero and negative predictions
        if i == 2 and not clean:
            label[:] = 0  # an image without any valid depth
        pairs.append((pred, label))
    return pairs


def build() -> dict[str, np.ndarray]:
    """Every set as ``{"<set>/<i>/pred": ..., "<set>/<i>/label": ...}``."""
    rng = np.random.default_rng(20)
    sets = {name: _segmentation(rng, name) for name in CLASSES}
    sets["saliency"] = _saliency(rng)
    sets["normals"] = _normals(rng, clean=False)
    sets["normals_clean"] = _normals(rng, clean=True)
    sets["depth"] = _depth(rng, clean=False)
    sets["depth_clean"] = _depth(rng, clean=True)
    arrays = {}
    for name, pairs in sets.items():
        for i, (pred, label) in enumerate(pairs):
            arrays[f"{name}/{i}/pred"], arrays[f"{name}/{i}/label"] = pred, label
    return arrays


def load() -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """The stored fixture as ``{set: [(pred, label), ...]}``."""
    with np.load(FIXTURE) as data:
        return {
            name: [(data[f"{name}/{i}/pred"], data[f"{name}/{i}/label"]) for i in range(len(SIZES))] for name in SETS
        }


if __name__ == "__main__":
    np.savez_compressed(FIXTURE, **build())
    print(f"wrote {FIXTURE}")
