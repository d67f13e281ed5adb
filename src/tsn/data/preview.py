"""A picture of a dataset: the first samples of a split with every task label, as the network will see them."""

from __future__ import annotations

import os
from collections.abc import Sized
from pathlib import Path
from typing import Any, cast

from matplotlib.figure import Figure

from tsn.data import build_dataset
from tsn.data.transforms import build_transforms, denormalize_image
from tsn.dataset_catalog import get_dataset
from tsn.errors import TsnError
from tsn.tasks import get_task
from tsn.utils.io import atomic_write

__all__ = ["sample_grid", "write_sample_grid"]


def sample_grid(dataset: Any, n: int, size: int) -> Figure:
    """A figure with one row per sample (the first ``n``): the image, then each task label, titled."""
    transform = build_transforms("eval", size=(size, size), tasks=dataset.tasks)
    samples = [transform(dataset[index]) for index in range(min(n, len(dataset)))]
    if not samples:
        raise TsnError("the dataset split is empty; nothing to show")
    specs = [get_task(key) for key in samples[0] if key not in ("image", "meta")]
    figure = Figure(figsize=(1.8 * (1 + len(specs)), 1.8 * len(samples)), layout="constrained")
    axes = figure.subplots(len(samples), 1 + len(specs), squeeze=False)
    for row, sample in zip(axes, samples, strict=True):
        pictures = [denormalize_image(sample["image"])]
        pictures += [spec.render(sample[spec.name].numpy(), is_label=True) for spec in specs]
        for ax, picture in zip(row, pictures, strict=True):
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(str(sample["meta"]["id"]), fontsize=8)
    for ax, title in zip(axes[0], ["image", *(spec.title for spec in specs)], strict=True):
        ax.set_title(title, fontsize=9)
    return figure


def write_sample_grid(
    dataset_name: str, output: str | os.PathLike[str], *, split: str = "val", n: int = 8, size: int = 64,
    root: str | os.PathLike[str] | None = None,
) -> int:
    """Draw the first ``n`` samples of ``split`` into the PNG ``output`` (atomically); return how many were drawn."""
    spec = get_dataset(dataset_name)
    # Generated scenes are rendered on demand here: drawing a few must not render and cache a whole split.
    options: dict[str, Any] = {"size": size, "cache": False} if spec.generated else {}
    dataset = build_dataset(spec.name, split=split, root=root, **options)
    figure = sample_grid(dataset, n, size)
    with atomic_write(Path(output), "wb") as handle:
        figure.savefig(handle, format="png", dpi=100)
    return min(n, len(cast(Sized, dataset)))  # map-style datasets have a length; torch's stub omits it
