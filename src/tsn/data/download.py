"""Resumable, verified and safe downloads of the multi-task datasets (PASCAL_MT, NYUD_MT).

The life of a download, and what a crash at any point leaves behind:

1. ``<root>/<archive>.part`` is streamed over HTTP in chunks; an existing ``.part`` is resumed with a ``Range``
   request. A crash leaves the ``.part``, which the next run resumes.
2. The finished ``.part`` is hashed (SHA-256), checked against the known digest if there is one, then renamed to
   ``<root>/<archive>``. A digest mismatch deletes the ``.part``: resuming a wrong file can never succeed.
3. The archive is extracted into a temporary folder inside ``root`` (so the final rename stays on one file
   system). Members that are absolute, climb out with ``..``, or are links or devices are refused.
4. The marker ``<FOLDER>/.tsn-complete`` (holding the archive's SHA-256) is written into the extracted folder, which
   is then renamed to ``<root>/<FOLDER>``. That single rename is the commit: a final folder without its marker
   never exists, so a folder with the marker is complete and is reused without touching the network.
"""

from __future__ import annotations

import bz2
import gzip
import http.client
import io
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Any

from tqdm import tqdm

from tsn.dataset_catalog import DatasetSpec, DownloadSource, downloadable_datasets, get_dataset
from tsn.errors import TsnError
from tsn.utils.checks import output_target
from tsn.utils.io import atomic_write_text, file_sha256

__all__ = [
    "MARKER",
    "get_source",
    "complete_folder",
    "download_dataset",
    "extract_archive",
    "check_url",
    "URL_SCHEMES",
]

MARKER = ".tsn-complete"
"""File written last into an extracted dataset folder; holds the SHA-256 of the archive it came from."""

_CHUNK = 1 << 20
_ATTEMPTS = 3
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


def get_source(name: str) -> DownloadSource:
    """The archive of the registered dataset called ``name`` (any spelling :func:`get_dataset` accepts)."""
    try:
        spec: DatasetSpec | None = get_dataset(name)
    except TsnError:
        spec = None
    if spec is None or spec.download is None:
        why = f"unknown dataset {name!r}" if spec is None else (
            f"{spec.name} is not fetched by `tsn download` ({spec.download_hint or 'no archive is registered'})")
        raise TsnError(f"{why}; choose one of: {', '.join(downloadable_datasets())}")
    return spec.download


def complete_folder(name: str, root: str | os.PathLike[str]) -> Path | None:
    """``<root>/<FOLDER>`` if a previous download finished there (its marker exists), else ``None``."""
    folder = Path(root) / get_source(name).folder
    return folder if (folder / MARKER).is_file() else None



