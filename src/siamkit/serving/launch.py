"""Starting a server: the checks, settings and uvicorn call shared by ``siamkit serve`` (typer)
and ``python -m siamkit.runtime serve`` (argparse, no torch). Imports neither torch nor
uvicorn until a server is started."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from siamkit.serving.backend import check_runtime, served_kind
from siamkit.serving.settings import SETTINGS_ENV, ServeSettings


def check_folder(model: Path, runtime: str) -> str:
    """The runtime that serves ``model`` ("auto" resolved), after refusing a folder it cannot
    serve in one line; an exported folder is checked without importing torch."""
    runtime = check_runtime(runtime, model)
    if runtime == "onnx":
        from siamkit.runtime.model import read_export_config

        preprocess = read_export_config(model).preprocess
        served_kind(str(model), preprocess and preprocess["name"])
    else:
        from siamkit.model import read_config

        config = read_config(model)
        preprocess_name = config.preprocess.name if config.preprocess else None
        served_kind(str(model), preprocess_name, two_tower=config.encoder_b is not None)
    return runtime


def default_torch_threads(workers: int = 1) -> int:
    """The model threads of each of ``workers`` server processes when not told: half the
    cores per worker (the other half decodes, parses HTTP and runs the clients)."""
    return max(1, (os.cpu_count() or 2) // (2 * workers))


def server_settings(
    workers: int = 1, api_keys_file: Path | None = None, **overrides: Any
) -> ServeSettings:
    """Settings from the environment and ``overrides`` (None: not given), the keys of
    ``api_keys_file``; model threads default to :func:`default_torch_threads`. Refuses
    authentication without a key."""
    if (
        overrides.get("torch_threads") is None
        and not os.environ.get("SIAMKIT_TORCH_THREADS", "").strip()
    ):
        overrides["torch_threads"] = default_torch_threads(workers)
    settings = ServeSettings.from_env(**overrides)
    if api_keys_file is not None:
        settings = settings.with_key_file(api_keys_file)
    settings.check_auth()
    return settings


def no_auth_warning(host: str, port: int) -> str:
    """What ``--no-auth`` says at start-up."""
    return (f"WARNING: --no-auth: anyone who can reach {host}:{port} may embed, verify, enroll "
            "and delete. Local experiments only.")  # fmt: skip


def run_server(
    model: Path, gallery: str | None, settings: ServeSettings, runtime: str,
    host: str = "127.0.0.1", port: int = 8000, workers: int = 1, access_log: bool = False,
) -> None:  # fmt: skip
    """Run uvicorn with ``workers`` processes, each building the app from the environment
    (:func:`siamkit.serving.app.app_from_env`), until interrupted."""
    import uvicorn

    from siamkit.serving.app import GALLERY_ENV, MODEL_ENV, RUNTIME_ENV

    os.environ[SETTINGS_ENV] = settings.to_env()  # digests only: workers inherit it
    os.environ[MODEL_ENV] = str(model.resolve())
    os.environ[GALLERY_ENV] = "" if gallery is None else gallery_location(gallery)
    os.environ[RUNTIME_ENV] = runtime
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


def gallery_location(gallery: str) -> str:
    """A gallery folder or Milvus Lite file as an absolute path (workers may chdir); URIs as
    they are."""
    if "://" in gallery or gallery.startswith("unix:"):
        return gallery
    return str(Path(gallery).resolve())
