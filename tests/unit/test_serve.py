"""siamkit serve: every endpoint through FastAPI's TestClient on a tiny untrained Conv-4."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

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


def tiny_model(folder, threshold: float = 0.5, extra: dict | None = None):
    """An untrained Conv-4 on 28x28 grey images, with a cosine head and a threshold."""
    torch.manual_seed(0)
    net = SiameseNetwork(build_encoder(ENCODER), HEADS.build(HEAD)).eval()
    return siamkit.save_model(
        folder, net, ENCODER, HEAD, PREPROCESS, threshold=threshold, extra=extra
    )


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


def test_embed_multipart_and_base64_json_agree_with_the_model(client):
    files = [("files", (f"{i}.png", png(i))) for i in range(3)]
    multi = client.post("/v1/embed", files=files)
    assert multi.status_code == 200, multi.text
    body = multi.json()
    assert body["dim"] == 16 and len(body["embeddings"]) == 3
    as_json = client.post("/v1/embed", json={"images": [b64(png(i)) for i in range(3)]}).json()
    assert np.allclose(as_json["embeddings"], body["embeddings"], atol=1e-6)
    model = siamkit.load(client.app.state.server.model_dir)
    direct = model.embed([Image.open(io.BytesIO(png(i))) for i in range(3)])
    assert np.allclose(body["embeddings"], direct.numpy(), atol=1e-5)


def test_verify_against_references_as_the_cli_does(client):
    from siamkit.evaluation.reference_set import score_against_references

    files = [("questioned", ("q.png", png(5)))]
    files += [("references", (f"r{i}.png", png(i))) for i in (5, 6, 7)]
    answer = client.post("/v1/verify", files=files)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["aggregate"] == "mean" and body["references"] == 3
    model = siamkit.load(client.app.state.server.model_dir)
    images = [Image.open(io.BytesIO(png(i))) for i in (5, 5, 6, 7)]
    expected = score_against_references(model, images[0], images[1:])
    assert body["score"] == pytest.approx(expected["mean"], abs=1e-5)
    best = client.post("/v1/verify", files=files, data={"aggregate": "max"}).json()
    assert best["aggregate"] == "max" and best["score"] == pytest.approx(1.0, abs=1e-5)
    assert best["decision"] == "same"
    wrong = client.post("/v1/verify", files=files, data={"aggregate": "median"})
    assert wrong.status_code == 400 and "aggregate" in wrong.json()["detail"]


def test_enroll_identify_people_delete(client):
    for name, seeds in (("ada", (1, 2)), ("bob", (3,))):
        files = [("files", (f"{name}{s}.png", png(s))) for s in seeds]
        answer = client.post("/v1/enroll", data={"name": name}, files=files)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"name": name, "templates": len(seeds)}
    people = client.get("/v1/people").json()["people"]
    assert people == [{"name": "ada", "templates": 2}, {"name": "bob", "templates": 1}]
    found = client.post("/v1/identify", files={"file": ("p.png", png(3))}, params={"k": 2})
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["identity"] == "bob" and body["score"] == pytest.approx(1.0, abs=1e-5)
    assert [c["name"] for c in body["candidates"]] == ["bob", "ada"]
    assert body["threshold"] == 0.5  # the model's cosine threshold
    again = client.post("/v1/enroll", data={"name": "bob"}, files={"files": ("x.png", png(9))})
    assert again.status_code == 409 and "already enrolled" in again.json()["detail"]
    assert client.delete("/v1/people/bob").json() == {"deleted": "bob"}
    gone = client.delete("/v1/people/bob")
    assert gone.status_code == 404 and "bob" in gone.json()["detail"]
    assert [p["name"] for p in client.get("/v1/people").json()["people"]] == ["ada"]


def sized_row(size: int, cosine: float) -> dict:
    """One row of a per-size open-set calibration table (siamkit.gallery.openset.size_table)."""
    return {"size": size, "cosine": cosine, "far": 0.01, "accepted": 1, "trials": 1000,
            "far_low": 0.0, "far_high": 0.005, "extrapolated": False,
            "supported": True}  # fmt: skip


def test_identify_uses_the_threshold_for_the_gallery_size(tmp_path):
    table = {"cosine": 0.9, "far": 0.01, "sizes": [sized_row(1, 0.9), sized_row(2, 1.01)]}
    model = tiny_model(tmp_path / "sized", extra={"gallery_threshold": table})
    with serve(model, tmp_path / "gallery") as client:
        wait_ready(client)
        client.headers["Authorization"] = f"Bearer {RW}"

        def enroll(name: str, seed: int) -> None:
            files = {"files": (f"{name}.png", png(seed))}
            assert client.post("/v1/enroll", data={"name": name}, files=files).status_code == 200

        def identify() -> dict:
            return client.post("/v1/identify", files={"file": ("p.png", png(3))}).json()

        enroll("bob", 3)
        alone = identify()
        assert (alone["identity"], alone["threshold"]) == ("bob", 0.9)
        enroll("ada", 4)  # two people: the size-2 threshold, which nothing reaches here
        crowd = identify()
        assert (crowd["identity"], crowd["threshold"]) == (None, 1.01)
        assert crowd["score"] == pytest.approx(1.0, abs=1e-5)
        assert client.delete("/v1/people/ada").status_code == 200
        assert identify()["threshold"] == 0.9


def test_index_and_search(client):
    files = [("files", (f"{i}.png", png(i))) for i in (10, 11, 12)]
    added = client.post("/v1/index", files=files, data={"ids": "ten, eleven,twelve"})
    assert added.json() == {"indexed": 3}
    by_name = client.post("/v1/index", files=[("files", ("thirteen.png", png(13)))])
    assert by_name.json() == {"indexed": 1}
    hits = client.post("/v1/search", files={"file": ("q.png", png(11))}, params={"k": 2}).json()
    assert [h["id"] for h in hits["results"]][:1] == ["eleven"] and len(hits["results"]) == 2
    assert hits["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    top = client.post("/v1/search", files={"file": ("q.png", png(13))}, params={"k": 1}).json()
    assert top["results"][0]["id"] == "thirteen.png"
    mismatch = client.post("/v1/index", files=files, data={"ids": "only,two"})
    assert mismatch.status_code == 400 and "one per file" in mismatch.json()["detail"]
    nobody = client.post("/v1/identify", files={"file": ("q.png", png(11))})
    assert nobody.status_code == 409 and "no identity is enrolled" in nobody.json()["detail"]


def test_gallery_survives_a_restart(model_dir, tmp_path):
    gallery = tmp_path / "kept.gallery"
    headers = {"Authorization": f"Bearer {RW}"}
    with serve(model_dir, gallery) as first:
        wait_ready(first)
        files = [("files", ("a.png", png(1))), ("files", ("b.png", png(2)))]
        assert first.post("/v1/enroll", data={"name": "ada"}, files=files,
                          headers=headers).status_code == 200  # fmt: skip
    with serve(model_dir, gallery) as second:
        wait_ready(second)
        people = second.get("/v1/people", headers=headers).json()["people"]
        assert people == [{"name": "ada", "templates": 2}]
        found = second.post("/v1/identify", files={"file": ("p.png", png(2))}, headers=headers)
        assert found.json()["identity"] == "ada"


def test_no_gallery_is_a_404_with_a_hint(model_dir):
    with serve(model_dir) as c:
        wait_ready(c)
        answer = c.get("/v1/people", headers={"X-API-Key": RO})
        assert answer.status_code == 404 and "--gallery" in answer.json()["detail"]
        assert c.get("/ready").json()["gallery"] is None


# -- authentication ------------------------------------------------------------------------------


def test_auth_missing_wrong_read_only_and_public_paths(model_dir, tmp_path):
    pair = {"a": ("a.png", png(1)), "b": ("b.png", png(2))}
    with serve(model_dir, tmp_path / "g") as c:
        wait_ready(c)
        missing = c.post("/v1/verify", files=pair)
        assert missing.status_code == 401 and "missing API key" in missing.json()["detail"]
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = c.post("/v1/verify", files=pair, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json() == {"detail": "invalid API key"}
        assert "WWW-Authenticate" in wrong.headers
        assert c.post("/v1/verify", files=pair, headers={"X-API-Key": RO}).status_code == 200
        ro = {"Authorization": f"Bearer {RO}"}
        enroll = c.post("/v1/enroll", data={"name": "x"}, files={"files": pair["a"]}, headers=ro)
        assert enroll.status_code == 403 and "read-only" in enroll.json()["detail"]
        assert c.delete("/v1/people/x", headers=ro).status_code == 403
        assert c.post("/v1/index", files={"files": pair["a"]}, headers=ro).status_code == 403
        assert c.get("/v1/people", headers=ro).status_code == 200
        for path in ("/health", "/ready", "/metrics", "/openapi.json", "/docs", "/"):
            assert c.get(path).status_code == 200, path


def test_auth_on_without_keys_is_a_clear_error(model_dir):
    from siamkit.errors import ConfigError

    with pytest.raises(ConfigError, match="no API key is configured"):
        create_app(model_dir, None, ServeSettings())
    app = create_app(model_dir, None, ServeSettings(no_auth=True))
    with TestClient(app) as c:
        wait_ready(c)
        pair = {"a": ("a.png", png(1)), "b": ("b.png", png(2))}
        assert c.post("/v1/verify", files=pair).status_code == 200


def test_settings_from_env_and_key_file(tmp_path):
    from siamkit.errors import ConfigError
    from siamkit.serving.auth import role_of
    from siamkit.serving.settings import digest

    keys = tmp_path / "keys"
    keys.write_text("# team keys\nrw:alpha\nro:beta\n\ngamma\n")
    env = {"SIAMKIT_API_KEYS": "one, two", "SIAMKIT_READONLY_API_KEYS": "three",
           "SIAMKIT_API_KEYS_FILE": str(keys), "SIAMKIT_MAX_ITEMS": "5",
           "SIAMKIT_BATCHING": "0"}  # fmt: skip
    settings = ServeSettings.from_env(env, max_batch=8)
    assert settings.max_items == 5 and not settings.batching and settings.max_batch == 8
    roles = {k: role_of(settings, k) for k in ("one", "two", "three", "alpha", "beta", "gamma")}
    assert roles == {"one": "rw", "two": "rw", "three": "ro", "alpha": "rw", "beta": "ro",
                     "gamma": "rw"}  # fmt: skip
    assert role_of(settings, "onE") is None and role_of(settings, "") is None
    assert "alpha" not in settings.to_env() and digest("alpha") in settings.to_env()
    assert ServeSettings.from_json(settings.to_env()) == settings
    with pytest.raises(ConfigError, match="SIAMKIT|max_items"):
        ServeSettings.from_env({"SIAMKIT_MAX_ITEMS": "lots"})
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="no keys"):
        ServeSettings().with_key_file(empty)


# -- bad input: a 4xx with one line, never a 500 -------------------------------------------------


def huge_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid PNG header announcing width x height grey pixels, with almost no data: what a
    decompression bomb looks like before it is decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1))  # one row; the rest never arrives
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("files", "status", "words"),
    [
        ({"a": ("a.png", b"not an image"), "b": ("b.png", png(1))}, 400, "not a readable image"),
        ({"a": ("a.png", png(1)[:60]), "b": ("b.png", png(1))}, 400, "a.png: not a readable"),
        ({"a": ("bomb.png", huge_png()), "b": ("b.png", png(1))}, 400, "larger than the limit"),
        ({"a": ("a.png", png(1))}, 400, "'b': expected at least 1 file"),
        ({"a": ("a.png", png(1)), "b": ("b.png", b"")}, 400, "b.png: not a readable"),
    ],
)
def test_bad_images_are_400_with_one_line(client, files, status, words):
    answer = client.post("/v1/verify", files=files)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert words in detail and "\n" not in detail


def test_bad_requests_are_4xx_with_one_line(client):
    checks = [
        (client.post("/v1/verify", content=b"a=1", headers={"Content-Type": "text/plain"}),
         415, "expected Content-Type"),
        (client.post("/v1/verify", content=b"{nope", headers={"Content-Type": "application/json"}),
         400, "not valid JSON"),
        (client.post("/v1/verify", json={"a": "%%%", "b": b64(png(1))}), 400,
         "a: not valid base64"),
        (client.post("/v1/verify", json={"a": b64(png(1))}), 400, "JSON body, b: Field required"),
        (client.post("/v1/verify", json=[1, 2]), 400, "JSON body"),
        (client.post("/v1/embed", json={"texts": ["hello"]}), 400, "image model"),
        (client.post("/v1/embed", json={}), 400, "exactly one of"),
        (client.post("/v1/similarity", json={"a": "x", "b": "y"}), 400, "text models"),
        (client.post("/v1/enroll", json={"name": "x"}), 415, "multipart/form-data"),
        (client.post("/v1/enroll", files={"files": ("a.png", png(1))}), 400, "'name'"),
        (client.post("/v1/enroll", data={"name": "x"}), 415, "got application/x-www-form"),
        (client.post("/v1/enroll", files={"name": (None, "x"), "files": (None, "text")}), 400,
         "file upload"),
        (client.post("/v1/identify", files={"file": ("a.png", png(1))}, params={"k": 0}), 422,
         "k"),
        (client.post("/v1/identify", files={"file": ("a.png", png(1))}, params={"k": 10**6}),
         422, "at most 100"),
        (client.post("/v1/identify", files={"file": ("a.png", png(1))}), 409, "empty"),
        (client.post("/v1/embed", files=[("files", (f"{i}.png", png(i))) for i in range(33)]),
         413, "limit of 32"),
        (client.post("/v1/embed", content=b"x" * (20 * 2**20 + 1),
                     headers={"Content-Type": "application/json"}), 413, "larger than the limit"),
        (client.get("/v1/nothing"), 404, "Not Found"),
    ]  # fmt: skip
    for answer, status, words in checks:
        assert answer.status_code == status, (answer.request.url, answer.text)
        detail = answer.json()["detail"]
        assert isinstance(detail, str) and words in detail and "\n" not in detail, detail


def test_chunked_body_over_the_limit_is_413(model_dir):
    with serve(model_dir, max_upload_bytes=1000) as c:
        wait_ready(c)

        def chunks():
            for _ in range(10):
                yield b'{"images": ["' + b"A" * 200 + b'"]}'

        answer = c.post("/v1/embed", content=chunks(), headers={
            "Content-Type": "application/json", "X-API-Key": RW})  # fmt: skip
        assert answer.status_code == 413 and "1000 bytes" in answer.json()["detail"]


def test_decompression_bomb_through_the_cli_is_one_line(model_dir, tmp_path, capsys):
    from siamkit.cli import main

    bomb, fine = tmp_path / "huge.png", tmp_path / "six_a.png"
    bomb.write_bytes(huge_png())
    fine.write_bytes(png(1))
    assert main(["verify", str(model_dir), str(bomb), str(fine)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "huge.png" in err and "400000000 pixels" in err and "Traceback" not in err
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(png(1)[:60])
    assert main(["verify", str(model_dir), str(truncated), str(fine)]) == 1
    assert "cut.png: not a readable image" in capsys.readouterr().err


def test_metrics_count_requests_batches_and_gallery(client):
    client.post("/v1/verify", files={"a": ("a.png", png(1)), "b": ("b.png", png(2))})
    client.post("/v1/verify", files={"a": ("a.png", b"junk"), "b": ("b.png", png(2))})
    client.post("/v1/enroll", data={"name": "ada"}, files={"files": ("a.png", png(1))})
    text = client.get("/metrics").text
    assert 'siamkit_requests_total{endpoint="/v1/verify",method="POST",status="200"} 1.0' in text
    assert 'siamkit_requests_total{endpoint="/v1/verify",method="POST",status="400"} 1.0' in text
    assert 'siamkit_request_seconds_count{endpoint="/v1/verify"} 2.0' in text
    assert "siamkit_batch_size_count" in text and "siamkit_queue_depth 0.0" in text
    assert "siamkit_gallery_size 1.0" in text


def test_text_model_embed_similarity_and_verify(tmp_path):
    from siamkit.encoders.text import Vocabulary

    torch.manual_seed(0)
    spec = {"name": "text_rnn", "params": {"embedding_size": 8, "hidden_size": 6}}
    vocab = Vocabulary.build(["a man plays a guitar", "a woman slices an onion"])
    net = SiameseNetwork(build_encoder(spec, vocabulary=vocab), HEADS.build(HEAD)).eval()
    folder = siamkit.save_model(tmp_path / "text", net, spec, HEAD, threshold=0.9)
    with serve(folder, max_text_chars=50) as c:
        wait_ready(c)
        c.headers["X-API-Key"] = RO
        assert c.get("/ready").json()["kind"] == "text"
        texts = ["a man plays a guitar", "a woman slices an onion"]
        body = c.post("/v1/embed", json={"texts": texts}).json()
        assert body["dim"] == 6 and np.allclose(
            body["embeddings"], siamkit.load(folder).embed(texts).numpy(), atol=1e-5
        )
        same = c.post("/v1/similarity", json={"a": texts[0], "b": texts[0]}).json()
        assert same["score"] == pytest.approx(1.0, abs=1e-5) and same["decision"] == "same"
        pair = c.post("/v1/verify", json={"a": texts[0], "b": texts[1]}).json()
        expected = float(siamkit.load(folder).score([texts[0]], [texts[1]])[0])
        assert pair["score"] == pytest.approx(expected, abs=1e-5) and pair["threshold"] == 0.9
        long = c.post("/v1/similarity", json={"a": "word " * 20, "b": "x"})
        assert long.status_code == 413 and "limit of 50" in long.json()["detail"]
        images = c.post("/v1/verify", files={"a": ("a.png", png(1)), "b": ("b.png", png(2))})
        assert images.status_code == 400 and "text model" in images.json()["detail"]
        assert c.post("/v1/embed", json={"texts": []}).status_code == 400


def test_milvus_lite_gallery_through_the_api(model_dir, tmp_path):
    pytest.importorskip("milvus_lite")
    location = tmp_path / "faces.db"
    headers = {"Authorization": f"Bearer {RW}"}
    with serve(model_dir, location) as c:
        wait_ready(c)
        c.headers.update(headers)
        files = [("files", ("a.png", png(1))), ("files", ("b.png", png(2)))]
        assert c.post("/v1/enroll", data={"name": "ada"}, files=files).status_code == 200
        assert c.post("/v1/enroll", data={"name": "bob"}, files={"files": ("c.png", png(3))}
                      ).json() == {"name": "bob", "templates": 1}  # fmt: skip
        assert c.post("/v1/identify", files={"file": ("p.png", png(2))}).json()["identity"] == "ada"
        assert c.delete("/v1/people/bob").json() == {"deleted": "bob"}
    with serve(model_dir, location) as c:
        wait_ready(c)
        assert c.get("/v1/people", headers=headers).json() == {
            "people": [{"name": "ada", "templates": 2}]
        }


def test_two_stores_on_one_folder_follow_the_generation(tmp_path):
    from siamkit.gallery import Gallery

    location = tmp_path / "shared.gallery"
    rng = np.random.default_rng(0)
    first, second = Gallery.open(location), Gallery.open(location)
    faces = rng.standard_normal((3, 8))
    first.enroll("ada", faces[:2])
    assert second.identify(faces[:1])[0].identity == "ada"  # search reloads the moved index
    second.enroll("bob", faces[2:])  # a write starts from the other process's state
    assert len(second) == 3 and len(first.store.find("identity", "bob")) == 1
    assert not second.store.refresh() and first.store.refresh()
    assert first.identities() == {"ada": 2, "bob": 1} and len(first) == 3
    first.remove("ada")
    assert [a.identity for a in second.identify(faces)] == ["bob"] * 3
    first.close(), second.close()


def test_real_faces_score_as_the_cli_does(model_dir, tmp_path, capsys):
    from conftest import dataset_or_skip
    from siamkit.cli import main

    root = dataset_or_skip("att_faces")
    a, b = root / "s1" / "1.pgm", root / "s2" / "1.pgm"
    with serve(model_dir) as c:
        wait_ready(c)
        answer = c.post("/v1/verify", headers={"X-API-Key": RO}, files={
            "a": (a.name, a.read_bytes()), "b": (b.name, b.read_bytes())}).json()  # fmt: skip
    expected = float(siamkit.load(model_dir).score([str(a)], [str(b)])[0])
    assert answer["score"] == pytest.approx(expected, abs=1e-5)
    assert main(["verify", str(model_dir), str(a), str(b)]) == 0
    assert f"{expected:.4f}" in capsys.readouterr().out


def test_inference_preparation_keeps_the_embeddings():
    from siamkit.serving.model import fold_batch_norms, for_inference

    torch.manual_seed(0)
    encoder = {"name": "conv4", "params": {"input_size": 28, "channels": 8, "blocks": 3,
                                           "flip_average": True, "normalize": True}}  # fmt: skip
    net = SiameseNetwork(build_encoder(encoder), HEADS.build(HEAD)).eval()
    for module in net.modules():  # trained-looking statistics, not the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1), module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5), module.bias.data.uniform_(-0.5, 0.5)
    x = torch.rand(5, 1, 28, 28)
    with torch.inference_mode():
        before = net.embed(x)
        prepared = for_inference(net)
        after = prepared.embed(x.contiguous(memory_format=torch.channels_last))
    assert fold_batch_norms(prepared) == 0  # all three were folded already
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in prepared.modules())
    assert torch.allclose(before, after, atol=1e-5)


def test_texts_embedded_in_length_sorted_chunks_keep_their_order(tmp_path, monkeypatch):
    from siamkit.encoders.text import Vocabulary
    from siamkit.serving import model as served

    torch.manual_seed(0)
    spec = {"name": "text_rnn", "params": {"embedding_size": 8, "hidden_size": 6}}
    texts = ["a man plays a guitar " * (i % 4 + 1) + f"w{i}" for i in range(10)]
    vocab = Vocabulary.build(texts)
    net = SiameseNetwork(build_encoder(spec, vocabulary=vocab), HEADS.build(HEAD)).eval()
    folder = siamkit.save_model(tmp_path / "text", net, spec, HEAD)
    monkeypatch.setattr(served, "TEXT_CHUNK", 3)
    model = served.ServedModel.load(folder, 1000)
    expected = siamkit.load(folder).embed(texts)
    assert torch.allclose(model.run(texts), expected, atol=1e-5)


def test_serve_command_refuses_bad_starts_in_one_line(model_dir, tmp_path, capsys, monkeypatch):
    from siamkit.cli import main

    monkeypatch.delenv("SIAMKIT_API_KEYS", raising=False)
    monkeypatch.delenv("SIAMKIT_READONLY_API_KEYS", raising=False)
    monkeypatch.delenv("SIAMKIT_API_KEYS_FILE", raising=False)
    assert main(["serve", str(tmp_path / "nowhere")]) == 1
    assert "nowhere: not a model folder" in capsys.readouterr().err
    assert main(["serve", str(model_dir)]) == 1
    err = capsys.readouterr().err
    assert "no API key is configured" in err and len(err.strip().splitlines()) == 1
    keys = tmp_path / "keys"
    keys.write_text("ro:\n")
    assert main(["serve", str(model_dir), "--api-keys-file", str(keys)]) == 1
    assert "line 1: empty key" in capsys.readouterr().err
    monkeypatch.setenv("SIAMKIT_MAX_ITEMS", "0")
    assert main(["serve", str(model_dir), "--no-auth"]) == 1
    assert "max_items" in capsys.readouterr().err
    monkeypatch.delenv("SIAMKIT_MAX_ITEMS")
    speech = audio_model_folder(tmp_path / "speech")
    assert main(["serve", str(speech), "--no-auth"]) == 1
    err = capsys.readouterr().err.strip()
    assert "not speech models (.wav inputs)" in err and len(err.splitlines()) == 1


def audio_model_folder(folder: Path) -> Path:
    """A random-weight keyword model folder (audio preprocessing), never trained."""
    spec = {"name": "audio_cnn", "params": {"channels": [4], "embedding_dim": 8}}
    network = siamkit.SiameseNetwork(build_encoder(spec), HEADS.build({"name": "cosine"}))
    preprocess = {"name": "audio", "params": {"frames": 20}}
    return siamkit.save_model(folder, network, spec, {"name": "cosine"}, preprocess)
