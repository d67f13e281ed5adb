"""``tsn push``: publish a pretrained folder (``tsn save-pretrained``) on the Hugging Face Hub."""

from __future__ import annotations

import argparse

HELP = "upload a pretrained folder (weights, config, model card) to a Hugging Face Hub repository"
DESCRIPTION = (
    "Upload a folder written by tsn save-pretrained, tsn train --save-pretrained or tsn convert --save-pretrained "
    "(model.safetensors, config.json, README.md and evaluation.json) to the Hub repository ORG/NAME, creating it if "
    "needed. The folder is loaded first, so a damaged one is never published. Uses huggingface_hub's login (hf auth "
    "login or HF_TOKEN) and HF_ENDPOINT; others then load it with tsn.load_model('hf-hub:ORG/NAME')."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="DIR", help="the pretrained folder to upload")
    parser.add_argument("repo", metavar="ORG/NAME", help="the Hub repository (created when it does not exist)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", metavar="BRANCH", help="upload to this branch (created if needed; default: main)")
    parser.add_argument("--message", metavar="TEXT", help="the commit message (default: 'Upload tsn model')")


def run(args: argparse.Namespace) -> int:
    from tsn.hub import push_to_hub

    url = push_to_hub(args.folder, args.repo, private=args.private, revision=args.revision,
                      commit_message=args.message)
    print(f"uploaded {args.folder} to {args.repo}: {url}")
    print(f"load it with tsn.load_model('hf-hub:{args.repo}')")
    return 0
