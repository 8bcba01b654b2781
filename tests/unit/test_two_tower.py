"""The two-tower model: contracts, distinct-key batches, the symmetric InfoNCE loss, a saved
folder's round trip and input routing, and a tiny synthetic two-modality task that it learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import siamkit
from siamkit.encoders import build_encoder
from siamkit.encoders.text import Vocabulary
from siamkit.errors import CheckpointError, ConfigError
from siamkit.evaluation.cross_modal import cross_modal_recall
from siamkit.heads import CosineHead
from siamkit.losses import InBatchRankingLoss, build_loss
from siamkit.model import save_model
from siamkit.training import TrainConfig, fit
from siamkit.two_tower import MatchedPairBatches, MatchedPairs, TwoTowerNetwork, class_name_pairs

WORDS = ["red", "green", "blue", "black", "white"]
TEXT = {
    "name": "text_rnn",
    "params": {"embedding_size": 8, "hidden_size": 16, "cell": "gru", "normalize": True},
}
VECTORS = {
    "name": "mlp",
    "params": {"in_features": 6, "hidden": [32], "embedding_dim": 16, "normalize": True},
}


def towers(seed: int = 0) -> TwoTowerNetwork:
    torch.manual_seed(seed)
    text = build_encoder(TEXT, vocabulary=Vocabulary.build(WORDS))
    return TwoTowerNetwork(text, build_encoder(VECTORS), CosineHead())


def synthetic(n_per_word: int, seed: int) -> MatchedPairs:
    """Each word's vectors: a fixed random direction plus noise (the second modality)."""
    gen = torch.Generator().manual_seed(99)
    centres = torch.randn(len(WORDS), 6, generator=gen) * 2
    keys = torch.arange(len(WORDS)).repeat(n_per_word)
    noise = torch.randn(len(keys), 6, generator=torch.Generator().manual_seed(seed))
    return class_name_pairs(centres[keys] + 0.5 * noise, keys, WORDS)


def test_towers_must_share_the_embedding_size() -> None:
    small = build_encoder({"name": "mlp", "params": {"in_features": 6, "embedding_dim": 4}})
    with pytest.raises(ConfigError, match="one space"):
        TwoTowerNetwork(build_encoder(VECTORS), small, CosineHead())


def test_forward_embeds_each_side_with_its_own_tower() -> None:
    network = towers()
    ea, eb = network(["red", "blue"], torch.randn(2, 6))
    assert ea.shape == eb.shape == (2, 16)
    assert torch.allclose(network.embed(["red"], "a"), ea[:1])
    assert network.similarity(["red"], torch.randn(1, 6)).shape == (1,)


def test_batches_hold_distinct_keys_and_cover_every_pair() -> None:
    pairs = synthetic(4, 0)
    batches = MatchedPairBatches(pairs, batch_size=3, seed=1)
    seen = []
    for idx in batches.batch_indices():
        assert len(set(pairs.keys[idx].tolist())) == len(idx)  # no false negatives
        seen += idx.tolist()
    assert sorted(seen) == list(range(len(pairs)))
    a, b, y = next(iter(batches))
    assert isinstance(a[0], str) and b.shape == (3, 6) and y.tolist() == [1, 1, 1]


def test_symmetric_infonce_averages_both_directions_and_pulls_pairs_together() -> None:
    torch.manual_seed(0)
    e1, e2 = torch.randn(6, 8, requires_grad=True), torch.randn(6, 8)
    loss = InBatchRankingLoss(scale=5.0, symmetric=True)
    value = loss(e1, e2, torch.ones(6))
    logits = 5.0 * F.normalize(e1, dim=1) @ F.normalize(e2, dim=1).T
    target = torch.arange(6)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    assert torch.allclose(value, expected)
    value.backward()
    with torch.no_grad():
        stepped = e1 - 0.5 * e1.grad
        before = F.cosine_similarity(e1, e2).mean()
        after = F.cosine_similarity(stepped, e2).mean()
    assert after > before  # a step down the gradient brings matched pairs closer
    aligned = InBatchRankingLoss(scale=50.0, symmetric=True)(
        torch.eye(4), torch.eye(4), torch.ones(4)
    )
    assert aligned < 1e-6
    assert build_loss({"name": "ranking", "params": {"symmetric": True}}, towers()).symmetric


