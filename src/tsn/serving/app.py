"""The web layer of ``tsn serve``: a FastAPI app with one static page and a small JSON API.

Routes (every answer is JSON except the page; pictures and downloads travel inside it as ``data:`` URLs, so the
server keeps nothing between requests):

* ``GET /``: the page (``static/index.html``, plain HTML and JavaScript, no build step);
* ``GET /api/info``: the checkpoint, its tasks, whether it has a task space;
* ``POST /api/predict`` (multipart ``file``): every task on an uploaded image;
* ``GET /api/scene/{index}``: every task on a synthetic scene, with its ground truth;
* ``POST /api/mix`` (multipart ``file``, ``start``, ``end``): the task-space slider's frames.

A bad upload answers ``{"error": "<one line>"}`` with status 400 (413 when too large); an unexpected failure
answers a one-line 500, never a stack trace. Routes are plain ``def`` functions: FastAPI runs them on its worker
threads, and :class:`~tsn.serving.engine.Showcase` serialises the model's forward passes.
"""

from __future__ import annotations

import os
from importlib.resources import files
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from tsn.errors import TsnError
from tsn.models.base import DensePredictionModel
from tsn.serving.engine import MIX_STEPS, Mixing, Prediction, Showcase, UploadTooLarge, data_url
from tsn.utils.checks import one_line

__all__ = ["create_app", "FORM_OVERHEAD"]

_READ_CHUNK = 1 << 20
FORM_OVERHEAD = 1 << 16
"""Bytes a multipart form adds around the file (boundaries, headers, the slider's fields), generously."""


def _page() -> str:
    return files("tsn.serving").joinpath("static/index.html").read_text(encoding="utf-8")


def _read_upload(upload: UploadFile, showcase: Showcase) -> bytes:
    """The upload's bytes, reading at most one chunk past the limit (a huge file is refused, not held in memory)."""
    chunks, total = [], 0
    while chunk := upload.file.read(_READ_CHUNK):
        chunks.append(chunk)
        total += len(chunk)
        if total > showcase.max_upload_bytes:
            raise UploadTooLarge(showcase.too_large(upload.filename or "upload"))
    return b"".join(chunks)


def _prediction_json(prediction: Prediction) -> dict[str, Any]:
    height, width = prediction.original_size
    return {
        "name": prediction.name,
        "input": {"url": prediction.image.url, "width": prediction.image.width, "height": prediction.image.height},
        "original_size": [height, width],
        "outputs": [
            {
                "task": output.task,
                "title": output.title,
                "url": output.picture.url,
                "download": {"url": data_url(output.saved, output.saved_media_type), "filename": output.filename},
            }
            for output in prediction.outputs
        ],
        "truth": [{"task": task, "url": picture.url} for task, picture in prediction.truth.items()],
    }


def _mixing_json(mixing: Mixing) -> dict[str, Any]:
    return {
        "start": mixing.start,
        "end": mixing.end,
        "frames": [{"alpha": f.alpha, "as_start": f.as_start.url, "as_end": f.as_end.url} for f in mixing.frames],
    }


def create_app(
    checkpoint: DensePredictionModel | str | os.PathLike[str] | Showcase,
    *,
    size: tuple[int, int] = (512, 512),
    device: str | None = None,
) -> FastAPI:
    """The app of ``tsn serve`` for ``checkpoint`` (a checkpoint file or run folder, a model, or a ready
    :class:`Showcase`), its model loaded once, here. ``size`` and ``device``: see :class:`Showcase`."""
    showcase = checkpoint if isinstance(checkpoint, Showcase) else Showcase(checkpoint, size=size, device=device)
    page = _page()
    app = FastAPI(title="tsn serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.showcase = showcase

    @app.middleware("http")
    async def _refuse_huge_bodies(request: Request, call_next: Any) -> Any:
        """Refuse a body announced as far over the upload limit before it is received and parsed."""
        announced = request.headers.get("content-length", "")
        if announced.isdigit() and int(announced) > showcase.max_upload_bytes + FORM_OVERHEAD:
            return JSONResponse({"error": showcase.too_large("the upload")}, status_code=413)
        return await call_next(request)

    @app.exception_handler(TsnError)
    def _bad_input(request: Request, error: TsnError) -> JSONResponse:
        status = 413 if isinstance(error, UploadTooLarge) else 400
        return JSONResponse({"error": one_line(error, limit=1000)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    def _bad_request(request: Request, error: RequestValidationError) -> JSONResponse:
        fields = ", ".join(str(e.get("loc", ("?",))[-1]) for e in error.errors()) or "the request"
        return JSONResponse({"error": f"malformed request: check {fields} (the page sends a file field named "
                                      "'file')"}, status_code=400)

    @app.exception_handler(Exception)
    def _failure(request: Request, error: Exception) -> JSONResponse:  # last resort: one line, no stack trace
        return JSONResponse({"error": f"the server failed on this request: {one_line(error, limit=300)}"},
                            status_code=500)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return showcase.info()

    @app.post("/api/predict")
    def predict(file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        name = file.filename or "upload"
        pixels, original = showcase.decode(_read_upload(file, showcase), name)
        return _prediction_json(showcase.predict(pixels, name, original))

    @app.get("/api/scene/{index}")
    def scene(index: int) -> dict[str, Any]:
        pixels, sample = showcase.scene(index)
        return _prediction_json(showcase.predict(pixels, f"scene_{index:03d}", labels=sample))

    @app.post("/api/mix")
    def mix(
        file: Annotated[UploadFile, File()],
        start: Annotated[str, Form()],
        end: Annotated[str, Form()],
        steps: Annotated[int, Form()] = MIX_STEPS,
    ) -> dict[str, Any]:
        if not showcase.has_task_space:
            raise TsnError(showcase.info()["task_space_note"])
        pixels, _ = showcase.decode(_read_upload(file, showcase), file.filename or "upload")
        return _mixing_json(showcase.mix(pixels, start, end, steps))

    return app
