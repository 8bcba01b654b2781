"""N-way K-shot classification by comparison with a support set: mean accuracy +- 95% CI."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from siamkit.data.episodes import Episode, sample_episodes
from siamkit.data.labelled import LabelledData
from siamkit.evaluation.embedding import embed_all
from siamkit.heads import Head
from siamkit.siamese import SiameseNetwork

Aggregate = Literal["mean", "prototype"]


@dataclass
class FewShotResult:
    """Accuracy over episodes: mean, half-width of the 95% confidence interval, count."""

    mean: float
    ci95: float
    episodes: int

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f} +- {100 * self.ci95:.2f}% ({self.episodes} episodes)"


def mean_ci95(values: Tensor) -> tuple[float, float]:
    """Mean and 1.96 x standard error of ``values``."""
    v = values.double()
    sem = v.std(unbiased=True) / math.sqrt(len(v)) if len(v) > 1 else torch.tensor(0.0)
    return float(v.mean()), float(1.96 * sem)


def classify(
    head: Head,
    query: Tensor,
    support: Tensor,
    support_labels: Tensor,
    n_way: int,
    aggregate: Aggregate = "mean",
) -> Tensor:
    """Predicted class of each query: argmax over classes of the head's similarity to that
    class's support items, averaged (``"mean"``), or to their mean embedding (``"prototype"``)."""
    if aggregate == "prototype":
        protos = torch.stack([support[support_labels == c].mean(0) for c in range(n_way)])
        return head.pairwise(query, protos).argmax(1)
    scores = head.pairwise(query, support)  # (Q, S)
    per_class = torch.zeros(len(query), n_way).index_add_(1, support_labels, scores)
    counts = torch.bincount(support_labels, minlength=n_way).clamp(min=1)
    return (per_class / counts).argmax(1)


@torch.no_grad()
def episode_accuracy(
    head: Head,
    embeddings: Tensor,
    episodes: list[Episode],
    n_way: int,
    aggregate: Aggregate,
    enrolled: Tensor | None = None,
) -> Tensor:
    """Accuracy of each episode, from precomputed embeddings of the whole set; ``enrolled``: other
    embeddings of the same items for the support sets (e.g. enrollment-time augmentation)."""
    enrolled = embeddings if enrolled is None else enrolled
    acc = []
    for ep in episodes:
        pred = classify(
            head, embeddings[ep.query], enrolled[ep.support], ep.support_labels, n_way, aggregate
        )
        acc.append((pred == ep.query_labels).float().mean())
    return torch.stack(acc)


def evaluate_episodes(
    network: SiameseNetwork,
    data: LabelledData,
    n_way: int,
    k_shot: int,
    episodes: int = 1000,
    seed: int = 0,
    within_groups: bool = False,
    n_query: int = 1,
    aggregate: Aggregate = "mean",
    embeddings: Tensor | None = None,
) -> FewShotResult:
    """Accuracy of N-way K-shot classification over seeded episodes of ``data``'s classes.

    ``within_groups`` draws each episode's classes from one group (e.g. one alphabet). The set is
    embedded once (or ``embeddings`` are reused) and the head compares queries with supports.
    """
    eps = sample_episodes(
        data.labels, n_way, k_shot, n_query, episodes, seed,
        groups=data.groups if within_groups else None,
    )  # fmt: skip
    emb = embed_all(network, data.items) if embeddings is None else embeddings
    head = network.head.to("cpu")
    acc = episode_accuracy(head, emb, eps, n_way, aggregate)
    mean, ci = mean_ci95(acc)
    return FewShotResult(mean, ci, len(eps))


def raw_pixel_episodes(
    data: LabelledData, n_way: int, k_shot: int, episodes: int = 1000, seed: int = 0
) -> FewShotResult:
    """Baseline: nearest neighbour in pixel space (negative Euclidean distance) on the same
    seeded episodes as :func:`evaluate_episodes`."""
    from siamkit.heads import EuclideanHead

    eps = sample_episodes(data.labels, n_way, k_shot, 1, episodes, seed)
    pixels = embed_all_pixels(data)
    mean, ci = mean_ci95(episode_accuracy(EuclideanHead(), pixels, eps, n_way, "mean"))
    return FewShotResult(mean, ci, len(eps))


def embed_all_pixels(data: LabelledData) -> Tensor:
    """Items flattened to float vectors in [0, 1] (the pixel-space 'embedding')."""
    x = data.items
    if not isinstance(x, Tensor):
        raise TypeError("the pixel baseline needs tensor items")
    x = x.float() / 255 if not x.is_floating_point() else x
    return x.flatten(1)
