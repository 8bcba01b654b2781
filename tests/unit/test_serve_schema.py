"""Schemathesis over the server's OpenAPI schema: generated requests (25 per operation) never
get a 5xx, and every response matches the schema (status, content type, body)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from pathlib import Path

import hypothesis
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from siamkit.serving import ServeSettings, create_app
from unit.test_serve import RW, tiny_model


def served_app() -> FastAPI:
    """A tiny model served with a gallery (built at collection, in a temporary folder)."""
    folder = Path(tempfile.mkdtemp(prefix="siamkit-schema-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return create_app(tiny_model(folder / "model"), folder / "gallery",
                      ServeSettings().with_keys(rw=[RW]))  # fmt: skip


def wait_ready(app: FastAPI) -> None:
    """Schemathesis starts the app's lifespan (loading the model in the background) itself."""
    server = app.state.server
    for _ in range(1200):
        if server.ready:
            return
        time.sleep(0.05)
    raise AssertionError(f"never ready: {server.failure}")


APP = served_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@hypothesis.settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
def test_generated_requests_get_no_5xx_and_match_the_schema(case):
    # Generated bodies are schema-valid but are not images: a 400 is the right answer for them,
    # so "schema-valid data must be accepted" does not apply to this API.
    with asgi.get_client(APP) as client:  # the app's lifespan, shared with schemathesis' calls
        client.get("/health")
        wait_ready(APP)
    case.call_and_validate(
        headers={"Authorization": f"Bearer {RW}"}, excluded_checks=[positive_data_acceptance]
    )
