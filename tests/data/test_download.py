"""``tsn download`` against a real HTTP server on 127.0.0.1 serving tiny archives built here (no internet)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tsn.cli import main
from tsn.data.download import MARKER, complete_folder, download_dataset, extract_archive, get_source
from tsn.errors import TsnError

FILES = {
    "PASCAL_MT/ImageSets/Context/val.txt": b"2008_000002\n2008_000003\n",
    "PASCAL_MT/JPEGImages/2008_000002.jpg": bytes(range(256)) * 40,
}


def make_tgz(files: dict[str, bytes] = FILES, extra: tuple[tarfile.TarInfo, ...] = ()) -> bytes:
    """A gzipped tar holding ``files`` (folders implied) followed by the raw ``extra`` members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return buffer.getvalue()


ARCHIVE = make_tgz()
DIGEST = hashlib.sha256(ARCHIVE).hexdigest()


@dataclass
class Behaviour:
    """What the test server sends; mutated by tests, read by the handler thread."""

    body: bytes = ARCHIVE
    cut_after: list[int] = field(default_factory=list)  # per request, in order: close after this many body bytes
    ignore_range: bool = False
    status: int | None = None  # answer every request with this error status
    requests: list[dict[str, str]] = field(default_factory=list)


def make_handler(behaviour: Behaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            behaviour.requests.append(dict(self.headers))
            body, total = behaviour.body, len(behaviour.body)
            if behaviour.status:
                self.send_error(behaviour.status)
                return
            start = 0
            ranged = self.headers.get("Range")
            if ranged and not behaviour.ignore_range:
                start = int(ranged.removeprefix("bytes=").rstrip("-"))
                if start >= total:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{total}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(total - start))
            self.end_headers()
            payload = body[start:]
            if behaviour.cut_after:
                payload = payload[: behaviour.cut_after.pop(0)]
                self.close_connection = True
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Behaviour]]:
    behaviour = Behaviour()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(behaviour))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/PASCAL_MT.tgz", behaviour
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def fetch(root: Path, url: str, **kwargs: object) -> Path:
    return download_dataset("pascal_context", root, url=url, progress=False, timeout=5, **kwargs)


def assert_complete(root: Path) -> None:
    folder = root / "PASCAL_MT"
    for name, data in FILES.items():
        assert (root / name).read_bytes() == data
    assert (folder / MARKER).read_text() == DIGEST + "\n"
    assert complete_folder("pascal_context", root) == folder
    assert not [p for p in root.iterdir() if p.name.startswith(".tsn-extract")]


def assert_nothing_complete(root: Path) -> None:
    """No final folder, no marker, no leftover extraction folder; at most the archive / .part."""
    assert not (root / "PASCAL_MT").exists()
    assert complete_folder("pascal_context", root) is None
    assert {p.name for p in root.iterdir()} <= {"PASCAL_MT.tgz", "PASCAL_MT.tgz.part"}


def test_download_extracts_marks_and_prints_digest(server, tmp_path, capsys):
    url, behaviour = server
    root = tmp_path / "data"
    assert fetch(root, url) == root / "PASCAL_MT"
    assert_complete(root)
    assert DIGEST in capsys.readouterr().out
    assert (root / "PASCAL_MT.tgz").read_bytes() == ARCHIVE  # kept, like torchvision
    assert len(behaviour.requests) == 1 and "Range" not in behaviour.requests[0]


def test_verified_digest_accepted(server, tmp_path, capsys):
    url, _ = server
    fetch(tmp_path, url, sha256=DIGEST.upper())
    assert_complete(tmp_path)
    assert "(verified)" in capsys.readouterr().out


def test_interrupted_download_resumes_with_range(server, tmp_path):
    url, behaviour = server
    behaviour.cut_after = [100]
    fetch(tmp_path, url)
    assert_complete(tmp_path)
    assert [r.get("Range") for r in behaviour.requests] == [None, "bytes=100-"]


def test_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    url, behaviour = server
    (tmp_path / "PASCAL_MT.tgz.part").write_bytes(ARCHIVE[:333])
    fetch(tmp_path, url, sha256=DIGEST)
    assert_complete(tmp_path)
    assert behaviour.requests[0]["Range"] == "bytes=333-"


