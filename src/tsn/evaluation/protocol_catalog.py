"""The built-in evaluation protocols (registered when :mod:`tsn.evaluation.protocols` is imported).

Each one was checked by running its codebase's evaluators on ``tests/protocol_reference/fixture.npz`` (commits
recorded in ``tests/protocol_reference/reference_*.json``); the edge benchmarks (MATLAB seism) keep the BSDS
evidence of ``docs/edges.md``.
"""

from __future__ import annotations

from tsn.evaluation.protocols import ScoringProtocol, register_protocol

_ASTMT_EDGES = {"nyud": "atrc-nyud", "*": "astmt"}
_ASTMT_SEGMENTATION = {"segmentation_absent_classes": "zero", "segmentation_uniform_rule": "single-value"}
_LIBMTL_REPORTED = {
    "segmentation": ("mIoU", "pixel_acc"),
    "depth": ("abs_err", "rel_err"),
    "normals": ("mean", "median", "within_11.25", "within_22.5", "within_30"),
}
_LIBMTL_BATCHES = {"nyuv2_13": {"depth_batch_images": 8}, "cityscapes_7": {"depth_batch_images": 64}}
"""LibMTL's test batch sizes (``--test_bs`` of examples/nyu and examples/cityscapes): its depth NaN is per batch."""
_INVPT_REPORTED = {"depth": ("rmse", "log_rmse", "abs_rel", "sq_rel")}
_INVPT_TEST_SCALE = {"pascal_context": (512, 512), "nyud": (448, 576)}
"""``TEST.SCALE`` of InvPT/utils/config.py and TaskPrompter/utils/config.py: the fixed input every test image is
padded to (PASCAL-Context images are at most 500 x 500, their NYUD images 425 x 560)."""

register_protocol(ScoringProtocol(
    name="astmt",
    title="ASTMT / the TSN paper",
    source="facebookresearch/astmt fblib/evaluation (the TSNs authors' scripts score with it)",
    used_by="ASTMT (Maninis et al. 2019), TSNs (Sun et al. 2021)",
    fit="resize",
    scores_saved_files=True,
    metric_options={**_ASTMT_SEGMENTATION, "saliency_protocol": "astmt", "normals_protocol": "astmt",
                    "depth_protocol": "astmt"},
    edge_presets=_ASTMT_EDGES,
    empty="segmentation: an absent class has IoU 0 and counts in the mean; human parts: images whose label is one "
          "value, background or ignore, are skipped; normals: images without a valid label are skipped; depth: "
          "label zeros become 1e-9 before the mask, so every pixel is scored (the reference's bug), rmse is the "
          "mean of per-image RMSEs and log_rmse their median; saliency: an image with empty label and prediction "
          "has Jaccard 1",
    checked="fblib.evaluation eval_semseg, eval_human_parts, eval_sal, eval_normals, eval_depth on the saved "
            "files, numpy 1.23.5",
))

register_protocol(ScoringProtocol(
    name="mtl-survey",
    title="The MTL survey code (MTI-Net, PAD-Net)",
    source="SimonVandenhende/Multi-Task-Learning-PyTorch evaluation/eval_*.py (file-based evaluators)",
    used_by="Vandenhende et al. (TPAMI 2021), MTI-Net, PAD-Net reproductions",
    fit="resize",
    scores_saved_files=True,
    metric_options={**_ASTMT_SEGMENTATION, "saliency_protocol": "astmt", "normals_protocol": "astmt",
                    "depth_protocol": "pooled"},
    edge_presets={"*": "mtl-survey"},
    edge_overrides={"nyud": {"max_dist": 0.011}},
    empty="as astmt, except depth: valid where the label is not 0, every score pooled over all valid pixels "
          "of the set",
    checked="evaluation eval_semseg, eval_human_parts, eval_sal, eval_normals, eval_depth on the saved files, "
            "numpy 1.23.5",
))

_INVPT = dict(
    source="prismformore/Multi-Task-Transformer InvPT/evaluation (TaskPrompter/evaluation prints x100 and uses "
           "min/max depth; MLoRE, MTMamba and BridgeNet reuse it)",
    used_by="InvPT (ECCV 2022), TaskPrompter (ICLR 2023), MLoRE, MTMamba, BridgeNet",
    # Their test transform: Normalize, then PadImage(TEST.SCALE) centred, the output cropped back
    # (save_model_pred_for_one_task); datasets they never ran keep a pad to a multiple of 32.
    fit={"pascal_context": "pad-to-size", "nyud": "pad-to-size", "*": "pad"},
    fit_sizes=_INVPT_TEST_SCALE,
    scores_saved_files=False,
    edge_presets={"nyud": "atrc-nyud", "*": "atrc"},
    headline={"saliency": "maxF"},
    reported=_INVPT_REPORTED,
    checked="InvPT's online meters fed as its test_phase feeds them (PadImage, AddIgnoreRegions, get_output), "
            "torch 2.14",
)
_INVPT_OPTIONS = {"segmentation_absent_classes": "zero", "segmentation_uniform_rule": "background-or-ignored",
                  "normals_protocol": "invpt", "depth_protocol": "pooled"}

