"""The Hugging Face Hub side: fetch a pretrained folder into huggingface_hub's cache, and publish one.

Everything goes through huggingface_hub, so its cache (``HF_HOME``, ``HF_HUB_CACHE``), offline mode
(``HF_HUB_OFFLINE=1``), endpoint (``HF_ENDPOINT``) and token (``HF_TOKEN``, ``hf auth login``) work as for every
other library of the field. Its errors become one line saying what to do.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tsn.errors import TsnError
from tsn.hub.source import CARD_FILE, CONFIG_FILE, EVALUATION_FILE, WEIGHTS_FILE, HubSource, parse_hub_source
from tsn.utils.checks import escaped, one_line

__all__ = ["download", "push_to_hub", "hub_cache", "offline"]

_UPLOADED = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE, EVALUATION_FILE)


def offline() -> bool:
    """huggingface_hub's offline mode (``HF_HUB_OFFLINE=1``, read when huggingface_hub is first imported)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_cache() -> str:
    """The folder huggingface_hub caches models in (``HF_HUB_CACHE``, by default ``$HF_HOME/hub``)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def _from_http_library(error: BaseException) -> bool:
    return type(error).__module__.split(".")[0] in ("httpx", "httpx2", "huggingface_hub", "requests")


def _cause(error: BaseException) -> str:
    """The innermost reason of a chained error (a refused connection, a DNS failure...), in one line."""
    while error.__cause__ is not None:
        error = error.__cause__
    return one_line(f"{type(error).__name__}: {error}", 160)


def _download_error(source: HubSource, filename: str, error: Exception) -> TsnError:
    from huggingface_hub import errors

    name = str(source)
    if isinstance(error, errors.GatedRepoError):
        return TsnError(f"{name} is a gated repository; accept its terms on the Hub and log in (hf auth login or "
                        "HF_TOKEN), then try again")
    if isinstance(error, errors.RepositoryNotFoundError):
        return TsnError(f"{name}: no such model repository on the Hub ({_endpoint()}), or it is private: check the "
                        "name, or log in (hf auth login or HF_TOKEN) if it is yours")
    if isinstance(error, errors.RevisionNotFoundError):
        return TsnError(f"{name}: the repository has no revision {source.revision!r}; give a branch, tag or commit "
                        "that exists")
    if isinstance(error, errors.LocalEntryNotFoundError):
        where = f"the Hugging Face cache ({escaped(hub_cache())})"
        what = name if filename == CONFIG_FILE else f"{name}: its {filename}"
        if offline():
            return TsnError(f"{what} is not in {where} and HF_HUB_OFFLINE=1 forbids downloading it; download it "
                            "once with network (unset HF_HUB_OFFLINE), or give a local pretrained folder")
        return TsnError(f"{name}: cannot reach the Hub at {_endpoint()} ({_cause(error)}) and the model is not in "
                        f"{where}; check the network (or HF_ENDPOINT), or set HF_HUB_OFFLINE=1 to use the cache only")
    if isinstance(error, errors.EntryNotFoundError):
        return TsnError(f"{name} has no {filename}: it is not a tsn model (publish one with tsn.save_pretrained and "
                        "tsn push)")
    if isinstance(error, errors.HfHubHTTPError):
        return TsnError(f"{name}: the Hub answered with an error ({one_line(error, 200)}); try again later")
    return TsnError(f"{name}: cannot download {filename} ({_cause(error)}); check the network and the free disk "
                    f"space of {escaped(hub_cache())}")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """huggingface_hub's warnings ("Retrying in 8s...") held back: the one line that follows says what happened."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def _fetch(source: HubSource, filename: str, revision: str | None) -> Path:
    from huggingface_hub import hf_hub_download

    from tsn import __version__

    try:
        with _quiet():
            return Path(hf_hub_download(source.repo_id, filename, revision=revision, library_name="tsn",
                                        library_version=__version__))
    except Exception as error:  # huggingface_hub's errors derive from OSError / ValueError; httpx's may escape it
        if not isinstance(error, (OSError, ValueError)) and not _from_http_library(error):
            raise
        raise _download_error(source, filename, error) from None


def download(source: HubSource | str) -> Path:
    """The snapshot folder of a Hub model in huggingface_hub's cache, fetching its config and weights if needed.

    ``config.json`` comes first and is checked, so a repository that is not a tsn model is refused before its
    weights are downloaded; the weights are then fetched from the very commit the config came from.
    """
    from tsn.hub.folder import read_pretrained_config

    hub = source if isinstance(source, HubSource) else parse_hub_source(source)
    if hub is None:
        raise TsnError(f"{source!r} is not a Hub model name; write hf-hub:ORG/NAME[@REVISION]")
    config = _fetch(hub, CONFIG_FILE, hub.revision)
    snapshot = config.parent  # .../models--ORG--NAME/snapshots/<commit>/
    try:
        read_pretrained_config(snapshot)
    except TsnError as error:
        raise TsnError(f"{hub}: {error}") from None
    _fetch(hub, WEIGHTS_FILE, snapshot.name if len(snapshot.name) == 40 else hub.revision)
    return snapshot


def _push_error(repo_id: str, error: Exception) -> TsnError:
    from huggingface_hub import errors

    if isinstance(error, errors.HfHubHTTPError):
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status in (401, 403):
            return TsnError(f"the Hub refused the token for {repo_id} (HTTP {status}); log in again with a token "
                            "that can write (hf auth login, or HF_TOKEN)")
        return TsnError(f"the Hub refused the upload to {repo_id} ({one_line(error, 200)})")
    return TsnError(f"cannot reach the Hub at {_endpoint()} ({_cause(error)}); check the network (or HF_ENDPOINT) and "
                    "push again")


def push_to_hub(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload a pretrained folder to the Hub repository ``repo_id`` (created if missing); returns the commit URL.

    The folder is loaded first (a damaged or inconsistent folder is never published). Without a token (``token``,
    ``HF_TOKEN`` or ``hf auth login``) or in offline mode it stops in one line before any network access.
    """
    from tsn.hub.folder import load_pretrained

    text = repo_id if repo_id.startswith("hf-hub:") else f"hf-hub:{repo_id}"
    hub = parse_hub_source(text)
    assert hub is not None
    if hub.revision is not None:
        raise TsnError(f"{repo_id!r}: give the branch with --revision, not after '@'")
    path = Path(folder).expanduser()
    if not (path / CARD_FILE).is_file():
        raise TsnError(f"{escaped(path)} has no {CARD_FILE} (model card); save it with tsn.save_pretrained")
    load_pretrained(path)  # complete, consistent and loadable, or refused here
    if offline():
        raise TsnError("HF_HUB_OFFLINE=1 forbids uploading; unset it on a machine with network to push")
    from huggingface_hub import HfApi, get_token

    token = token or get_token()
    if not token:
        raise TsnError("no Hugging Face token: log in with `hf auth login` or set HF_TOKEN (a token that can write), "
                       "then push again")
    api: Any = HfApi(endpoint=_endpoint(), token=token)
    try:
        with _quiet():
            api.create_repo(hub.repo_id, private=private, exist_ok=True)
            if revision is not None:
                api.create_branch(hub.repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(
                folder_path=str(path), repo_id=hub.repo_id, revision=revision,
                commit_message=commit_message or "Upload tsn model", allow_patterns=list(_UPLOADED),
            )
    except Exception as error:  # huggingface_hub raises its HTTP errors (OSError), httpx's and ValueError
        if not isinstance(error, (OSError, ValueError)) and not _from_http_library(error):
            raise
        raise _push_error(hub.repo_id, error) from None
    return str(getattr(info, "commit_url", info))
