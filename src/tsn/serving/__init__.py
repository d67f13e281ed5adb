"""``tsn serve``: an interactive page for any checkpoint (upload an image or pick a synthetic scene, see every task,
slide through a TSN's task space, download the authors' files).

Three modules: :mod:`~tsn.serving.engine` (the model and what the page shows; no web library),
:mod:`~tsn.serving.app` (``create_app(checkpoint) -> FastAPI``, the page and its JSON API) and
:mod:`~tsn.serving.launch` (``serve(...)``: default checkpoint, checks, uvicorn). FastAPI, uvicorn and
python-multipart come with the ``serve`` extra (``pip install 'tsn[serve]'``); importing this package needs none
of them, only :mod:`tsn.serving.app` does.
"""

from __future__ import annotations

__all__: list[str] = []