register_protocol(ScoringProtocol(
    name="invpt",
    title="The InvPT family, exactly as its code (saliency double sigmoid included)",
    metric_options={**_INVPT_OPTIONS, "saliency_protocol": "invpt"},
    empty="segmentation: absent class IoU 0; human parts: labels with only background and ignore are skipped; "
          "saliency: maxF over the set with beta^2 0.3 at thresholds 0.05..0.95 of sigmoid(p) (p already a "
          "probability: values in [0.5, 0.73]), NaN F = 0; normals: zero-length prediction = 90 degrees, zero "
          "labels ignored; depth: label 0 ignored, pooled rmse, log_rmse, abs_rel, sq_rel",
    **_INVPT,  # type: ignore[arg-type]
))

register_protocol(ScoringProtocol(
    name="invpt-corrected",
    title="The InvPT family with saliency thresholded once (the sigmoid not applied to probabilities)",
    metric_options={**_INVPT_OPTIONS, "saliency_protocol": "invpt-corrected"},
    empty="as invpt, except saliency: maxF at thresholds 0.05..0.95 of the probability itself",
    **_INVPT,  # type: ignore[arg-type]
))

_LIBMTL = dict(
    source="median-research-group/LibMTL examples/nyu/utils.py (SegMetric, DepthMetric, NormalMetric; the "
           "Cityscapes example uses the same)",
    used_by="MTAN (CVPR 2019), LibMTL and the loss-weighting / gradient-balancing literature on NYUv2-13 and "
            "Cityscapes-7",
    fit="resize",
    scores_saved_files=False,
    dataset_options=_LIBMTL_BATCHES,
    edge_presets={"*": "astmt"},  # LibMTL scores no edges; a dataset with edges falls back to ASTMT's benchmark
    reported=_LIBMTL_REPORTED,
    scale="fractions for IoU and pixel accuracy, degrees; within-angle scores in percent (LibMTL prints "
          "fractions)",
    checked="LibMTL's SegMetric, DepthMetric and NormalMetric, one image per batch, torch 2.14",
)

register_protocol(ScoringProtocol(
    name="libmtl",
    title="LibMTL exactly (its NaN semantics and normals mask included)",
    metric_options={"segmentation_absent_classes": "nan", "segmentation_uniform_rule": "single-value",
                    "saliency_protocol": "astmt", "normals_protocol": "libmtl", "depth_protocol": "libmtl"},
    empty="segmentation: a class absent from labels and predictions makes mIoU NaN; depth: a test batch (8 "
          "images on NYUv2-13, 64 on Cityscapes-7, 1 elsewhere) without a valid pixel makes abs_err and rel_err "
          "NaN; normals: valid where the label's components do not sum to 0, a zero-length prediction makes mean "
          "and median NaN",
    **_LIBMTL,  # type: ignore[arg-type]
))

register_protocol(ScoringProtocol(
    name="libmtl-nan-free",
    title="LibMTL's metrics without NaN (tsn's behaviour before the protocols)",
    metric_options={"segmentation_absent_classes": "zero", "segmentation_uniform_rule": "single-value",
                    "saliency_protocol": "astmt", "normals_protocol": "libmtl-nan-free",
                    "depth_protocol": "libmtl-nan-free"},
    empty="segmentation: absent class IoU 0; depth: images without a valid pixel are skipped; normals: "
          "prediction normalised with eps 1e-12, pixels with an all-zero label left out",
    **_LIBMTL,  # type: ignore[arg-type]
))

register_protocol(ScoringProtocol(
    name="tsn-synthetic",
    title="ASTMT's protocol with the MTL survey's pooled depth (the synthetic scenes' sky has no depth)",
    source="this project (astmt, depth as mtl-survey)",
    used_by="tsn's demo and synthetic benchmarks",
    fit="resize",
    scores_saved_files=True,
    metric_options={**_ASTMT_SEGMENTATION, "saliency_protocol": "astmt", "normals_protocol": "astmt",
                    "depth_protocol": "pooled"},
    edge_presets={"*": "astmt"},
    empty="as astmt, except depth (as mtl-survey): valid where the label is not 0, pooled over the set",
    checked="the union of the astmt and mtl-survey checks",
))
