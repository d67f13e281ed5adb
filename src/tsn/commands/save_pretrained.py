"""``tsn save-pretrained``: a checkpoint or run folder -> a folder in the Hub layout, with its model card."""

from __future__ import annotations

import argparse
from pathlib import Path

from tsn.utils.checks import escaped

HELP = "write a checkpoint as a shareable folder: safetensors weights, config.json and a model card (README.md)"
DESCRIPTION = (
    "Write a model in the Hugging Face Hub layout: model.safetensors, config.json and a README.md model card "
    "(architecture, backbone, tasks, dataset and split, training recipe, evaluation protocol and metrics, "
    "parameters and GFLOPs, licence, citation). Give the tsn evaluate result with --evaluation to have its metrics "
    "in the card; a run folder also gives its recipe. Load the folder with tsn.load_model(DIR), publish it with "
    "tsn push DIR ORG/NAME."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT", help="a tsn checkpoint (.pt / .safetensors) or a run folder")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="the folder to write")
    parser.add_argument("--evaluation", metavar="RESULT.json",
                        help="a tsn evaluate result of this checkpoint: its protocol and metrics go into the card")
    parser.add_argument("--run", metavar="RUN_DIR",
                        help="the tsn train run the checkpoint comes from: its recipe (and its evaluation.json) go "
                             "into the card (default: CKPT's run, when CKPT is a run folder or its best checkpoint)")
    parser.add_argument("--name", help="the model's name in the card (default: the folder's name)")
    parser.add_argument("--license", default="mit", metavar="ID",
                        help="the weights' licence, as a Hub licence id (default: mit)")
    parser.add_argument("--force", action="store_true",
                        help="replace files of the same names in DIR even if DIR is not a tsn pretrained folder")


def _run_of(checkpoint: str) -> Path | None:
    """The run folder ``checkpoint`` stands for: the run folder itself, or the run whose model this file is."""
    from tsn.hub import is_pretrained_source
    from tsn.run_folder import RunPaths, checkpoint_in, config_of

    if is_pretrained_source(checkpoint):
        return None
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        return path if RunPaths(path).config.is_file() else None
    config = config_of(path)
    if config is None:
        return None
    stands_for = checkpoint_in(config.parent)
    return config.parent if stands_for is not None and stands_for.resolve() == path.resolve() else None


def run(args: argparse.Namespace) -> int:
    from tsn.hub import save_pretrained
    from tsn.hub.folder import check_output
    from tsn.models.checkpoint import load_model

    run_dir = args.run or _run_of(args.checkpoint)
    check_output(Path(args.output), args.force, tuple(Path(p) for p in (args.checkpoint, run_dir) if p))
    model = load_model(args.checkpoint)
    folder = save_pretrained(model, args.output, name=args.name, evaluation=args.evaluation, run=run_dir,
                             license=args.license, overwrite=args.force)
    extra = ", evaluation.json" if args.evaluation else ""
    print(f"wrote {escaped(folder)}: model.safetensors, config.json, README.md{extra}; "
          f"publish it with: tsn push {escaped(folder)} ORG/NAME")
    return 0
