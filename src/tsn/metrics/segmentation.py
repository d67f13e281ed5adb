"""Semantic segmentation and human parts: IoU from one confusion matrix accumulated over the whole data set.

As the reference evaluator (ASTMT, used by TSNs): true/false positives and false negatives of every class are
summed over all labelled pixels of all images before dividing, and mIoU averages over **all** ``K`` classes, so a
class that never occurs in labels nor predictions counts as IoU 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tsn.errors import TsnError
from tsn.metrics.base import ArrayLike, MetricResult, check_same_shape, single_map
from tsn.utils.constants import IGNORE_INDEX

__all__ = ["SegmentationMetric"]

BACKGROUND = 0
"""Class id of the background, the only class whose image-wide label the reference parts evaluator skips."""


class SegmentationMetric:
    """mIoU and pixel accuracy of class-index maps.

    Args:
        num_classes: ``K``; labels and predictions must lie in ``0..K-1`` (labels may also be ``ignore_index``).
        ignore_index: label value of pixels that are not scored.
        skip_uniform_labels: skip images whose label is background everywhere (class 0) or ignored everywhere, as
            the reference human-parts evaluator does (its parts-only data set has no person-free image, so these
            are images whose person has no labelled part). A label that is one *other* class everywhere, or that
            mixes background and ignored pixels, is still scored, as there.
        class_names: optional names, copied into the result next to the per-class IoU.
        absent_classes: ``"zero"`` (ASTMT, the survey, InvPT: a class absent from every label and prediction has
            IoU 0 and still counts in the mean) or ``"nan"`` (LibMTL: its IoU is 0 / 0 = NaN, and so is mIoU).
        uniform_rule: which labels ``skip_uniform_labels`` skips: ``"single-value"`` (ASTMT, the survey: the
            label's only value is background or ignore) or ``"background-or-ignored"`` (InvPT's
            ``AddIgnoreRegions``: every value is background or ignore, mixed or not).

    Results are fractions in ``[0, 1]`` (papers print them x100): ``mIoU`` (headline), ``pixel_acc``, ``IoU``
    (per class), plus ``num_classes``, ``skip_uniform_labels``, ``n_images`` (scored) and ``n_skipped``.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        ignore_index: int = IGNORE_INDEX,
        skip_uniform_labels: bool = False,
        class_names: Sequence[str] = (),
        absent_classes: str = "zero",
        uniform_rule: str = "single-value",
    ) -> None:
        if absent_classes not in ("zero", "nan"):
            raise TsnError(f"absent_classes must be 'zero' or 'nan', got {absent_classes!r}")
        if uniform_rule not in ("single-value", "background-or-ignored"):
            raise TsnError(f"uniform_rule must be 'single-value' or 'background-or-ignored', got {uniform_rule!r}")
        self.absent_classes = absent_classes
        self.uniform_rule = uniform_rule
        if num_classes < 1:
            raise TsnError(f"a segmentation metric needs at least one class, got num_classes={num_classes}")
        if class_names and len(class_names) != num_classes:
            raise TsnError(f"{len(class_names)} class names given for {num_classes} classes; give one name per class")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.skip_uniform_labels = skip_uniform_labels
        self.class_names = tuple(class_names)
        self.reset()

    def reset(self) -> None:
        # Rows are label classes, columns predicted classes.
        self._confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self._n_images = 0
        self._n_skipped = 0

    def update(self, pred: ArrayLike, label: ArrayLike) -> None:
        """Add one image: ``pred`` class indices ``H x W``, ``label`` class ids ``H x W`` (``ignore_index`` = skip)."""
        label = single_map(label, "segmentation label")
        pred = single_map(pred, "segmentation prediction")
        check_same_shape(pred, label, "segmentation")
        if self.skip_uniform_labels and self._is_background_or_ignored_only(label):
            self._n_skipped += 1
            return
        valid = label != self.ignore_index
        truth = self._class_ids(label[valid], "label")
        guess = self._class_ids(pred[valid], "prediction")
        k = self.num_classes
        self._confusion += np.bincount(truth * k + guess, minlength=k * k).reshape(k, k)
        self._n_images += 1

    def _is_background_or_ignored_only(self, label: np.ndarray) -> bool:
        """The reference's skip rule: the label's only value is background (0) or the ignore index (InvPT: every
        value is one of the two)."""
        if label.size == 0:
            return False
        if self.uniform_rule == "background-or-ignored":
            return bool(np.isin(label, (BACKGROUND, self.ignore_index)).all())
        value = label.flat[0]
        return bool(value in (BACKGROUND, self.ignore_index) and (label == value).all())

    def _class_ids(self, values: np.ndarray, what: str) -> np.ndarray:
        """``values`` as int64 class ids, refusing ids outside ``0..K-1`` (usually a wrong class count)."""
        if values.size and (values.min() < 0 or values.max() >= self.num_classes):
            bad = values.max() if values.max() >= self.num_classes else values.min()
            raise TsnError(
                f"segmentation {what} contains class {bad:g} but the metric has {self.num_classes} classes; "
                "check the dataset's class count (NYUD uses 41, PASCAL 21, parts 7)"
            )
        return values.astype(np.int64)

    def compute(self) -> MetricResult:
        tp = np.diag(self._confusion).astype(np.float64)
        union = self._confusion.sum(axis=0) + self._confusion.sum(axis=1) - tp
        if self.absent_classes == "nan":
            with np.errstate(invalid="ignore", divide="ignore"):
                iou = tp / union
        else:
            iou = tp / np.maximum(union, 1e-8)
        labelled = self._confusion.sum()
        empty = self._n_images == 0
        result: MetricResult = {
            "mIoU": float("nan") if empty else float(iou.mean()),
            "pixel_acc": float("nan") if empty else float(tp.sum() / max(labelled, 1)),
            "IoU": iou.tolist(),
            "num_classes": self.num_classes,
            "skip_uniform_labels": self.skip_uniform_labels,
            "absent_classes": self.absent_classes,
            "n_images": self._n_images,
            "n_skipped": self._n_skipped,
        }
        if self.class_names:
            result["class_names"] = list(self.class_names)
        return result
