"""``siamkit serve``: the HTTP API (FastAPI + uvicorn). fastapi, uvicorn and torch are imported
only when the command runs; an exported folder (``--runtime onnx``, or ``auto`` on a folder
holding ``encoder.onnx``) is served by ONNX Runtime and never imports torch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from siamkit.cli.app import app, console


@app.command()
def serve(
    model: Annotated[
        Path, typer.Argument(help="Model folder (siamkit train) or export (siamkit export).")
    ],
    gallery: Annotated[
        str | None,
        typer.Option(help="Gallery folder, Milvus Lite *.db or URI (enroll/identify/search)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind (other machines: 0.0.0.0).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (one gallery).")] = 1,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="No API keys: local experiments only.")
    ] = False,
    api_keys_file: Annotated[
        Path | None, typer.Option(help="File of keys, one a line: rw:<key> or ro:<key>.")
    ] = None,
    batching: Annotated[
        bool, typer.Option("--batching/--no-batching", help="Micro-batch concurrent requests.")
    ] = True,
    max_batch: Annotated[int | None, typer.Option(min=1, help="Inputs per forward pass.")] = None,
    max_wait_ms: Annotated[
        float | None, typer.Option(min=0, help="Wait for a batch to fill (ms).")
    ] = None,
    queue_size: Annotated[
        int | None, typer.Option(min=1, help="Requests waiting before 503.")
    ] = None,
    max_upload_bytes: Annotated[int | None, typer.Option(min=1, help="Request body bytes.")] = None,
    max_image_pixels: Annotated[
        int | None, typer.Option(min=1, help="Pixels of one image.")
    ] = None,
    max_items: Annotated[
        int | None, typer.Option(min=1, help="Images or texts per request.")
    ] = None,
    max_text_chars: Annotated[int | None, typer.Option(min=1, help="Characters per text.")] = None,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request (uvicorn).")
    ] = False,
    torch_threads: Annotated[
        int | None,
        typer.Option(min=1, help="Threads per worker, torch or ONNX (default: half the cores)."),
    ] = None,
    runtime: Annotated[
        str,
        typer.Option(help="What runs the model: torch, onnx (an exported folder) or auto."),
    ] = "auto",
) -> None:
    """Serve MODEL over HTTP: /v1/embed, verify, similarity, enroll, identify, people, index,
    search; /docs, /health, /ready, /metrics. API keys from SIAMKIT_API_KEYS (read-write),
    SIAMKIT_READONLY_API_KEYS or --api-keys-file. --runtime onnx (or auto, the default, on a
    folder from siamkit export) serves an exported folder with ONNX Runtime, without torch."""
    import uvicorn

    from siamkit.serving.app import GALLERY_ENV, MODEL_ENV, RUNTIME_ENV
    from siamkit.serving.backend import check_runtime
    from siamkit.serving.settings import SETTINGS_ENV, ServeSettings

    runtime = check_runtime(runtime, model)
    _check_folder(model, runtime)  # a wrong folder is a one-line error now, not in every worker
    if torch_threads is None and not os.environ.get("SIAMKIT_TORCH_THREADS", "").strip():
        # half the cores per worker: the other half decodes, parses HTTP and runs the clients
        torch_threads = max(1, (os.cpu_count() or 2) // (2 * workers))
    settings = ServeSettings.from_env(
        no_auth=no_auth or None, batching=batching, max_batch=max_batch, max_wait_ms=max_wait_ms,
        queue_size=queue_size, max_upload_bytes=max_upload_bytes,
        max_image_pixels=max_image_pixels, max_items=max_items, max_text_chars=max_text_chars,
        torch_threads=torch_threads,
    )  # fmt: skip
    if api_keys_file is not None:
        settings = settings.with_key_file(api_keys_file)
    settings.check_auth()
    if settings.no_auth:
        console.print(
            "[bold red]WARNING: --no-auth: anyone who can reach "
            f"{host}:{port} may embed, verify, enroll and delete. Local experiments only.[/]",
            soft_wrap=True,
        )
    os.environ[SETTINGS_ENV] = settings.to_env()  # digests only: workers inherit it
    os.environ[MODEL_ENV] = str(model.resolve())
    os.environ[GALLERY_ENV] = "" if gallery is None else _location(gallery)
    os.environ[RUNTIME_ENV] = runtime
    console.print(
        f"siamkit serve: {model} ({runtime}) on http://{host}:{port} (docs: /docs)", soft_wrap=True
    )
    uvicorn.run(
        "siamkit.serving.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        timeout_graceful_shutdown=30,
        log_level="info",
        access_log=access_log,
    )


def _check_folder(model: Path, runtime: str) -> None:
    """Refuse a folder the chosen runtime cannot serve, in one line (torch is not imported for an
    exported folder)."""
    if runtime == "onnx":
        from siamkit.runtime.model import read_export_config

        read_export_config(model)
    else:
        from siamkit.model import read_config

        read_config(model)


def _location(gallery: str) -> str:
    """A gallery folder or Milvus Lite file as an absolute path (workers may chdir); URIs as
    they are."""
    if "://" in gallery or gallery.startswith("unix:"):
        return gallery
    return str(Path(gallery).resolve())
