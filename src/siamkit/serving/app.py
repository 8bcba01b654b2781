"""The FastAPI application of ``siamkit serve``: :func:`create_app`.

At start-up a background task loads the model, warms it up and opens the gallery; ``/ready``
answers 503 until that is done (``/health`` answers from the first moment), and so do the
``/v1/`` endpoints. Errors are JSON ``{"detail": "<one line>"}`` with a 4xx status: input that
siamkit refuses (:class:`~siamkit.errors.SiamkitError`) is a 400, a full model queue a 503 with
``Retry-After``. The endpoints themselves are in :mod:`siamkit.serving.routes`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from siamkit.errors import SiamkitError
from siamkit.serving.backend import ModelBackend, check_runtime, load_backend
from siamkit.serving.batcher import Batcher, Busy
from siamkit.serving.gallery import GalleryService
from siamkit.serving.inputs import BodyLimitMiddleware, BodyTooLarge
from siamkit.serving.metrics import Metrics, MetricsMiddleware
from siamkit.serving.schemas import Error, Health, Ready
from siamkit.serving.settings import SETTINGS_ENV, ServeSettings

log = logging.getLogger("siamkit.serve")
STATIC = Path(__file__).parent / "static"
MODEL_ENV, GALLERY_ENV = "SIAMKIT_SERVE_MODEL", "SIAMKIT_SERVE_GALLERY"
RUNTIME_ENV = "SIAMKIT_SERVE_RUNTIME"


class Server:
    """Everything one app holds: settings, the model and its batcher, the gallery, metrics."""

    def __init__(
        self, model_dir: Path, gallery: str | None, settings: ServeSettings, runtime: str = "torch"
    ) -> None:
        self.model_dir, self.settings, self.runtime = model_dir, settings, runtime
        self.model: ModelBackend | None = None
        self.gallery = GalleryService(gallery) if gallery else None
        self.metrics = Metrics()
        self.batcher: Batcher | None = None
        self.decoder: ThreadPoolExecutor | None = None
        self.ready = False
        self.failure: str | None = None
        self.metrics.track(
            lambda: self.batcher.depth if self.batcher else 0,
            lambda: self.gallery.size if self.gallery else 0,
        )

    async def start(self) -> None:
        """Load and warm up the model, open the gallery, start batching; then be ready."""
        loop = asyncio.get_running_loop()
        self.failure = None
        self.decoder = ThreadPoolExecutor(2, thread_name_prefix="siamkit-decode")
        try:
            s = self.settings
            batcher = Batcher(
                self._run, s.max_batch, s.max_wait_ms, s.queue_size, s.batching,
                self.metrics.batch_size.observe,
            )  # fmt: skip
            self.model = await loop.run_in_executor(
                batcher.executor, load_backend, self.model_dir, self.runtime,
                s.max_image_pixels, s.torch_threads,
            )  # fmt: skip
            await loop.run_in_executor(batcher.executor, self.model.warm_up, s.max_batch)
            if self.gallery is not None:
                await self.gallery.open()
            batcher.start()
            self.batcher = batcher
            self.ready = True
            log.info("siamkit serve: model %s ready (%s)", self.model_dir, self.runtime)
        except Exception as error:
            self.failure = f"{type(error).__name__}: {error}".replace("\n", " ")
            log.exception("siamkit serve: start-up failed")

    def _run(self, items: list[Any]) -> Any:
        assert self.model is not None
        return self.model.run(items)

    async def stop(self) -> None:
        """Stop batching, close the gallery (saving its index) and the worker threads; the app
        may be started again (e.g. by a second test client)."""
        self.ready = False
        if self.batcher is not None:
            await self.batcher.stop()
            self.batcher = None
        if self.gallery is not None:
            await self.gallery.close()
        if self.decoder is not None:
            self.decoder.shutdown(wait=True)
            self.decoder = None


def one_line(text: object) -> str:
    """An error message on one line."""
    return " ".join(str(text).split())


def create_app(
    model_dir: str | Path,
    gallery: str | Path | None = None,
    settings: ServeSettings | None = None,
    runtime: str = "auto",
) -> FastAPI:
    """The HTTP API serving the model folder ``model_dir`` (and ``gallery``, a folder, Milvus
    Lite file or URI, for the enroll/identify/index/search endpoints).

    ``runtime`` is ``"torch"`` (a model folder), ``"onnx"`` (a folder from ``siamkit export``,
    served by ONNX Runtime without importing torch) or ``"auto"`` (``"onnx"`` for a folder holding
    ``encoder.onnx``): see :mod:`siamkit.serving.backend`.

    ``settings`` default to :meth:`ServeSettings.from_env`; with authentication on, at least one
    API key must be configured (a :class:`~siamkit.errors.ConfigError` otherwise).
    """
    settings = settings if settings is not None else ServeSettings.from_env()
    settings.check_auth()
    runtime = check_runtime(runtime, model_dir)
    server = Server(Path(model_dir), None if gallery is None else str(gallery), settings, runtime)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        starting = asyncio.get_running_loop().create_task(server.start())
        try:
            yield
        finally:
            await asyncio.shield(starting)  # a model still loading finishes before shutdown
            await server.stop()

    app = FastAPI(
        title="siamkit",
        summary="Siamese networks over HTTP: embed, verify, identify and search.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.server = server
    app.state.settings = settings
    _add_error_handlers(app)
    _add_service_routes(app, server)
    from siamkit.serving.routes import router

    app.include_router(router)
    _mount_static(app)
    _document_errors(app)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_upload_bytes)
    app.add_middleware(MetricsMiddleware, metrics=server.metrics)
    return app


def app_from_env() -> FastAPI:
    """The app ``siamkit serve --workers N`` starts in each worker process (uvicorn factory):
    model, gallery and settings from the environment ``siamkit serve`` prepared."""
    text = os.environ.get(SETTINGS_ENV)
    settings = ServeSettings.from_json(text) if text else ServeSettings.from_env()
    model, gallery = os.environ[MODEL_ENV], os.environ.get(GALLERY_ENV) or None
    return create_app(model, gallery, settings, os.environ.get(RUNTIME_ENV) or "auto")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for distribution in ("siamkit", "siamkit-runtime"):  # the full package, or the torch-free one
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    return "0"


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SiamkitError)
    async def refused(request: Request, error: SiamkitError) -> JSONResponse:
        return JSONResponse({"detail": one_line(error)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problem = error.errors()[0]
        where = " ".join(str(p) for p in problem.get("loc", ()))
        return JSONResponse({"detail": one_line(f"{where}: {problem['msg']}")}, status_code=422)

    @app.exception_handler(Busy)
    async def busy(request: Request, error: Busy) -> JSONResponse:
        detail = "the server is busy (model queue full); retry shortly"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, error: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"detail": one_line(error)}, status_code=413)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("siamkit serve: unexpected error on %s", request.url.path)
        return JSONResponse({"detail": f"internal error ({type(error).__name__})"}, 500)


def _add_service_routes(app: FastAPI, server: Server) -> None:
    @app.get("/health", response_model=Health, tags=["service"])
    async def health() -> dict[str, str]:
        """The process is up (the model may still be loading: see ``/ready``)."""
        return {"status": "ok"}

    @app.get(
        "/ready", response_model=Ready, tags=["service"],
        responses={503: {"model": Error, "description": "still loading, or failed to start"}},
    )  # fmt: skip
    async def ready() -> Any:
        """200 once the model is loaded and warmed up and the gallery is open, else 503."""
        if not server.ready:
            detail = f"start-up failed: {server.failure}" if server.failure else "loading"
            return JSONResponse({"detail": detail}, 503, headers={"Retry-After": "1"})
        assert server.model is not None
        return {
            "status": "ready",
            "model": server.model.name,
            "kind": server.model.kind,
            "runtime": server.model.runtime,
            "gallery": server.gallery.location if server.gallery else None,
            "batching": server.settings.batching,
        }

    @app.get(
        "/metrics", tags=["service"], response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    )  # fmt: skip
    async def metrics() -> Response:
        """Prometheus metrics of this worker process."""
        body, content_type = server.metrics.exposition()
        return Response(body, media_type=content_type)


def _mount_static(app: FastAPI) -> None:
    """The web page: ``/`` is ``static/index.html``, ``/static/...`` the rest."""
    index = STATIC / "index.html"

    @app.get("/", include_in_schema=False)
    async def home() -> Response:
        return FileResponse(index) if index.is_file() else RedirectResponse("/docs")

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")


def _document_errors(app: FastAPI) -> None:
    """Make the OpenAPI schema say what the server sends: ``{"detail": str}`` for a 422 too."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                responses = operation.get("responses", {})
                if "422" in responses:
                    responses["422"] = {
                        "description": "invalid parameter",
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/Error"}}},
                    }  # fmt: skip
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault("Error", Error.model_json_schema())
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
