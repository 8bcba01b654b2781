"""Paraphrase / duplicate detection: ``cosine >= threshold``, the threshold chosen on training
pairs (highest accuracy there), then accuracy and F1 of the paraphrase class on test pairs."""

from __future__ import annotations

from sklearn.metrics import accuracy_score, f1_score

from siamkit.data.text import TextPairs
from siamkit.errors import DataError
from siamkit.evaluation.verification import choose_threshold
from siamkit.text.similarity import TextModel, similarity


def check_binary(pairs: TextPairs, what: str) -> None:
    """Raise :class:`DataError` unless every label of ``pairs`` is 0 or 1 and both occur."""
    values = set(pairs.scores.unique().tolist())
    if values != {0.0, 1.0}:
        raise DataError(f"{what}: expected 0/1 labels with both classes present, got {values}")


def paraphrase_threshold(model: TextModel, train: TextPairs) -> float:
    """The cosine threshold with the highest accuracy on labelled ``train`` pairs."""
    check_binary(train, "threshold pairs")
    return choose_threshold(similarity(model, train.a, train.b), train.scores, "accuracy")


def paraphrase_report(model: TextModel, test: TextPairs, threshold: float) -> dict[str, float]:
    """Accuracy and F1 (paraphrase class) of ``cosine >= threshold`` on labelled ``test`` pairs."""
    check_binary(test, "test pairs")
    predicted = (similarity(model, test.a, test.b) >= threshold).int().numpy()
    gold = test.scores.int().numpy()
    return {
        "threshold": float(threshold),
        "accuracy": float(accuracy_score(gold, predicted)),
        "f1": float(f1_score(gold, predicted)),
    }
