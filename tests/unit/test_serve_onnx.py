"""siamkit serve on an exported folder: ONNX Runtime behind the same endpoints, answering as the
torch server does (scores within 1e-4), and never importing torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import siamkit
from siamkit.encoders import build_encoder
from siamkit.errors import ConfigError
from siamkit.export import export_onnx
from siamkit.heads import HEADS
from siamkit.serving.backend import check_runtime, detect_runtime
from siamkit.siamese import SiameseNetwork
from unit.test_serve import HEAD, RO, RW, b64, png, serve, tiny_model, wait_ready

pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[2]
LISTED = {line.strip() for line in (ROOT / "packaging" / "runtime" / "modules.txt").read_text()
          .splitlines() if line.strip() and not line.startswith("#")}  # fmt: skip
# ONNX Runtime vs eager torch on the tiny Conv-4: float rounding only (measured: embeddings
# 8.9e-08, pair and reference scores 6.0e-08); a wrong graph, layout or preprocessing is 1e-2..1.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny Conv-4 model folder and its ONNX export."""
    root = tmp_path_factory.mktemp("serve_onnx")
    model = tiny_model(root / "model")
    return model, export_onnx(model, root / "model-onnx")


def both(folders, tmp_path, **settings):
    """Started clients of the torch and the ONNX server (each with its own gallery)."""
    model, exported = folders
    return (serve(model, tmp_path / "torch.gallery", **settings),
            serve(exported, tmp_path / "onnx.gallery", **settings))  # fmt: skip


def test_auto_runtime_picks_onnx_for_an_exported_folder(folders):
    model, exported = folders
    assert detect_runtime(model) == "torch" and detect_runtime(exported) == "onnx"
    assert check_runtime("auto", exported) == "onnx" and check_runtime("torch", exported) == "torch"
    with pytest.raises(ConfigError, match="runtime: expected one of"):
        check_runtime("tensorrt", exported)


def ask_everything(c) -> dict:
    """Enroll two people and index three images, then embed, verify (pair, base64 JSON and
    reference set), identify and search; every answer's JSON by name."""
    files = [("files", (f"{i}.png", png(i))) for i in range(3)]
    for person, seeds in (("ada", (1, 2)), ("bob", (3,))):
        enrolled = [("files", (f"{s}.png", png(s))) for s in seeds]
        assert c.post("/v1/enroll", data={"name": person}, files=enrolled).status_code == 200
    assert c.post("/v1/index", files=files, data={"ids": "zero,one,two"}).status_code == 200
    refs = [("questioned", ("q.png", png(5)))]
    refs += [("references", (f"r{i}.png", png(i))) for i in (5, 6, 7)]
    requests = {
        "embed": dict(url="/v1/embed", files=files),
        "verify": dict(url="/v1/verify", files={"a": ("a.png", png(1)), "b": ("b.png", png(2))}),
        "verify_json": dict(url="/v1/verify", json={"a": b64(png(1)), "b": b64(png(4))}),
        "references": dict(url="/v1/verify", files=refs),
        "identify": dict(url="/v1/identify", files={"file": ("p.png", png(2))}, params={"k": 2}),
        "search": dict(url="/v1/search", files={"file": ("q.png", png(1))}),
    }
    answers = {}
    for name, request in requests.items():
        answer = c.post(**request)
        assert answer.status_code == 200, (name, answer.text)
        answers[name] = answer.json()
    return answers