@pytest.mark.parametrize("name", ["PASCAL_MT.tgz.part", "PASCAL_MT.tgz"])
def test_a_pipe_at_the_archive_or_its_partial_file_is_refused_before_any_request(server, tmp_path, name):
    url, behaviour = server
    os.mkfifo(tmp_path / name)
    with pytest.raises(TsnError, match=r"is a named pipe \(FIFO\), not a regular file") as error:
        fetch(tmp_path, url)
    assert "\n" not in str(error.value) and behaviour.requests == []
    assert stat.S_ISFIFO(os.lstat(tmp_path / name).st_mode)


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    url, behaviour = server
    behaviour.ignore_range = True
    (tmp_path / "PASCAL_MT.tgz.part").write_bytes(b"garbage that is not a prefix")
    fetch(tmp_path, url, sha256=DIGEST)
    assert_complete(tmp_path)
    assert behaviour.requests[0]["Range"] == "bytes=28-"


def test_416_on_a_finished_part_file_uses_it(server, tmp_path):
    url, behaviour = server
    (tmp_path / "PASCAL_MT.tgz.part").write_bytes(ARCHIVE)
    fetch(tmp_path, url)
    assert_complete(tmp_path)
    assert len(behaviour.requests) == 1


def test_416_on_an_oversized_part_file_restarts(server, tmp_path):
    url, behaviour = server
    (tmp_path / "PASCAL_MT.tgz.part").write_bytes(ARCHIVE + b"trailing junk")
    fetch(tmp_path, url)
    assert_complete(tmp_path)
    assert [r.get("Range") for r in behaviour.requests] == [f"bytes={len(ARCHIVE) + 13}-", None]


def test_repeated_interruptions_keep_part_and_fail(server, tmp_path):
    url, behaviour = server
    behaviour.cut_after = [10, 10, 10]
    with pytest.raises(TsnError, match=r"interrupted 3 times.*run the same command again") as error:
        fetch(tmp_path, url)
    assert "\n" not in str(error.value)
    assert (tmp_path / "PASCAL_MT.tgz.part").read_bytes() == ARCHIVE[:30]
    assert_nothing_complete(tmp_path)


def test_checksum_mismatch_removes_part(server, tmp_path):
    url, _ = server
    wrong = "0" * 64
    with pytest.raises(TsnError, match=f"expected sha256 {wrong}, got {DIGEST}"):
        fetch(tmp_path, url, sha256=wrong)
    assert not any(tmp_path.iterdir())


def test_bad_sha256_option(tmp_path):
    with pytest.raises(TsnError, match="64 hexadecimal digits"):
        download_dataset("pascal_context", tmp_path, sha256="abc", archive=tmp_path / "x.tgz")


@pytest.mark.parametrize("keep", [len(ARCHIVE) // 2, len(ARCHIVE) - 8, len(ARCHIVE) - 1])
def test_truncated_download_fails_and_is_dropped(server, tmp_path, keep):
    # The server sends a short file with a matching Content-Length: only the archive itself can tell.
    # Cutting the 8-byte gzip trailer leaves a tar that reads fine: only the end-of-stream check catches it.
    url, behaviour = server
    behaviour.body = ARCHIVE[:keep]
    with pytest.raises(TsnError, match="truncated or corrupt"):
        fetch(tmp_path, url)
    assert not any(tmp_path.iterdir())  # a rerun must start over instead of "resuming" a complete bad file


def test_corrupt_user_archive_is_kept(tmp_path):
    archive = tmp_path / "PASCAL_MT.tgz"
    archive.write_bytes(ARCHIVE[:100] + b"\x00" * 50 + ARCHIVE[150:])
    root = tmp_path / "data"
    with pytest.raises(TsnError, match="truncated or corrupt"):
        download_dataset("pascal_context", root, archive=archive, progress=False)
    assert archive.exists()
    assert_nothing_complete(root)


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", size: int = 4) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.size = size if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_member("../evil"), "path with '..'"),
        (_member("PASCAL_MT/../../evil"), "path with '..'"),
        (_member("/tmp/tsn-evil-absolute"), "absolute"),
        (_member("PASCAL_MT/link", tarfile.SYMTYPE, "../../evil"), "symbolic link"),
        (_member("PASCAL_MT/hard", tarfile.LNKTYPE, "PASCAL_MT/ImageSets/Context/val.txt"), "hard link"),
        (_member("PASCAL_MT/dev", tarfile.CHRTYPE), "device"),
        (_member("PASCAL_MT/fifo", tarfile.FIFOTYPE), "device"),
    ],
)
def test_unsafe_members_are_refused(server, tmp_path, member, reason):
    url, behaviour = server
    behaviour.body = make_tgz(extra=(member,))
    root = tmp_path / "deep" / "data"
    with pytest.raises(TsnError, match=re.escape(f"unsafe member '{member.name}' ({reason}")):
        fetch(root, url)
    assert_nothing_complete(root)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["deep", "deep/data"]
    assert not Path("/tmp/tsn-evil-absolute").exists()


