"""Paraphrase / duplicate detection: ``cosine >= threshold``, the threshold chosen on training
pairs (highest accuracy, or highest F1 of the paraphrase class, there), then accuracy and F1 of
the paraphrase class on test pairs."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_curve

from siamkit.data.text import TextPairs
from siamkit.errors import DataError
from siamkit.evaluation.verification import choose_threshold
from siamkit.text.similarity import TextModel, similarity


def check_binary(pairs: TextPairs, what: str) -> None:
    """Raise :class:`DataError` unless every label of ``pairs`` is 0 or 1 and both occur."""
    values = set(pairs.scores.unique().tolist())
    if values != {0.0, 1.0}:
        raise DataError(f"{what}: expected 0/1 labels with both classes present, got {values}")


ThresholdRule = Literal["accuracy", "f1", "eer"]


def f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold on ``scores`` (``score >= t`` is positive) with the highest F1 of class 1."""
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    denominator = np.maximum(precision + recall, 1e-12)
    f1 = 2 * precision * recall / denominator
    return float(thresholds[int(np.argmax(f1[:-1]))])


def choose_pair_threshold(scores: Any, labels: Any, rule: ThresholdRule = "accuracy") -> float:
    """The cosine threshold with the highest accuracy (``rule="accuracy"``), the highest F1 of
    the "same" class (``rule="f1"``) or at the equal error rate (``rule="eer"``) on these
    labelled pairs."""
    if rule == "f1":
        return f1_threshold(np.asarray(scores), np.asarray(labels))
    if rule in ("accuracy", "eer"):
        return choose_threshold(scores, labels, rule)
    raise DataError(f"threshold rule: expected 'eer', 'accuracy' or 'f1', got {rule!r}")


def paraphrase_threshold(
    model: TextModel, train: TextPairs, rule: ThresholdRule = "accuracy"
) -> float:
    """The cosine threshold with the highest accuracy (or F1, ``rule="f1"``) on labelled
    ``train`` pairs."""
    check_binary(train, "threshold pairs")
    return choose_pair_threshold(similarity(model, train.a, train.b), train.scores, rule)


def paraphrase_report(model: TextModel, test: TextPairs, threshold: float) -> dict[str, float]:
    """Accuracy and F1 (paraphrase class) of ``cosine >= threshold`` on labelled ``test`` pairs."""
    check_binary(test, "test pairs")
    return threshold_report(similarity(model, test.a, test.b), test.scores, threshold)


def threshold_report(scores: Any, labels: Any, threshold: float) -> dict[str, float]:
    """Accuracy and F1 (class 1) of ``scores >= threshold`` against 0/1 ``labels``."""
    predicted = (np.asarray(scores) >= threshold).astype(int)
    gold = np.asarray(labels).astype(int)
    return {
        "threshold": float(threshold),
        "accuracy": float(accuracy_score(gold, predicted)),
        "f1": float(f1_score(gold, predicted)),
    }