def test_onnx_server_answers_as_the_torch_server(folders, tmp_path):
    torch_client, onnx_client = both(folders, tmp_path)
    with torch_client as eager, onnx_client as onnx:
        answers = {}
        for name, c in (("torch", eager), ("onnx", onnx)):
            wait_ready(c)
            c.headers["Authorization"] = f"Bearer {RW}"
            ready = c.get("/ready").json()
            assert ready["runtime"] == name and ready["kind"] == "image", ready
            answers[name] = ask_everything(c)
    want, got = answers["torch"], answers["onnx"]
    assert np.abs(np.array(got["embed"]["embeddings"]) -
                  np.array(want["embed"]["embeddings"])).max() <= TOLERANCE  # fmt: skip
    for key in ("verify", "verify_json", "references", "identify"):
        assert got[key]["score"] == pytest.approx(want[key]["score"], abs=TOLERANCE), key
        assert got[key]["threshold"] == want[key]["threshold"], key
    for key in ("verify", "verify_json", "references"):
        assert got[key]["decision"] == want[key]["decision"], key
    assert got["references"]["aggregate"] == "mean" and got["references"]["references"] == 3
    assert got["identify"]["identity"] == want["identify"]["identity"] == "ada"
    assert [c["name"] for c in got["identify"]["candidates"]] == ["ada", "bob"]
    assert [r["id"] for r in got["search"]["results"]] == [r["id"] for r in want["search"]
                                                           ["results"]]  # fmt: skip


def test_onnx_server_keeps_the_limits_and_the_auth(folders, tmp_path):
    _, exported = folders
    with serve(exported, max_image_pixels=30 * 30, max_items=2) as c:
        wait_ready(c)
        pair = {"a": ("a.png", png(1)), "b": ("b.png", png(2))}
        assert c.post("/v1/verify", files=pair).status_code == 401
        c.headers["X-API-Key"] = RO
        bomb = c.post("/v1/verify", files={"a": ("big.png", png(1, (64, 64))), "b": pair["b"]})
        assert bomb.status_code == 400 and "big.png" in bomb.json()["detail"]
        assert "larger than the limit of 900 pixels" in bomb.json()["detail"]
        junk = c.post("/v1/verify", files={"a": ("junk.png", b"junk"), "b": pair["b"]})
        assert junk.status_code == 400 and "junk.png: not a readable image" in junk.text
        many = c.post("/v1/embed", files=[("files", (f"{i}.png", png(i))) for i in range(3)])
        assert many.status_code == 413
        assert c.post("/v1/enroll", data={"name": "x"}, files={"files": pair["a"]}
                      ).status_code == 403  # fmt: skip
        text = c.post("/v1/similarity", json={"a": "x", "b": "y"})
        assert text.status_code == 400 and "text models" in text.json()["detail"]
        explain = c.post("/v1/explain", files=pair)
        assert explain.status_code == 501 and "this server runs onnx" in explain.json()["detail"]
        metrics = c.get("/metrics").text
        assert 'siamkit_requests_total{endpoint="/v1/verify",method="POST",status="400"} 2.0' in (
            metrics
        )


def test_text_model_similarity_through_onnx(tmp_path):
    from siamkit.encoders.text import Vocabulary

    torch.manual_seed(0)
    spec = {"name": "text_rnn", "params": {"embedding_size": 8, "hidden_size": 6}}
    texts = ["a man plays a guitar", "a woman slices an onion", "a man plays the flute"]
    net = SiameseNetwork(build_encoder(spec, vocabulary=Vocabulary.build(texts)),
                         HEADS.build(HEAD)).eval()  # fmt: skip
    model = siamkit.save_model(tmp_path / "text", net, spec, HEAD, threshold=0.9)
    exported = export_onnx(model, tmp_path / "text-onnx")
    eager = siamkit.load(model)
    with serve(exported, max_text_chars=50) as c:
        wait_ready(c)
        c.headers["X-API-Key"] = RO
        assert c.get("/ready").json()["kind"] == "text"
        body = c.post("/v1/embed", json={"texts": texts}).json()
        assert np.abs(np.array(body["embeddings"]) - eager.embed(texts).numpy()).max() <= TOLERANCE
        pair = c.post("/v1/similarity", json={"a": texts[0], "b": texts[2]}).json()
        expected = float(eager.score([texts[0]], [texts[2]])[0])
        assert pair["score"] == pytest.approx(expected, abs=TOLERANCE)
        assert pair["decision"] == ("same" if expected >= 0.9 else "different")
        long = c.post("/v1/similarity", json={"a": "word " * 20, "b": "x"})
        assert long.status_code == 413 and "limit of 50" in long.json()["detail"]


