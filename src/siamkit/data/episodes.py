"""N-way K-shot episodes: support and query indices drawn from a labelled set, seeded."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from siamkit.errors import DataError


@dataclass
class Episode:
    """Indices into a dataset; ``*_labels`` are episode-local class ids 0..n_way-1."""

    support: Tensor
    support_labels: Tensor
    query: Tensor
    query_labels: Tensor


def _class_pools(labels: Tensor, groups: Tensor | None, need: int) -> list[list[Tensor]]:
    """Per group (or one pool of all), the index sets of classes with at least ``need`` items."""
    pools: dict[int, list[Tensor]] = {}
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().squeeze(1)
        if len(idx) >= need:
            g = 0 if groups is None else int(groups[idx[0]])
            pools.setdefault(g, []).append(idx)
    return list(pools.values())


def sample_episodes(
    labels: Tensor,
    n_way: int,
    k_shot: int,
    n_query: int = 1,
    episodes: int = 1000,
    seed: int = 0,
    groups: Tensor | None = None,
) -> list[Episode]:
    """Draw ``episodes`` episodes of ``n_way`` classes, ``k_shot`` support and ``n_query`` query
    items per class. With ``groups`` (e.g. alphabets) every episode's classes come from a single
    group (within-alphabet episodes); groups with fewer than ``n_way`` classes are skipped."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    pools = [p for p in _class_pools(labels, groups, k_shot + n_query) if len(p) >= n_way]
    if not pools:
        where = "any one group" if groups is not None else "the dataset"
        raise DataError(
            f"{n_way}-way {k_shot}-shot episodes with {n_query} queries need {n_way} classes "
            f"with at least {k_shot + n_query} items in {where}"
        )
    gen = torch.Generator().manual_seed(seed)
    weights = torch.tensor([float(len(p)) for p in pools])
    out = []
    for _ in range(episodes):
        pool = pools[int(torch.multinomial(weights, 1, generator=gen))]
        chosen = torch.randperm(len(pool), generator=gen)[:n_way].tolist()
        support, query = [], []
        for members in (pool[c] for c in chosen):
            pick = members[torch.randperm(len(members), generator=gen)[: k_shot + n_query]]
            support.append(pick[:k_shot])
            query.append(pick[k_shot:])
        ways = torch.arange(n_way)
        out.append(
            Episode(
                torch.cat(support),
                ways.repeat_interleave(k_shot),
                torch.cat(query),
                ways.repeat_interleave(n_query),
            )
        )
    return out
