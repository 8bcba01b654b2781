"""Balanced positive/negative pairs and triplets from class labels, seeded and reproducible."""

from __future__ import annotations

import torch
from torch import Tensor

from siamkit.errors import DataError


def _usable_classes(labels: Tensor, need_pairs: bool) -> list[Tensor]:
    """The index groups of classes with at least 2 items; checks pairs can be formed at all."""
    order = torch.argsort(labels, stable=True)
    _, counts = torch.unique_consecutive(labels[order], return_counts=True)
    groups = list(torch.split(order, counts.tolist()))
    if len(groups) < 2:
        raise DataError(f"pairs need at least 2 classes, got {len(groups)}")
    multi = [g for g in groups if len(g) >= 2]
    if need_pairs and not multi:
        raise DataError(
            "positive pairs need a class with at least 2 examples; every class has only one"
        )
    return multi


def _positive_pairs(classes: list[Tensor], n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    # Classes drawn in proportion to their number of possible pairs, then two distinct members.
    sizes = torch.tensor([len(c) for c in classes], dtype=torch.float64)
    pick = torch.multinomial(sizes * (sizes - 1), n, replacement=True, generator=gen)
    a, b = torch.empty(n, dtype=torch.long), torch.empty(n, dtype=torch.long)
    for k, members in enumerate(classes):
        rows = (pick == k).nonzero().squeeze(1)
        if len(rows) == 0:
            continue
        m = len(members)
        i = torch.randint(m, (len(rows),), generator=gen)
        j = (i + torch.randint(1, m, (len(rows),), generator=gen)) % m
        a[rows], b[rows] = members[i], members[j]
    return a, b


def _dedupe(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Keep the first occurrence of each unordered pair."""
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    if len(a) == 0:
        return a, b
    _, inverse = torch.unique(lo * (int(hi.max()) + 1) + hi, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(a), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(a)), reduce="amin")
    keep = torch.sort(first).values
    return a[keep], b[keep]


def _draw_other_class(labels: Tensor, anchors: Tensor, gen: torch.Generator) -> Tensor:
    """For each anchor index, a random index of a different class."""
    other = torch.randint(len(labels), (len(anchors),), generator=gen)
    clash = labels[other] == labels[anchors]
    while clash.any():  # redraw the partners that share the anchor's class
        other[clash] = torch.randint(len(labels), (int(clash.sum()),), generator=gen)
        clash = labels[other] == labels[anchors]
    return other


def make_pairs(
    labels: Tensor,
    n_pairs: int,
    seed: int = 0,
    positive_fraction: float = 0.5,
    allow_repeats: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw ``n_pairs`` pairs of item indices with labels (1 = same class, 0 = different).

    About ``positive_fraction`` of the pairs are positive; classes with a single example only
    appear in negative pairs. Unless ``allow_repeats``, no unordered pair occurs twice (so fewer
    pairs than asked may come back when the dataset has fewer distinct pairs). The order is
    shuffled; the same seed gives the same pairs.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    if n_pairs <= 0:
        raise DataError(f"n_pairs must be positive, got {n_pairs}")
    gen = torch.Generator().manual_seed(seed)
    classes = _usable_classes(labels, need_pairs=positive_fraction > 0)
    n_pos = round(n_pairs * positive_fraction)
    draws = 1 if allow_repeats else 3  # over-draw, then drop repeats, so balance survives
    pa, pb = _positive_pairs(classes, n_pos * draws, gen)
    na = torch.randint(len(labels), ((n_pairs - n_pos) * draws,), generator=gen)
    nb = _draw_other_class(labels, na, gen)
    if not allow_repeats:
        pa, pb = _dedupe(pa, pb)
        na, nb = _dedupe(na, nb)
    pa, pb, na, nb = pa[:n_pos], pb[:n_pos], na[: n_pairs - n_pos], nb[: n_pairs - n_pos]
    a, b = torch.cat([pa, na]), torch.cat([pb, nb])
    y = torch.cat([torch.ones(len(pa)), torch.zeros(len(na))])
    perm = torch.randperm(len(a), generator=gen)
    return a[perm], b[perm], y[perm]


def make_triplets(labels: Tensor, n: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Draw ``n`` (anchor, positive, negative) index triplets: positive of the anchor's class,
    negative of another class."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    classes = _usable_classes(labels, need_pairs=True)
    anchor, positive = _positive_pairs(classes, n, gen)
    return anchor, positive, _draw_other_class(labels, anchor, gen)
