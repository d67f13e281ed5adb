"""``tsn analyze``: how a TSN relates its tasks (task-embedding and AdaIN similarities, task dendrogram), and what
it outputs along the path between two tasks."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run"]

HELP = "analyse a TSN's task embeddings: task similarities, a task dendrogram and the path between two tasks"
DESCRIPTION = (
    "Compare the tasks of a Task Switching Network by the cosine similarity of their learned embeddings and of "
    "every AdaIN layer's (scale, shift), and cluster them. Writes OUT/analysis.json, OUT/similarity.png and "
    "OUT/dendrogram.png. With --path START END, also draws OUT/path_START_END.png: for one image, the outputs at "
    "--steps points of the straight line from START's task code to END's (or between their embeddings), each "
    "read as START and as END."
)


# tsn.studies.analysis.PATH_SPACES, written out so that building the parser does not import torch (`tsn --help`);
# tests/test_analyze.py checks that the two agree.
_PATH_SPACES = ("code", "embedding")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="tsn checkpoint of a TSN")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    parser.add_argument("--path", nargs=2, metavar=("START", "END"),
                        help="draw the outputs along the path between these two tasks of the model")
    parser.add_argument("--steps", type=int, default=7,
                        help="points on the path, both ends included (default 7; 2 to 33)")
    parser.add_argument("--image", default="0", metavar="IMG_OR_INDEX",
                        help="image of the path: an image file, or the index of a synthetic test scene (default 0)")
    parser.add_argument("--size", type=int, default=64,
                        help="side of a synthetic scene given by index, in pixels (default 64; from the model's "
                        "minimum input side, e.g. 64 for ResNets, to 2048)")
    parser.add_argument("--space", choices=_PATH_SPACES, default="code",
                        help="the path is straight between the task codes (mixtures, default) or the embeddings")


def run(args: argparse.Namespace) -> int:
    from tsn.studies.analysis import run_analysis
    from tsn.utils.checks import ensure_writable_dir

    ensure_writable_dir(args.output, "-o/--output", create=False)  # created when the results are written
    analysis, paths = run_analysis(args.checkpoint, args.output, path=tuple(args.path) if args.path else None,
                                   steps=args.steps, image=args.image, size=args.size, space=args.space)
    first, second, cosine = analysis.most_similar_pair()
    print(
        f"{len(analysis.tasks)} tasks, {len(analysis.layers)} AdaIN layers; most similar embeddings: "
        f"{first} and {second} (cosine {cosine:.3f})"
    )
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
