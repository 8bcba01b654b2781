"""Verification metrics and few-shot accuracy against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from siamkit.data.labelled import LabelledData
from siamkit.errors import DataError
from siamkit.evaluation.fewshot import evaluate_episodes, mean_ci95
from siamkit.evaluation.plots import roc_plot, score_histogram
from siamkit.evaluation.verification import (
    choose_threshold,
    equal_error_rate,
    rates_at,
    tar_at_far,
    verification_report,
)
from siamkit.heads import HEADS
from siamkit.siamese import SiameseNetwork


def test_perfect_and_overlapping_scores():
    labels = [1, 1, 1, 0, 0, 0]
    assert equal_error_rate([0.9, 0.8, 0.7, 0.3, 0.2, 0.1], labels)[0] == 0
    # One impostor above one genuine: FAR = FRR = 1/3 at the crossing.
    eer, _ = equal_error_rate([0.9, 0.8, 0.2, 0.7, 0.1, 0.05], labels)
    assert eer == pytest.approx(1 / 3)
    assert rates_at([0.9, 0.8, 0.2, 0.7, 0.1, 0.05], labels, 0.5) == {
        "accuracy": pytest.approx(4 / 6), "far": pytest.approx(1 / 3), "frr": pytest.approx(1 / 3)
    }  # fmt: skip


def test_threshold_choice_and_tar_at_far():
    scores = np.array([0.9, 0.8, 0.6, 0.4, 0.3, 0.1])
    labels = np.array([1, 1, 1, 0, 0, 0])
    t = choose_threshold(scores, labels, "accuracy")
    assert rates_at(scores, labels, t)["accuracy"] == 1.0
    assert tar_at_far(scores, labels, 0.0) == 1.0
    report = verification_report(scores, labels, threshold=0.85)
    assert report["auc"] == 1.0 and report["frr"] == pytest.approx(2 / 3)


def test_bad_scores_are_rejected():
    with pytest.raises(DataError, match="NaN"):
        equal_error_rate([0.1, float("nan")], [0, 1])
    with pytest.raises(DataError, match="both genuine"):
        equal_error_rate([0.1, 0.2], [1, 1])
    with pytest.raises(DataError, match="3 scores but 2"):
        equal_error_rate([0.1, 0.2, 0.3], [0, 1])


def test_confidence_interval_by_hand():
    mean, ci = mean_ci95(torch.tensor([1.0, 0.0, 1.0, 1.0]))
    assert mean == 0.75
    assert ci == pytest.approx(1.96 * 0.5 / 2)


class Identity(torch.nn.Module):
    embedding_dim = 2

    def forward(self, x):
        return x


def test_fewshot_on_separable_and_random_embeddings():
    labels = torch.arange(5).repeat_interleave(4)
    centers = torch.tensor([[0.0, 0.0], [10, 0], [0, 10], [10, 10], [20, 20]])
    items = centers[labels] + 0.1 * torch.randn(20, 2)
    network = SiameseNetwork(Identity(), HEADS.build({"name": "euclidean"}))
    result = evaluate_episodes(network, LabelledData(items, labels), 5, 1, episodes=50)
    assert result.mean == 1.0 and result.episodes == 50
    noise = LabelledData(torch.randn(20, 2), labels)
    chance = evaluate_episodes(network, noise, 5, 1, episodes=400, seed=1)
    assert 0.1 < chance.mean < 0.35  # around 1/5


def test_plots_are_written(tmp_path):
    scores, labels = [0.9, 0.8, 0.3, 0.2], [1, 1, 0, 0]
    roc = roc_plot(scores, labels, tmp_path / "roc.png")
    hist = score_histogram(scores, labels, tmp_path / "hist.png", threshold=0.5)
    for path in (roc, hist):
        assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
