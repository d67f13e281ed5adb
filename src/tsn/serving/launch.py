"""``tsn serve`` as a function: find the checkpoint (the demo's latest run by default), check the web extra and
the port, load the model once and run the page with uvicorn until Ctrl-C.

Everything the user can get wrong (no web extra, a port in use, a missing checkpoint) is refused in one line
before the model is loaded or the demo trained.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from tsn.errors import TsnError

__all__ = [
    "EXTRA_MESSAGE",
    "DEMO_RUNS",
    "require_web_extra",
    "latest_demo_run",
    "run_input_size",
    "check_port",
    "train_demo_run",
    "keep_uploads_in_memory",
    "serve",
]

EXTRA_MESSAGE = "tsn serve needs the web extra: pip install 'tsn[serve]'"
DEMO_RUNS = Path("runs")
"""Where ``tsn demo`` writes its runs (``runs/demo-<date>-<time>``), relative to the working folder."""
_WEB_MODULES = ("fastapi", "uvicorn", "multipart")


def _say(line: str) -> None:
    print(line, flush=True)


def require_web_extra() -> None:
    """A one-line :class:`TsnError` when FastAPI, uvicorn or python-multipart is missing."""
    if any(importlib.util.find_spec(module) is None for module in _WEB_MODULES):
        raise TsnError(EXTRA_MESSAGE)


def latest_demo_run(root: str | os.PathLike[str] = DEMO_RUNS) -> Path | None:
    """The newest finished ``tsn demo`` run under ``root`` (its folder; None when there is none).

    Demo folders are named by their start time, so the newest sorts last; a run counts once it finished (it wrote
    its demo metrics) and holds a checkpoint (:mod:`tsn.run_folder`).
    """
    from tsn.run_folder import RunPaths, checkpoint_in

    root = Path(root)
    if not root.is_dir():
        return None
    for run in sorted(root.glob("demo-*"), reverse=True):
        if RunPaths(run).demo_metrics.is_file() and checkpoint_in(run) is not None:
            return run
    return None


def run_input_size(checkpoint: str | os.PathLike[str]) -> tuple[int, int] | None:
    """The network input size a ``tsn train`` run was trained at (its config), for a run folder or a checkpoint
    inside one; None for a checkpoint outside a run or an unreadable config."""
    from tsn.run_folder import config_of

    config = config_of(checkpoint)
    if config is None:
        return None
    from tsn.training import load_config

    try:
        return load_config(config).data.input_size
    except TsnError:
        return None


def check_port(host: str, port: int) -> None:
    """A one-line :class:`TsnError` when ``port`` is out of range or already taken on ``host``."""
    if not 0 < port < 65536:
        raise TsnError(f"--port {port}: use a port from 1 to 65535 (e.g. 7860)")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror:
        raise TsnError(f"--host {host}: not a known host name or address; use 127.0.0.1 (this machine only)") from None
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise TsnError(f"cannot listen on {host}:{port} ({error.strerror or error}); another program may use "
                           "it: pick another with --port") from None


def train_demo_run(out: str | os.PathLike[str] | None = None, notes: Callable[[str], None] = _say) -> Path:
    """Train the demo model as ``tsn demo`` does (into ``runs/demo-<date>-<time>`` by default); its run folder."""
    from tsn.studies.demo import DEMO_PRESET, run_demo
    from tsn.training import load_config

    out = Path(out) if out is not None else DEMO_RUNS / datetime.now().strftime("demo-%Y%m%d-%H%M%S")
    result = run_demo(load_config(DEMO_PRESET), out, notes=notes)
    if not result.finished or not result.rows:
        raise TsnError(f"the demo training was interrupted; resume it with `tsn train --resume {out}` or give "
                       "--checkpoint CKPT")
    return out


def keep_uploads_in_memory(limit: int) -> None:
    """Make the web framework hold uploads of up to ``limit`` bytes in memory.

    Starlette parses a multipart upload into a ``SpooledTemporaryFile`` that rolls over to a temporary file on
    disk past 1 MiB; raising its threshold to the page's own upload limit keeps every accepted upload in memory
    (larger ones are refused before they are read whole). A class attribute, so process-wide: ``serve`` sets it
    for its own process only; :func:`tsn.serving.app.create_app` leaves it to the embedding program.
    """
    from starlette.formparsers import MultiPartParser

    from tsn.serving.app import FORM_OVERHEAD

    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, int(limit) + FORM_OVERHEAD)


def serve(
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    size: tuple[int, int] | None = None,
    device: str = "auto",
    notes: Callable[[str], None] = _say,
) -> None:
    """Serve the page for ``checkpoint`` on ``http://host:port`` until interrupted.

    ``checkpoint`` None: the newest finished demo run under ``runs/``; when there is none, the demo model is
    trained first (a few minutes on a CPU, as ``tsn demo``). ``size``: the network input (default: the size the
    run was trained at, from its ``config.yaml``, else 512). ``device``: ``auto`` (a GPU if any), ``cpu``,
    ``cuda``...
    """
    require_web_extra()
    check_port(host, port)
    from tsn.utils.device import resolve_device

    run_on = resolve_device(device)  # an unknown device fails here, before any work
    if checkpoint is None:
        found = latest_demo_run()
        if found is None:
            notes(f"no finished demo run under {DEMO_RUNS}/: training the demo model first, as `tsn demo` does (a "
                  "few minutes on a CPU; or stop and give --checkpoint CKPT)")
            found = train_demo_run(notes=notes)
        notes(f"serving the demo run {found}")
        checkpoint = found
    else:
        from tsn.models.checkpoint import check_model_source

        check_model_source(checkpoint)  # the loader's own refusal, before the web app starts
    import uvicorn

    from tsn.serving.app import create_app

    app = create_app(checkpoint, size=size or run_input_size(checkpoint) or (512, 512), device=str(run_on))
    keep_uploads_in_memory(app.state.showcase.max_upload_bytes)
    shown = f"[{host}]" if ":" in host else host
    notes(f"tsn serve: open http://{shown}:{port} in a browser (Ctrl-C stops the server)")
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).run()
