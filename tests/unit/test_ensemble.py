"""The ensemble of a siamese network and a classifier: splits, parts, choices, save and load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from siamkit.data.labelled import LabelledData
from siamkit.encoders import build_encoder
from siamkit.ensemble import (
    LinearClassifier,
    SimilarityPart,
    evaluate_ensemble,
    fit_ensemble,
    fit_temperature,
    known_class_splits,
    load_ensemble,
    log_loss,
    logistic_part,
    siamese_part,
    softmax,
)
from siamkit.errors import CheckpointError, DataError
from siamkit.heads import HEADS
from siamkit.model import save_model
from siamkit.recipe_schema import parse_recipe
from siamkit.siamese import SiameseNetwork

ENCODER = {"name": "mlp", "params": {"in_features": 8, "hidden": [16], "embedding_dim": 4}}


def network(seed: int = 0) -> SiameseNetwork:
    torch.manual_seed(seed)
    return SiameseNetwork(build_encoder(ENCODER), HEADS.build({"name": "cosine"}))


def fitted(splits, net, classifier="logistic", features="pixels", weight_steps=20):
    """An ensemble of ``net``'s prototypes and a logistic or a (random) softmax-classifier part."""
    if classifier == "logistic":
        part, _ = logistic_part(net, splits, features)
    else:
        part = SimilarityPart(
            network(1), torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
        )
    return fit_ensemble(siamese_part(net, splits.train), part, splits.val, splits.train.classes,
                        weight_steps)  # fmt: skip


def test_known_class_splits_cut_every_class_and_renumber(blobs):
    odd = blobs.subset(torch.nonzero(blobs.labels % 2 == 1).squeeze(1))  # classes 1, 3, 5
    splits = known_class_splits(odd, train_per_class=3, val_per_class=2, seed=1)
    for part, count in ((splits.train, 3), (splits.val, 2), (splits.test, 5)):
        assert torch.bincount(part.labels).tolist() == [count] * 3
        assert part.classes == ["c1", "c3", "c5"]
    items = [tuple(x.tolist()) for p in (splits.train, splits.val, splits.test) for x in p.items]
    assert len(set(items)) == len(odd)  # disjoint and complete
    again = known_class_splits(odd, 3, 2, seed=1)
    assert torch.equal(again.test.items, splits.test.items)
    with pytest.raises(DataError, match="'c1' has 10 items"):
        known_class_splits(odd, train_per_class=8, val_per_class=2)


@pytest.mark.parametrize("classes", [2, 4])
def test_linear_classifier_matches_scikit_learn(classes):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 5))
    y = np.arange(80) % classes
    x[:, 0] += y
    ours = LinearClassifier.fit(x, y, c=0.5)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    reference = LogisticRegression(C=0.5, max_iter=2000, random_state=0).fit((x - mean) / scale, y)
    expected = reference.predict_proba((x - mean) / scale)
    np.testing.assert_allclose(ours.probabilities(x), expected, atol=1e-6)


def test_temperature_is_recovered_from_simulated_labels():
    rng = np.random.default_rng(0)
    scores = rng.uniform(-1, 1, size=(4000, 5))
    probabilities = softmax(scores * 6.0)
    labels = np.array([rng.choice(5, p=p) for p in probabilities])
    assert fit_temperature(scores, labels) == pytest.approx(6.0, rel=0.15)


def test_the_chosen_weight_is_no_worse_on_validation_than_either_part(blobs):
    splits = known_class_splits(blobs, train_per_class=3, val_per_class=3, seed=0)
    ensemble, record = fitted(splits, network(), weight_steps=10)
    losses = record["val_log_loss_by_weight"]
    assert min(losses.values()) == losses[f"{ensemble.weight:.3f}"]
    assert losses[f"{ensemble.weight:.3f}"] <= min(losses["0.000"], losses["1.000"])
    report = evaluate_ensemble(ensemble, splits.test)
    assert report["items"] == 24 and report["classes"] == 6
    parts = ensemble.parts(splits.test.items)
    for p in parts.values():
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert report["ensemble_log_loss"] == pytest.approx(
        log_loss(parts["ensemble"], splits.test.labels.numpy())
    )
    assert report["classifier_accuracy"] > 0.9  # separable blobs: pixels suffice


@pytest.mark.parametrize("classifier", ["logistic", "cnn"])
def test_saved_ensemble_loads_to_the_same_probabilities(blobs, tmp_path, classifier):
    splits = known_class_splits(blobs, 3, 3, seed=0)
    net = network()
    ensemble, _ = fitted(splits, net, classifier, features="embedding")
    save_model(tmp_path / "model", net, ENCODER, {"name": "cosine"})
    if classifier == "cnn":
        save_model(
            tmp_path / "classifier", ensemble.classifier.network, ENCODER, {"name": "cosine"}
        )
        assert ensemble.classifier.temperature != 1.0  # calibrated on the validation items
    ensemble.save(tmp_path)
    loaded = load_ensemble(tmp_path)
    before = ensemble.parts(splits.test.items)["ensemble"]
    np.testing.assert_allclose(loaded.probabilities(splits.test.items), before, atol=1e-5)
    ranked = loaded.classify(splits.test.items[:2], top=2)
    assert [len(r) for r in ranked] == [2, 2] and ranked[0][0][0] in blobs.classes
    with pytest.raises(CheckpointError, match="ensemble.json: missing"):
        load_ensemble(tmp_path / "model")


def test_an_ensemble_block_needs_a_class_dataset():
    base = {"encoder": ENCODER, "ensemble": {"train_per_class": 2}}
    assert parse_recipe({**base, "data": {"name": "digits"}}).ensemble.train_per_class == 2
    with pytest.raises(Exception, match="ensemble: applies to class datasets"):
        parse_recipe({**base, "data": {"name": "stsb"}})


def test_a_labelled_set_of_strings_is_refused(blobs):
    words = LabelledData([f"w{i}" for i in range(60)], blobs.labels, blobs.classes)
    with pytest.raises(DataError, match="tensor items"):
        fitted(known_class_splits(words, 3, 3), network())
