"""``tsn analyze``: how a TSN relates its tasks (task-embedding and AdaIN similarities, task dendrogram)."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run"]

HELP = "analyse a TSN's task embeddings: task similarities and a task dendrogram"
DESCRIPTION = (
    "Compare the tasks of a Task Switching Network by the cosine similarity of their learned embeddings and of "
    "every AdaIN layer's (scale, shift), and cluster them. Writes OUT/analysis.json, OUT/similarity.png and "
    "OUT/dendrogram.png."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="tsn checkpoint of a TSN")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")


def run(args: argparse.Namespace) -> int:
    from tsn.models.checkpoint import load_model
    from tsn.studies.analysis import analyze_tsn, write_analysis
    from tsn.utils.checks import ensure_writable_dir

    ensure_writable_dir(args.output, "-o/--output", create=False)  # created when the results are written
    analysis = analyze_tsn(load_model(args.checkpoint))
    paths = write_analysis(analysis, args.output, checkpoint=str(args.checkpoint))
    first, second, cosine = analysis.most_similar_pair()
    print(
        f"{len(analysis.tasks)} tasks, {len(analysis.layers)} AdaIN layers; most similar embeddings: "
        f"{first} and {second} (cosine {cosine:.3f})"
    )
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
