"""Serving a model over HTTP (``siamkit serve``): the FastAPI app, micro-batching, API keys,
input limits and metrics. Needs the ``serve`` extra (fastapi, uvicorn, python-multipart,
prometheus-client)."""

from siamkit.serving.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str):  # create_app imports fastapi (torch for a torch model): on demand
    if name == "create_app":
        from siamkit.serving.app import create_app

        return create_app
    raise AttributeError(name)