def test_serving_an_export_never_imports_torch(folders, tmp_path):
    """A fresh interpreter creates the app for the exported folder, starts it, enrolls,
    identifies and verifies, and has not imported torch."""
    _, exported = folders
    script = textwrap.dedent(f"""
        import importlib, io, json, sys, time
        import numpy as np
        from fastapi.testclient import TestClient
        from PIL import Image
        from siamkit.serving import ServeSettings, create_app

        def png(seed):
            pixels = np.random.default_rng(seed).integers(0, 255, (30, 32), dtype=np.uint8)
            out = io.BytesIO()
            Image.fromarray(pixels).save(out, format="PNG")
            return out.getvalue()

        settings = ServeSettings(no_auth=True)
        app = create_app({str(exported)!r}, {str(tmp_path / "g")!r}, settings, runtime="onnx")
        with TestClient(app) as c:
            while c.get("/ready").status_code != 200:
                assert "failed" not in c.get("/ready").text, c.get("/ready").text
                time.sleep(0.05)
            c.post("/v1/enroll", data={{"name": "ada"}}, files={{"files": ("a.png", png(1))}})
            who = c.post("/v1/identify", files={{"file": ("p.png", png(1))}}).json()
            pair = c.post("/v1/verify", files={{"a": ("a.png", png(1)), "b": ("b.png", png(2))}})
            ready = c.get("/ready").json()
        used = sorted(m for m in sys.modules if m.split(".")[0] == "siamkit")
        for name in {sorted(LISTED)!r}:  # the whole siamkit-runtime distribution
            importlib.import_module(name)
        print(json.dumps({{"torch": "torch" in sys.modules, "identity": who["identity"],
                          "verify": pair.json(), "ready": ready, "used": used}}))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["torch"] is False
    assert out["ready"]["runtime"] == "onnx"
    assert out["identity"] == "ada" and out["verify"]["decision"] in ("same", "different")
    missing = set(out["used"]) - LISTED  # siamkit-runtime would lack them
    assert not missing, f"add to packaging/runtime/modules.txt: {sorted(missing)}"


def test_runtime_distribution_keeps_siamkits_version():
    import tomllib

    main = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = tomllib.loads((ROOT / "packaging" / "runtime" / "pyproject.toml").read_text())
    assert runtime["project"]["version"] == main["version"]
    assert "torch" not in " ".join(runtime["project"]["dependencies"])
    assert all(name.startswith("siamkit") for name in LISTED) and "siamkit.model" not in LISTED


def test_serve_command_checks_the_folder_for_its_runtime(folders, capsys, monkeypatch):
    from siamkit.cli import main

    model, _ = folders
    monkeypatch.setenv("SIAMKIT_API_KEYS", RW)
    assert main(["serve", str(model), "--runtime", "onnx"]) == 1
    err = capsys.readouterr().err
    assert "not an exported model" in err and "siamkit export" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["serve", str(model), "--runtime", "tensorrt"]) == 1
    assert "runtime: expected one of auto, torch, onnx" in capsys.readouterr().err


def test_runtime_serve_command_refuses_bad_starts_in_one_line(folders, capsys, monkeypatch):
    from siamkit.runtime.__main__ import main

    model, exported = folders
    for name in ("SIAMKIT_API_KEYS", "SIAMKIT_READONLY_API_KEYS", "SIAMKIT_API_KEYS_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert main(["serve", str(model)]) == 1
    assert "not an exported model" in capsys.readouterr().err
    assert main(["serve", str(exported)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no API key is configured" in err


def test_torch_only_features_are_501_naming_the_runtime(folders):
    from fastapi import HTTPException

    from siamkit.serving.backend import load_backend
    from siamkit.serving.routes import torch_model

    model, exported = folders
    eager = SimpleNamespace(model=load_backend(model, "auto", 10_000))
    assert isinstance(torch_model(eager, "/v1/explain"), siamkit.Model)
    with pytest.raises(HTTPException) as refused:
        torch_model(SimpleNamespace(model=load_backend(exported, "auto", 10_000)), "/v1/explain")
    assert refused.value.status_code == 501
    assert "/v1/explain needs the torch runtime; this server runs onnx" in refused.value.detail