def test_tiny_two_modality_task_is_learned(tmp_path: Path) -> None:
    network = towers()
    test = synthetic(6, seed=7)
    names = torch.arange(len(WORDS))

    def recall(net: TwoTowerNetwork) -> float:
        net.eval()
        with torch.no_grad():
            r = cross_modal_recall(
                net.head, net.embed(WORDS, "a"), names, net.embed(test.b, "b"), test.keys
            )
        return min(r["a_to_b_recall_at_1"], r["b_to_a_recall_at_1"])

    before = recall(network)
    batches = MatchedPairBatches(synthetic(20, seed=1), batch_size=5, seed=0)
    loss = InBatchRankingLoss(scale=10.0, symmetric=True)
    config = TrainConfig(epochs=8, lr=0.01, threads=1)
    fit(network, loss, batches, config, tmp_path, show_progress=False)
    assert recall(network) == 1.0 > before


def test_model_folder_round_trip_and_input_routing(tmp_path: Path) -> None:
    network = towers(seed=3).eval()
    folder = save_model(
        tmp_path / "m",
        network,
        TEXT,
        {"name": "cosine"},
        None,
        0.5,
        encoder_b=VECTORS,
        preprocess_b={"name": "vector", "params": {"dim": 6}},
    )
    model = siamkit.load(folder)
    assert model.two_tower and model.config.format_version == 2
    assert (folder / "vocab.json").is_file()
    vectors = np.random.default_rng(0).normal(size=(2, 6)).astype(np.float32)
    with torch.no_grad():
        want_a = network.embed(["blue", "red"], "a")
        want_b = network.embed(torch.from_numpy(vectors), "b")
    mixed = model.embed(["blue", vectors[0], "red", vectors[1]])  # each input to its tower
    assert torch.allclose(
        mixed, torch.stack([want_a[0], want_b[0], want_a[1], want_b[1]]), atol=1e-6
    )
    assert model.tower_of("blue") == "a" and model.tower_of(vectors[0]) == "b"
    score = model.score(["blue"], [vectors[0]])
    assert torch.allclose(score, F.cosine_similarity(want_a[:1], want_b[:1]), atol=1e-6)
    from siamkit.serving.backend import load_backend

    with pytest.raises(ConfigError, match="not two-tower models"):
        load_backend(folder, "torch")  # it would serve tower a's texts alone


def test_single_encoder_folders_still_load_as_version_1(tmp_path: Path) -> None:
    net = siamkit.SiameseNetwork(build_encoder(VECTORS), CosineHead())
    folder = save_model(tmp_path / "one", net, VECTORS, {"name": "cosine"})
    model = siamkit.load(folder)
    assert model.config.format_version == 1 and not model.two_tower
    with pytest.raises(CheckpointError, match="encoder_b"):
        save_model(tmp_path / "bad", towers(), TEXT, {"name": "cosine"})


def test_cross_modal_recall_counts_both_directions() -> None:
    a = torch.eye(3)  # three keys' a-side embeddings
    b = torch.tensor([[1.0, 0, 0], [0, 1, 0.3], [0, 0.4, 1], [0, 1, 0.2]])
    keys = torch.tensor([0, 1, 2, 2])  # the last item sits nearer key 1 than its own key 2
    r = cross_modal_recall(CosineHead(), a, torch.arange(3), b, keys)
    assert r["b_to_a_recall_at_1"] == 0.75
    assert r["a_to_b_recall_at_1"] == pytest.approx(2 / 3)  # key 1's best item is key 2's
    assert r["a_to_b_r_precision"] == pytest.approx((1 + 0 + 0.5) / 3)


def test_index_reads_the_files_of_the_models_preprocessing() -> None:
    from siamkit.data.audio import AudioPreprocessor
    from siamkit.gallery.images import input_suffixes
    from siamkit.model import Model, ModelConfig

    config = ModelConfig(
        encoder=TEXT,
        head={"name": "cosine"},
        encoder_b=VECTORS,
        preprocess_b=AudioPreprocessor().spec,
    )
    model = Model(towers(), config)
    assert input_suffixes(model) == {".wav"}
    assert model.tower_of("x.wav") == "b" and model.tower_of("seven") == "a"