def test_archive_without_expected_folder(tmp_path):
    archive = tmp_path / "other.tgz"
    archive.write_bytes(make_tgz({"NYUD_MT/gt_sets/val.txt": b"0001\n"}))
    with pytest.raises(TsnError, match="no top-level PASCAL_MT/ folder \\(found: NYUD_MT\\)"):
        extract_archive(archive, tmp_path, "PASCAL_MT", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.tgz"]


def test_complete_folder_needs_no_network(server, tmp_path):
    url, behaviour = server
    fetch(tmp_path, url)
    (tmp_path / "PASCAL_MT.tgz").unlink()
    assert fetch(tmp_path, url) == tmp_path / "PASCAL_MT"
    assert download_dataset("pascal_context", tmp_path, url="http://127.0.0.1:9/unreachable") == tmp_path / "PASCAL_MT"
    assert len(behaviour.requests) == 1


def test_existing_archive_is_reused_without_network(server, tmp_path):
    url, behaviour = server
    (tmp_path / "PASCAL_MT.tgz").write_bytes(ARCHIVE)
    fetch(tmp_path, url)
    assert_complete(tmp_path)
    assert not behaviour.requests


def test_unmarked_folder_is_not_overwritten(server, tmp_path):
    url, behaviour = server
    (tmp_path / "PASCAL_MT").mkdir()
    with pytest.raises(TsnError, match="not completed by `tsn download`"):
        fetch(tmp_path, url)
    assert not behaviour.requests


def test_http_and_network_errors_are_one_line(server, tmp_path):
    url, behaviour = server
    behaviour.status = 404
    with pytest.raises(TsnError, match=f"cannot download {url}: HTTP 404 .*--archive PATH"):
        fetch(tmp_path, url)
    with pytest.raises(TsnError, match=r"cannot download http://127\.0\.0\.1:9/x\.tgz: .*--archive PATH") as error:
        fetch(tmp_path, "http://127.0.0.1:9/x.tgz")
    assert "\n" not in str(error.value)
    assert_nothing_complete(tmp_path)


def test_registry():
    assert get_source("PASCAL-context").folder == "PASCAL_MT"
    assert get_source("nyud").url == "https://data.vision.ee.ethz.ch/kmaninis/share/MTL/NYUD_MT.tgz"
    with pytest.raises(TsnError, match="choose one of: nyud, pascal_context"):
        get_source("cityscapes")


def test_cli_success_and_failure(server, tmp_path, capsys):
    url, _ = server
    root = tmp_path / "data"
    assert main(["download", "pascal_context", "--root", str(root), "--url", url, "--no-progress"]) == 0
    assert_complete(root)
    assert f"ready in {root / 'PASCAL_MT'}" in capsys.readouterr().out

    missing = tmp_path / "missing.tgz"
    assert main(["download", "nyud", "--data-root", str(root), "--archive", str(missing), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tsn download: error: archive") and str(missing) in err


def test_cli_uses_tsn_data_root(tmp_path, monkeypatch, capsys):
    archive = tmp_path / "NYUD_MT.tgz"
    archive.write_bytes(make_tgz({"NYUD_MT/gt_sets/val.txt": b"0001\n"}))
    monkeypatch.setenv("TSN_DATA_ROOT", str(tmp_path / "env-root"))
    assert main(["download", "nyud", "--archive", str(archive), "--no-progress"]) == 0
    assert (tmp_path / "env-root" / "NYUD_MT" / "gt_sets" / "val.txt").read_bytes() == b"0001\n"
