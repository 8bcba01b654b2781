"""``siamkit serve``: the HTTP API (FastAPI + uvicorn). fastapi, uvicorn and torch are imported
only when the command runs; an exported folder (``--runtime onnx``, or ``auto`` on a folder
holding ``encoder.onnx``) is served by ONNX Runtime and never imports torch."""

from __future__ import annotations

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
    from siamkit.serving.launch import check_folder, no_auth_warning, run_server, server_settings

    runtime = check_folder(model, runtime)  # a wrong folder is a one-line error now, not later
    settings = server_settings(
        workers, api_keys_file,
        no_auth=no_auth or None, batching=batching, max_batch=max_batch, max_wait_ms=max_wait_ms,
        queue_size=queue_size, max_upload_bytes=max_upload_bytes,
        max_image_pixels=max_image_pixels, max_items=max_items, max_text_chars=max_text_chars,
        torch_threads=torch_threads,
    )  # fmt: skip
    if settings.no_auth:
        console.print(f"[bold red]{no_auth_warning(host, port)}[/]", soft_wrap=True)
    console.print(
        f"siamkit serve: {model} ({runtime}) on http://{host}:{port} (docs: /docs)", soft_wrap=True
    )
    run_server(model, gallery, settings, runtime, host, port, workers, access_log)
