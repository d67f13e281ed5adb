"""A Hugging Face cache laid out exactly as huggingface_hub lays it out, built from a local folder, offline.

``<cache>/models--ORG--NAME/blobs/<etag>`` holds each file once, named by its etag (the sha256 of an LFS file such
as the weights, the git blob sha1 of a small file); ``snapshots/<commit>/<file>`` are relative symbolic links to
those blobs; ``refs/<branch>`` holds the commit hash the branch pointed to. The tests check the result with
huggingface_hub's own cache scanner, so a layout that drifts from the real one fails there first.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".bin", ".pt")  # files the Hub stores through LFS (etag: their sha256)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _etag(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest() if path.suffix in LFS_SUFFIXES else git_blob_sha1(data)


def add_to_hub_cache(cache: Path, repo_id: str, folder: Path, *, commit: str | None = None,
                     branch: str = "main", files: tuple[str, ...] | None = None) -> str:
    """Put ``folder``'s files (or ``files`` of it) into ``cache`` as the snapshot ``commit`` of ``repo_id``, with
    ``refs/<branch>`` pointing to it; returns the commit hash."""
    commit = commit or hashlib.sha1(f"{repo_id}:{sorted(os.listdir(folder))}".encode()).hexdigest()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name in files or tuple(sorted(os.listdir(folder))):
        etag = _etag(folder / name)
        blob = repo / "blobs" / etag
        if not blob.exists():
            shutil.copyfile(folder / name, blob)
        link = snapshot / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path("..") / ".." / "blobs" / etag)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / branch).write_text(commit)
    return commit


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): connections to it are refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
