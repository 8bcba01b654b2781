"""Text classification by comparison: label a text by its nearest labelled reference texts.

Two rules: a ``knn`` majority vote of the ``k`` most similar references (ties go to the class
met first, i.e. the nearest), or the nearest class ``prototype`` (mean reference embedding).
Few-shot evaluation samples N-way K-shot episodes and classifies each episode's queries by its
K labelled references per class (core :func:`~siamkit.evaluation.fewshot.evaluate_episodes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from siamkit.data.labelled import LabelledData
from siamkit.errors import DataError
from siamkit.evaluation.fewshot import FewShotResult, classify, evaluate_episodes
from siamkit.heads import CosineHead
from siamkit.siamese import SiameseNetwork
from siamkit.text.similarity import TextModel, embed_texts, text_encoder

Method = Literal["knn", "prototype"]


def knn_vote(queries: Tensor, references: Tensor, labels: Tensor, k: int) -> Tensor:
    """Majority label among the ``k`` most similar references (unit-vector embeddings); a tie
    goes to the tied class whose best reference is nearest."""
    k = min(k, len(references))
    order = (queries @ references.T).topk(k, dim=1).indices  # (Q, k), nearest first
    votes = labels[order]
    classes = torch.unique(labels)
    hits = votes[..., None] == classes  # (Q, k, C)
    counts = hits.sum(1).float()
    first = torch.where(hits.any(1), hits.float().argmax(1), k).float()  # rank of first vote
    return classes[(counts - first / (k + 1)).argmax(1)]


def classify_embeddings(
    queries: Tensor, references: Tensor, labels: Tensor, method: Method = "prototype", k: int = 5
) -> Tensor:
    """Labels of ``queries`` from labelled ``references`` (unit-vector embeddings)."""
    if len(references) != len(labels) or len(references) == 0:
        raise DataError(f"{len(references)} reference embeddings but {len(labels)} labels")
    if method == "knn":
        return knn_vote(queries, references, labels, k)
    if method != "prototype":
        raise DataError(f"classification method must be 'knn' or 'prototype', got {method!r}")
    classes, local = torch.unique(labels, return_inverse=True)
    return classes[classify(CosineHead(), queries, references, local, len(classes), "prototype")]


def classify_texts(
    model: TextModel,
    texts: Sequence[str],
    reference_texts: Sequence[str],
    reference_labels: Sequence[str],
    method: Method = "prototype",
    k: int = 5,
) -> list[str]:
    """Label each text by its nearest labelled references (k-NN vote or class prototypes)."""
    if len(reference_texts) != len(reference_labels):
        raise DataError(
            f"{len(reference_texts)} reference texts but {len(reference_labels)} labels"
        )
    names = sorted(set(reference_labels))
    ids = torch.tensor([names.index(label) for label in reference_labels])
    queries, refs = embed_texts(model, texts), embed_texts(model, reference_texts)
    return [names[i] for i in classify_embeddings(queries, refs, ids, method, k).tolist()]


def fewshot_text_accuracy(
    model: TextModel,
    data: LabelledData,
    n_way: int,
    k_shot: int,
    episodes: int = 500,
    n_query: int = 5,
    seed: int = 0,
) -> FewShotResult:
    """Accuracy (mean and 95% CI) of N-way K-shot classification by class prototypes over
    seeded episodes of ``data`` (a list of texts with class labels)."""
    network = SiameseNetwork(text_encoder(model), CosineHead())
    embeddings = embed_texts(model, list(data.items))
    return evaluate_episodes(
        network, data, n_way, k_shot, episodes, seed, n_query=n_query, aggregate="prototype",
        embeddings=embeddings,
    )  # fmt: skip