def download_dataset(
    name: str,
    root: str | os.PathLike[str],
    *,
    url: str | None = None,
    sha256: str | None = None,
    archive: str | os.PathLike[str] | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download, verify and extract dataset ``name`` into ``root``; return ``<root>/<FOLDER>``.

    Args:
        name: a dataset of :func:`downloadable_datasets` (``pascal_context`` or ``nyud``).
        root: dataset root folder (created if needed).
        url: download from here instead of the registered URL (a mirror).
        sha256: expected SHA-256 of the archive; overrides the registered one.
        archive: an already-downloaded archive to verify and extract; nothing is downloaded.
        progress: show tqdm progress bars.
        timeout: seconds without network activity before a request is abandoned.

    A folder already completed by an earlier call is returned at once, without network access. Otherwise an
    existing ``<root>/<archive>`` is reused, and a partial ``<root>/<archive>.part`` is resumed.
    """
    source = get_source(name)
    if url is not None:
        check_url(url)
    expected_digest = _normalise_sha256(sha256)  # a malformed digest fails here, before anything is created
    root = Path(root).expanduser()
    done = complete_folder(name, root)
    if done is not None:
        return done
    target = root / source.folder
    if target.exists():
        raise TsnError(
            f"{target} exists but was not completed by `tsn download` (no {MARKER} in it); "
            "move or delete it and run the command again"
        )
    expected = expected_digest or source.sha256
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TsnError(f"cannot create the dataset root {root}: {error.strerror}; pass a writable --root") from None

    if archive is not None:
        path = Path(archive).expanduser()
        if not path.is_file():
            raise TsnError(f"archive {path} does not exist; check the --archive path")
        digest = _verify(path, expected, delete_on_mismatch=False)
        return extract_archive(path, root, source.folder, sha256=digest, progress=progress)

    path = root / source.archive
    downloaded = not path.is_file()
    if downloaded:
        part = path.with_name(path.name + ".part")
        # A device, pipe or folder at the archive or its partial file is refused, never written into or replaced.
        output_target(path, "download into --root")
        output_target(part, "download into --root")
        _fetch(url or source.url, part, progress=progress, timeout=timeout)
        digest = _verify(part, expected, delete_on_mismatch=True)
        os.replace(part, path)
    else:
        digest = _verify(path, expected, delete_on_mismatch=False)
    try:
        return extract_archive(path, root, source.folder, sha256=digest, progress=progress)
    except _BadArchive:
        # Left in place, a bad file we just downloaded would be reused by every rerun: drop it to start over.
        if downloaded:
            path.unlink(missing_ok=True)
        raise


def extract_archive(
    archive: str | os.PathLike[str],
    root: str | os.PathLike[str],
    folder: str,
    *,
    sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """Safely extract ``archive`` (tar, optionally gzip/bzip2/xz) and move its ``folder`` to ``<root>/<folder>``.

    Refuses absolute members, members with ``..``, links and devices (:class:`TsnError` naming the member), and
    truncated or corrupt archives. On any failure nothing is left in ``root`` but what was there before.
    ``sha256`` is the archive's digest if already computed; it is recorded in the marker file.
    """
    archive, root = Path(archive), Path(root)
    target = root / folder
    digest = sha256 or file_sha256(archive)
    staging = Path(tempfile.mkdtemp(prefix=f".tsn-extract-{folder}-", dir=root))
    try:
        _extract_all(archive, staging, progress=progress)
        extracted = staging / folder
        if not extracted.is_dir():
            found = ", ".join(sorted(p.name for p in staging.iterdir())) or "nothing"
            raise _BadArchive(
                f"archive {archive} has no top-level {folder}/ folder (found: {found}); is it the right archive?"
            )
        # The marker goes in before the rename so the folder appears in place already marked complete.
        atomic_write_text(extracted / MARKER, digest + "\n")
        try:
            os.rename(extracted, target)
        except OSError as error:
            raise TsnError(f"cannot move the extracted data to {target}: {error.strerror}; remove {target}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


URL_SCHEMES = ("https", "http", "ftp", "file")
"""Schemes ``--url`` may use (those urllib can fetch from)."""


def check_url(url: str) -> str:
    """Refuse, in one line, a ``--url`` that is not a complete URL urllib can fetch (scheme, host or path)."""
    text = url.strip()
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - parsing the port validates it (a non-number or out of range raises ValueError)
    except ValueError as error:
        raise TsnError(f"--url {url!r} is not a valid URL ({error}); e.g. https://host/path/PASCAL_MT.tgz") from None
    example = "e.g. https://host/path/PASCAL_MT.tgz"
    if not parts.scheme:
        raise TsnError(f"--url {url!r} has no scheme; write the full URL, {example}")
    if parts.scheme.lower() not in URL_SCHEMES:
        raise TsnError(f"--url {url!r}: unsupported scheme {parts.scheme!r}; use one of {', '.join(URL_SCHEMES)}")
    if parts.scheme.lower() != "file" and not parts.hostname:
        raise TsnError(f"--url {url!r} has no host name; {example}")
    if not parts.path.strip("/"):
        raise TsnError(f"--url {url!r} names no file (empty path); {example}")
    if any(character.isspace() or ord(character) < 32 for character in text):
        raise TsnError(f"--url {url!r} contains spaces or control characters; percent-encode them (%20)")
    return text


def _normalise_sha256(value: str | None) -> str | None:
    if value is None:
        return None
    digest = value.strip().lower()
    if not _HEX64.fullmatch(digest):
        raise TsnError(f"--sha256 {value!r} is not a SHA-256 digest; pass 64 hexadecimal digits")
    return digest


def _verify(path: Path, expected: str | None, *, delete_on_mismatch: bool) -> str:
    """Hash ``path``, print and return the digest; raise :class:`TsnError` if it differs from ``expected``."""
    digest, name = file_sha256(path), path.name.removesuffix(".part")
    if expected is None:
        print(f"sha256 {digest}  {name} (not verified: no known digest; pass --sha256 {digest} next time)")
        return digest
    if digest != expected:
        if delete_on_mismatch:
            path.unlink(missing_ok=True)
        action = "it was deleted, run the command again" if delete_on_mismatch else "delete it or pass another file"
        raise TsnError(f"checksum mismatch for {path}: expected sha256 {expected}, got {digest}; {action}")
    print(f"sha256 {digest}  {name} (verified)")
    return digest


class _BadArchive(TsnError):
    """The archive's content is unusable (corrupt, truncated, unsafe, or without the expected folder)."""


class _Interrupted(Exception):
    """A transfer stopped part-way; the ``.part`` file is kept and the next attempt resumes it."""


def _fetch(url: str, part: Path, *, progress: bool, timeout: float) -> None:
    """Download ``url`` into ``part``, resuming what is there and retrying interrupted transfers."""
    for _ in range(_ATTEMPTS):
        try:
            _fetch_once(url, part, progress=progress, timeout=timeout)
            return
        except _Interrupted as error:
            reason = str(error)
    raise TsnError(
        f"download of {url} was interrupted {_ATTEMPTS} times (last: {reason}); run the same command again to "
        f"resume {part}, or download the file manually and pass --archive PATH"
    )


def _fetch_once(url: str, part: Path, *, progress: bool, timeout: float) -> None:
    """One HTTP request: append to ``part`` from its current size, or rewrite it when the server cannot resume."""
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "tsn-download"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and offset:
            _, total = _content_range(error.headers.get("Content-Range"))
            if total == offset:
                return  # the .part already holds the whole file
            part.unlink()  # longer than the file on the server: it cannot be a prefix of it
            raise _Interrupted("the server refused to resume a stale partial file; restarting") from None
        raise TsnError(
            f"cannot download {url}: HTTP {error.code} {error.reason}; check --url, or download the file "
            "manually and pass --archive PATH"
        ) from None
    except (OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise TsnError(
            f"cannot download {url}: {reason}; check the network and --url, or download the file manually and "
            "pass --archive PATH"
        ) from None

    with response:
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise _Interrupted(f"the server resumed at byte {start} instead of {offset}; restarting")
        else:  # 200: the server ignored the Range header and sends the whole file, so start the .part over
            offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        _stream(response, part, offset=offset, total=total, progress=progress)


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """``(start, total)`` of a ``Content-Range`` header (``bytes START-END/TOTAL``); unknown parts are ``None``."""
    match = _CONTENT_RANGE.fullmatch((header or "").strip())
    if not match:
        return None, None
    start, total = match.group(1), match.group(3)
    return (int(start) if start else None), (int(total) if total.isdigit() else None)


def _stream(response: IO[bytes], part: Path, *, offset: int, total: int | None, progress: bool) -> None:
    """Copy the response body to ``part`` (appending after ``offset`` bytes) and check that it was complete."""
    with (
        part.open("ab" if offset else "wb") as out,
        tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=not progress,
        ) as bar,
    ):
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as error:  # the network failed: retry, resuming
                raise _Interrupted(str(error) or type(error).__name__) from None
            if not chunk:
                break
            try:
                out.write(chunk)
            except OSError as error:  # the disk failed (full?): retrying cannot help
                raise TsnError(
                    f"cannot write {part}: {error.strerror}; free some space or pass another --root"
                ) from None
            bar.update(len(chunk))
    # http.client returns EOF instead of raising when a connection closes before Content-Length is reached.
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Interrupted(f"connection closed after {size} of {total} bytes")


# Decompressors by magic number. tarfile's own stream mode never checks the compressed stream's end (gzip CRC and
# length), so an archive cut at a member boundary would extract "successfully"; these file objects raise instead.
_DECOMPRESSORS: tuple[tuple[bytes, Callable[[Path], io.BufferedIOBase]], ...] = (
    (b"\x1f\x8b", gzip.open),
    (b"BZh", bz2.open),
    (b"\xfd7zXZ\x00", lzma.open),
)


def _open_decompressed(archive: Path) -> io.BufferedIOBase:
    with archive.open("rb") as handle:
        magic = handle.read(6)
    for prefix, opener in _DECOMPRESSORS:
        if magic.startswith(prefix):
            return opener(archive)
    return archive.open("rb")


def _extract_all(archive: Path, dest: Path, *, progress: bool) -> None:
    """Extract every member of ``archive`` under ``dest`` in one sequential pass, refusing unsafe members."""
    # Python >= 3.12 (and 3.11.4+) has extraction filters; "data" also drops permissions that could bite later.
    options: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        with (
            _open_decompressed(archive) as stream,
            tarfile.open(fileobj=stream, mode="r|") as tar,
            tqdm(unit=" files", desc=f"extracting {archive.name}", disable=not progress) as bar,
        ):
            for member in tar:
                reason = _unsafe_reason(member, dest)
                if reason:
                    raise _BadArchive(
                        f"archive {archive} contains an unsafe member {member.name!r} ({reason}); refused"
                    )
                tar.extract(member, dest, **options)
                bar.update()
            # Read to the end of the compressed stream so a truncated or corrupt tail is detected.
            while stream.read(_CHUNK):
                pass
    except OSError as error:
        if error.errno is not None:  # a real file-system error; decompressors raise OSError without an errno
            raise TsnError(
                f"cannot extract {archive} into {dest.parent}: {error.strerror}; check free space and permissions"
            ) from None
        raise _corrupt(archive, error) from None
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as error:
        raise _corrupt(archive, error) from None


def _corrupt(archive: Path, error: Exception) -> _BadArchive:
    return _BadArchive(f"archive {archive} is truncated or corrupt ({error}); delete it and download it again")


def _unsafe_reason(member: tarfile.TarInfo, dest: Path) -> str | None:
    """Why ``member`` must not be extracted under ``dest``, or ``None`` if it is a plain file or folder inside."""
    if not (member.isreg() or member.isdir()):
        kind = "symbolic link" if member.issym() else "hard link" if member.islnk() else "device or special file"
        return kind
    # Backslashes are separators on Windows, so "..\\x" must count as climbing out there too.
    path = PurePosixPath(member.name.replace("\\", "/"))
    if path.is_absolute():
        return "absolute path"
    if ".." in path.parts:
        return "path with '..'"
    # Belt and braces for anything the checks above do not foresee: the resolved target must stay inside dest.
    if not (dest / member.name).resolve().is_relative_to(dest.resolve()):
        return "path outside the extraction folder"
    return None
