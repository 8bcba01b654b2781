"""Heads compare two embedding batches and return one similarity score per pair.

Every head returns scores where **higher means more similar**; each documents its range. Distances
are turned into scores here and nowhere else, so "distance > t means genuine" cannot be written
through the API: decisions are always ``score >= threshold``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siamkit.errors import DataError
from siamkit.registry import Registry

HEADS: Registry[nn.Module] = Registry("head")


def check_pair(a: Tensor, b: Tensor) -> None:
    """Raise :class:`DataError` unless ``a`` and ``b`` are two (B, D) batches of the same shape."""
    if a.ndim != 2 or b.ndim != 2 or a.shape != b.shape:
        raise DataError(
            f"a head compares two (batch, dim) embedding batches of one shape; "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


class Head(nn.Module):
    """Base class: ``forward(a, b)`` returns similarity scores of shape (B,)."""

    score_range: tuple[float, float] = (float("-inf"), float("inf"))

    def forward(self, a: Tensor, b: Tensor) -> Tensor:  # noqa: D102
        check_pair(a, b)
        return self.score(a, b)

    def score(self, a: Tensor, b: Tensor) -> Tensor:
        raise NotImplementedError

    def pairwise(self, queries: Tensor, references: Tensor) -> Tensor:
        """Scores of every query against every reference, shape (Q, R)."""
        q, r = queries.shape[0], references.shape[0]
        a = queries.unsqueeze(1).expand(q, r, -1).reshape(q * r, -1)
        b = references.unsqueeze(0).expand(q, r, -1).reshape(q * r, -1)
        return self(a, b).view(q, r)


@HEADS.register("euclidean")
class EuclideanHead(Head):
    """Score = minus the Euclidean distance: range (-inf, 0], 0 for identical embeddings."""

    score_range = (float("-inf"), 0.0)

    def score(self, a: Tensor, b: Tensor) -> Tensor:
        return -F.pairwise_distance(a, b, eps=0.0)

    def pairwise(self, queries: Tensor, references: Tensor) -> Tensor:
        return -torch.cdist(queries, references)


@HEADS.register("cosine")
class CosineHead(Head):
    """Score = cosine similarity: range [-1, 1]."""

    score_range = (-1.0, 1.0)

    def score(self, a: Tensor, b: Tensor) -> Tensor:
        return F.cosine_similarity(a, b, dim=1)

    def pairwise(self, queries: Tensor, references: Tensor) -> Tensor:
        return F.normalize(queries, dim=1) @ F.normalize(references, dim=1).T


@HEADS.register("learned")
class LearnedHead(Head):
    """The seeds' head: ``sigmoid(w . |h1 - h2| + b)``, a match probability in (0, 1).

    ``logits`` gives the pre-sigmoid value for numerically stable binary cross-entropy.
    """

    score_range = (0.0, 1.0)

    def __init__(self, embedding_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(embedding_dim, 1)

    def logits(self, a: Tensor, b: Tensor) -> Tensor:
        """Pre-sigmoid scores, shape (B,)."""
        check_pair(a, b)
        return self.linear((a - b).abs()).squeeze(1)

    def score(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(a, b))
