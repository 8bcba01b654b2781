"""siamkit serve: every endpoint through FastAPI's TestClient on a tiny untrained Conv-4."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import siamkit
from siamkit.encoders import build_encoder
from siamkit.heads import HEADS
from siamkit.serving import ServeSettings, create_app
from siamkit.siamese import SiameseNetwork

ENCODER = {"name": "conv4", "params": {"input_size": 28, "channels": 8, "blocks": 3,
                                       "embedding_dim": 16, "normalize": True}}  # fmt: skip
HEAD = {"name": "cosine"}
PREPROCESS = {"name": "image", "params": {"size": [28, 28], "mode": "L"}}
RW, RO = "rw-secret-key", "ro-secret-key"


def tiny_model(folder, threshold: float = 0.5):
    """An untrained Conv-4 on 28x28 grey images, with a cosine head and a threshold."""
    torch.manual_seed(0)
    net = SiameseNetwork(build_encoder(ENCODER), HEADS.build(HEAD)).eval()
    return siamkit.save_model(folder, net, ENCODER, HEAD, PREPROCESS, threshold=threshold)


def png(seed: int, size: tuple[int, int] = (32, 30)) -> bytes:
    """A random grey PNG (different seeds look different to any network)."""
    pixels = np.random.default_rng(seed).integers(0, 255, size[::-1], dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def wait_ready(client: TestClient) -> None:
    for _ in range(600):
        if client.get("/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"server never became ready: {client.get('/ready').json()}")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("serve") / "model")


def serve(model_dir, gallery=None, **settings) -> TestClient:
    """A started TestClient (use as a context manager) for ``model_dir``."""
    base = ServeSettings(**settings).with_keys(rw=[RW], ro=[RO])
    return TestClient(create_app(model_dir, gallery, base), raise_server_exceptions=False)


@pytest.fixture
def client(model_dir, tmp_path):
    with serve(model_dir, tmp_path / "gallery") as c:
        wait_ready(c)
        c.headers["Authorization"] = f"Bearer {RW}"
        yield c


def test_health_ready_and_verify(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["status"] == "ready" and ready["kind"] == "image"
    same = client.post("/v1/verify", files={"a": ("a.png", png(1)), "b": ("b.png", png(1))})
    assert same.status_code == 200, same.text
    body = same.json()
    assert body["score"] == pytest.approx(1.0, abs=1e-5)
    assert body["threshold"] == 0.5 and body["decision"] == "same"
    other = client.post("/v1/verify", json={"a": b64(png(1)), "b": b64(png(2))}).json()
    assert other["score"] < 1.0 - 1e-4
    expected = siamkit.load(client.app.state.server.model_dir)
    a, b = Image.open(io.BytesIO(png(1))), Image.open(io.BytesIO(png(2)))
    assert other["score"] == pytest.approx(float(expected.score([a], [b])[0]), abs=1e-5)
