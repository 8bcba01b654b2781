"""Model folders: save/load round trip, scoring raw inputs, and clear errors on bad folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import siamkit
from siamkit.encoders import build_encoder
from siamkit.errors import CheckpointError, DataError
from siamkit.heads import HEADS
from siamkit.siamese import SiameseNetwork

ENCODER = {"name": "conv4", "params": {"input_size": 16, "channels": 8, "embedding_dim": 6}}
HEAD = {"name": "learned", "params": {"embedding_dim": 6}}
PREPROCESS = {"name": "image", "params": {"size": [16, 16], "mode": "L"}}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    net = SiameseNetwork(build_encoder(ENCODER), HEADS.build(HEAD)).eval()
    folder = siamkit.save_model(tmp_path / "model", net, ENCODER, HEAD, PREPROCESS, threshold=0.4)
    return net, folder


def write_images(tmp_path, n=3):
    paths = []
    rng = np.random.default_rng(0)
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_round_trip_gives_identical_scores(saved, tmp_path):
    net, folder = saved
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors"}
    model = siamkit.load(folder)
    assert model.threshold == 0.4
    a, b = torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(net.similarity(a, b), model.network.similarity(a, b))


def test_score_and_decide_on_image_files(saved, tmp_path):
    _, folder = saved
    model = siamkit.load(folder)
    paths = write_images(tmp_path)
    scores = model.score(paths[:2], paths[1:])
    assert scores.shape == (2,) and torch.all((scores > 0) & (scores < 1))
    assert torch.equal(model.decide(scores), scores >= 0.4)
    same = model.score(paths[:1], paths[:1])
    assert model.embed(paths).shape == (3, 6)
    assert same.item() == pytest.approx(model.network.head(*[model.embed(paths[:1])] * 2).item())


def test_bad_inputs_to_a_model(saved, tmp_path):
    model = siamkit.load(saved[1])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png"):
        model.embed([broken])
    with pytest.raises(DataError, match="no such file"):
        model.embed([tmp_path / "missing.png"])
    with pytest.raises(DataError, match="no inputs"):
        model.embed([])
    with pytest.raises(DataError, match="2 first inputs but 1"):
        model.score(write_images(tmp_path, 2), write_images(tmp_path, 1))


def test_corrupt_or_mismatched_folders_fail_clearly(saved, tmp_path):
    _, folder = saved
    with pytest.raises(CheckpointError, match="not a model folder"):
        siamkit.load(tmp_path / "nowhere")
    config = json.loads((folder / "config.json").read_text())
    config["encoder"]["params"]["channels"] = 16  # weights no longer fit
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not match"):
        siamkit.load(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json"):
        siamkit.load(folder)


def test_truncated_weights_fail_clearly(saved):
    _, folder = saved
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        siamkit.load(folder)


def test_loading_never_unpickles(saved, monkeypatch):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    siamkit.load(saved[1])


def test_eval_command_on_a_class_folder(saved, tmp_path, capsys):
    from siamkit.cli import main

    rng = np.random.default_rng(1)
    for c in range(3):
        (tmp_path / "tree" / f"person{c}").mkdir(parents=True)
        base = rng.integers(0, 255, (16, 16))
        for i in range(4):
            noisy = np.clip(base + rng.normal(0, 20, (16, 16)), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(tmp_path / "tree" / f"person{c}" / f"{i}.png")
    assert main(["eval", str(saved[1]), str(tmp_path / "tree")]) == 0
    out = capsys.readouterr().out
    assert "eer" in out and "3-way 1-shot" in out
    assert main(["eval", str(saved[1]), str(tmp_path / "nothing")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
