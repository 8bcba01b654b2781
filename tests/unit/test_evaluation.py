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


def test_select_unseen_keeps_unseen_names_and_says_why_when_none_is_left(tmp_path):
    from siamkit.evaluation.seen_classes import Nouns, SeenClasses, select_unseen

    seen = SeenClasses(frozenset({"a", "b", "c"}), frozenset({"d", "e"}), "a test", frozenset("xy"))
    writers = Nouns("writer", "writers")
    chosen = select_unseen(seen, ["x", "a", "new", "d"], tmp_path, writers)
    assert chosen.evaluated == ["new", "x"] and chosen.left_out == {
        "a": "training",
        "d": "validation",
    }
    assert chosen.notes[1] == (
        "left out 2 writers the model was trained or validated on (1 in training: a; "
        "1 in validation: d)"
    )
    assert "evaluated 2 writers" in chosen.notes[0] and "its test" not in chosen.notes[0]
    assert (
        "its test writers (x, y;"
        in select_unseen(seen, ["y", "x", "a"], tmp_path, writers).notes[0]
    )
    with pytest.raises(
        DataError,
        match=r"all 5 writers in it were seen by the model \(3 in "
        r"training: a, b, c; 2 in validation: d, e\); siamkit eval needs at least 2",
    ):
        select_unseen(seen, list("abcde"), tmp_path, writers)
    with pytest.raises(DataError, match="the only writer in it was seen"):
        select_unseen(seen, ["a"], tmp_path, writers)
    with pytest.raises(DataError, match="only x is unseen; the other 1 writer was seen"):
        select_unseen(seen, ["x", "e"], tmp_path, writers)
    with pytest.raises(DataError, match="it holds no classes"):
        select_unseen(seen, [], tmp_path)
    unknown = select_unseen(None, ["a", "b"], tmp_path)
    assert unknown.evaluated == ["a", "b"] and "records no training classes" in unknown.notes[0]


def test_select_unseen_lists_at_most_20_evaluated_names(tmp_path):
    from siamkit.evaluation.seen_classes import SeenClasses, select_unseen

    names = [f"c{i:02d}" for i in range(25)]
    chosen = select_unseen(SeenClasses(frozenset(), frozenset(), "a test"), names, tmp_path)
    assert "c19 and 5 more;" in chosen.notes[0] and "c20" not in chosen.notes[0]


def test_episodes_can_enroll_with_other_embeddings_of_the_same_items():
    from siamkit.data.episodes import sample_episodes
    from siamkit.evaluation.fewshot import episode_accuracy
    from siamkit.heads import CosineHead

    labels = torch.arange(4).repeat_interleave(6)
    clean = torch.nn.functional.one_hot(labels, 4).float() + 0.01 * torch.randn(24, 4)
    episodes = sample_episodes(labels, 4, 1, 5, 20, seed=0)
    head = CosineHead()
    same = episode_accuracy(head, clean, episodes, 4, "mean")
    assert torch.equal(same, episode_accuracy(head, clean, episodes, 4, "mean", clean))
    assert same.mean() == 1.0
    # enrolling with another class's embeddings (labels rolled by one) gets every query wrong
    rolled = clean[torch.roll(torch.arange(24), 6)]
    assert episode_accuracy(head, clean, episodes, 4, "mean", rolled).mean() == 0.0
