"""Explanations: maps land where the evidence is, the deletion test tells a faithful map from a
reversed or random one, text is escaped, the CLI writes its files and fails in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from siamkit.cli import main
from siamkit.encoders.base import Encoder
from siamkit.explain import explain_images, pair_deletion
from siamkit.explain.faithfulness import auc_ratio, deletion_test, patch_grid
from siamkit.explain.images import image_baseline
from siamkit.explain.render import text_pair_html, tokens_html
from siamkit.heads import HEADS
from siamkit.siamese import SiameseNetwork


class LeftHalf(Encoder):
    """Sees only the left half of a (1, 12, 12) image: a fixed random projection of it."""

    def __init__(self) -> None:
        super().__init__(normalize=False)
        self.embedding_dim = 8
        self.project = torch.nn.Linear(12 * 6, 8, bias=False)
        torch.nn.init.normal_(self.project.weight, generator=torch.Generator().manual_seed(0))

    def features(self, x: Tensor) -> Tensor:
        return torch.tanh(self.project(x[..., :6].flatten(1)))


def left_half_network() -> SiameseNetwork:
    return SiameseNetwork(LeftHalf().eval(), HEADS.build({"name": "cosine"}))


@pytest.mark.parametrize(
    "method", ["occlusion", "integrated_gradients", "saliency", "gradient_shap"]
)
def test_attribution_mass_sits_where_the_encoder_looks(method):
    generator = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 1, 12, 12, generator=generator)
    b[..., :6] = a[..., :6] + 0.05 * torch.rand(1, 12, 6, generator=generator)  # alike on the left
    explanation = explain_images(left_half_network(), a, b, method, "mean", window=(3, 3), steps=8)
    for values in explanation.maps:
        mass = values.abs()
        assert mass.shape == (12, 12) and mass.sum() > 0
        # occlusion windows straddling the middle spill at most one window (3 px) to the right
        right = mass[:, 9:] if method == "occlusion" else mass[:, 6:]
        assert float(right.sum()) <= 1e-4 * float(mass.sum())  # float noise of batched scores
        assert float(mass[:, :6].sum() / mass.sum()) > 0.8
    assert -1.0 <= explanation.score <= 1.0


def weighted_sum(weights: Tensor):
    return lambda x: (x * weights).sum(dim=(1, 2, 3))


def test_deletion_test_prefers_a_faithful_map_to_random_and_reversed():
    weights = torch.linspace(0, 1, 16 * 16).reshape(16, 16) ** 2  # evidence sits at the bottom
    x, baseline = torch.ones(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)
    maps = {"faithful": weights, "reversed": -weights, "noise": torch.rand(16, 16)}
    tested = deletion_test(weighted_sum(weights), x, baseline, maps, (4, 4), steps=8)
    faithful, reversed_, noise = (auc_ratio([tested[k]]) for k in ("faithful", "reversed", "noise"))
    assert faithful < 0.7 < 1.3 < reversed_
    assert faithful < noise < reversed_
    # every curve starts at the whole image's score and ends at the baseline's
    for result in tested.values():
        assert result.attributed[0] == pytest.approx(float(weights.sum()))
        assert result.attributed[-1] == pytest.approx(0.0, abs=1e-5)


def test_pair_deletion_finds_the_half_the_encoder_looks_at():
    network = left_half_network()
    generator = torch.Generator().manual_seed(2)
    a = torch.rand(1, 12, 12, generator=generator)
    b = a + 0.2 * torch.rand(1, 12, 12, generator=generator)  # alike, not identical
    methods = ["occlusion", "integrated_gradients", "random"]
    tested = pair_deletion(network, a, b, methods, "mean", (2, 2), steps=6, random_orders=3,
                           options={"occlusion": {"window": (2, 2)}})  # fmt: skip
    assert [len(tested[m]) for m in methods] == [2, 2, 2]  # A with B fixed, B with A fixed
    # random orders waste half their deletions on the ignored right half (seeds 0-5 measured:
    # occlusion 0.35-0.68, integrated gradients 0.25-0.34, a noise map 0.46-1.42)
    assert auc_ratio(tested["occlusion"]) < 0.7
    assert auc_ratio(tested["integrated_gradients"]) < 0.5


def test_baselines_and_patch_grid():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.all(image_baseline(x, "black") == 0)
    assert torch.allclose(image_baseline(x, "mean"), torch.full_like(x, 7.5))
    blurred = image_baseline(x, "blur")
    assert blurred.shape == x.shape and blurred.std() < x.std()
    assert patch_grid((5, 4), (2, 2)).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3],
                                                   [2, 2, 3, 3], [4, 4, 5, 5]]  # fmt: skip


def test_token_html_escapes_every_token():
    shown = tokens_html(["<script>alert(1)</script>", "a&b", '"q"'], [0.5, -0.25, 0.0])
    assert "<script>" not in shown and "&lt;script&gt;" in shown and "a&amp;b" in shown
    assert shown.count("<span") == 3 and "rgba(220, 40, 40" in shown and "rgba(40, 90, 220" in shown
    page = text_pair_html([("<A>", ["x"], [1.0]), ("B", ["y"], [0.5])], 0.9, 0.5, "<ig>")
    assert "<A>" not in page and "&lt;A&gt;" in page and "&lt;ig&gt;" in page
    assert "same" in page


def test_text_rnn_token_attributions():
    from siamkit.encoders.text import RecurrentTextEncoder, Vocabulary

    torch.manual_seed(0)
    vocabulary = Vocabulary.build(["the cat sat on the mat", "a dog ran"])
    encoder = RecurrentTextEncoder(vocabulary, embedding_size=8, hidden_size=8)
    network = SiameseNetwork(encoder.eval(), HEADS.build({"name": "cosine"}))
    from siamkit.explain.text import attribute_text

    other = network.embed(["a dog ran"]).detach()
    result = attribute_text(network, "the <b>cat</b> sat", other, steps=8)
    assert result.tokens[:1] == ["the"] and len(result.values) == len(result.tokens)
    assert all(np.isfinite(result.values)) and any(v != 0 for v in result.values)
    assert encoder.token_ids(["the cat"])[0].shape == (1, 2)  # the patch is undone


def tiny_model(folder):
    from siamkit.encoders import build_encoder
    from siamkit.model import save_model

    spec = {"name": "conv4", "params": {"input_size": 16, "channels": 8, "embedding_dim": 8}}
    network = SiameseNetwork(build_encoder(spec), HEADS.build({"name": "cosine"}))
    preprocess = {"name": "image", "params": {"size": [16, 16], "mode": "L"}}
    return save_model(folder, network, spec, {"name": "cosine"}, preprocess, threshold=0.5)


def test_cli_explains_two_images_and_errors_in_one_line(tmp_path, capsys):
    model = tiny_model(tmp_path / "model")
    pixels = np.random.default_rng(0).integers(0, 255, (2, 20, 20), dtype=np.uint8)
    files = [tmp_path / "a.png", tmp_path / "b.png"]
    for path, image in zip(files, pixels, strict=True):
        Image.fromarray(image).save(path)
    out = tmp_path / "out"
    args = ["explain", str(model), str(files[0]), str(files[1]), "--out", str(out)]
    assert main([*args, "--method", "integrated_gradients", "--steps", "4"]) == 0
    record = json.loads((out / "explanation.json").read_text())
    assert record["method"] == "integrated_gradients" and record["decision"] in (
        "same",
        "different",
    )
    for name in ("explanation.png", "explanation_a.png", "explanation_b.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    for bad, expected in [
        ([*args, "--method", "lime"], "--method"),
        ([*args, "--baseline", "white"], "--baseline"),
        (["explain", str(model), str(files[0])], "two inputs"),
        (["explain", str(model), str(files[0]), str(tmp_path / "nope.png")], "nope.png"),
        (["explain", str(tmp_path / "no-model"), str(files[0]), str(files[1])], "no-model"),
        (["explain", str(model), str(files[0]), "--gallery", str(tmp_path / "g")], "gallery"),
    ]:
        assert main(bad) == 1
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_http_explain_returns_two_overlays_with_a_read_only_key(tmp_path):
    import base64

    from fastapi.testclient import TestClient

    from siamkit.serving import ServeSettings, create_app

    model = tiny_model(tmp_path / "model")
    settings = ServeSettings().with_keys(rw=["rw-key"], ro=["ro-key"])
    pictures = []
    for seed in (1, 2):
        buffer = __import__("io").BytesIO()
        pixels = np.random.default_rng(seed).integers(0, 255, (20, 18), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, format="PNG")
        pictures.append(buffer.getvalue())
    with TestClient(create_app(model, None, settings), raise_server_exceptions=False) as client:
        for _ in range(600):
            if client.get("/ready").status_code == 200:
                break
            __import__("time").sleep(0.05)
        read_only = {"Authorization": "Bearer ro-key"}
        files = {"a": ("a.png", pictures[0]), "b": ("b.png", pictures[1])}
        answer = client.post("/v1/explain", files=files, data={"method": "saliency"},
                             headers=read_only)  # fmt: skip
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["method"] == "saliency" and body["decision"] in ("same", "different")
        for side in ("a_png", "b_png"):
            assert base64.b64decode(body[side])[:4] == b"\x89PNG"
        verify = client.post("/v1/verify", files=files, headers=read_only).json()
        assert body["score"] == pytest.approx(verify["score"], abs=1e-4)
        encoded = {k: base64.b64encode(v).decode() for k, v in zip("ab", pictures, strict=True)}
        as_json = client.post("/v1/explain", json={**encoded, "method": "occlusion"},
                              headers=read_only)  # fmt: skip
        assert as_json.status_code == 200 and as_json.json()["score"] == pytest.approx(
            body["score"], abs=1e-4
        )
        bad = client.post("/v1/explain", files=files, data={"method": "lime"}, headers=read_only)
        assert bad.status_code == 400 and "method" in bad.json()["detail"]
        assert client.post("/v1/explain", files=files).status_code == 401
