"""Balanced positive/negative pairs and triplets from class labels, seeded and reproducible."""

from __future__ import annotations

from typing import Any

import numpy as np
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


def within_group_share(labels: Any, groups: Any) -> float:
    """The share of negative pairs whose two items are in one group (an alphabet) when pairs are
    drawn as :func:`make_pairs` draws them: a uniform anchor and a uniform
    partner among the items of other classes. Needs only the labels and groups, no scores."""
    lab, grp = np.asarray(labels).ravel(), np.asarray(groups).ravel()
    if lab.shape != grp.shape or len(np.unique(lab)) < 2:
        raise DataError(
            f"within_group_share: expected one group per label and at least 2 classes, got "
            f"{len(lab)} labels, {len(grp)} groups, {len(np.unique(lab))} classes"
        )
    _, cls, cls_count = np.unique(lab, return_inverse=True, return_counts=True)
    _, grp_i, grp_count = np.unique(grp, return_inverse=True, return_counts=True)
    _, both, both_count = np.unique(
        cls * (grp_i.max() + 1) + grp_i, return_inverse=True, return_counts=True
    )
    same_group_other_class = grp_count[grp_i] - both_count[both]
    return float(np.mean(same_group_other_class / (len(lab) - cls_count[cls])))


def regroup_negatives(
    labels: Any, groups: Any, a: Any, b: Any, y: Any, share: float, seed: int = 0
) -> np.ndarray:
    """New partners ``b`` for the negative pairs (``y == 0``): each is, with probability
    ``share``, an item of another class in the anchor's group, else an item of another group
    (any other class when the asked kind does not exist). Positive pairs keep their partner.
    Fitting a map on pairs with the within-group share of the pairs it will score keeps their
    difficulty the same (see docs/calibration.md, "The pair mix")."""
    if not 0.0 <= share <= 1.0:
        raise DataError(f"regroup_negatives: share must be within [0, 1], got {share}")
    lab, grp = np.asarray(labels).ravel(), np.asarray(groups).ravel()
    a, y, b = np.asarray(a).ravel(), np.asarray(y).ravel(), np.array(b).ravel()
    rng = np.random.default_rng(seed)
    pools: dict[tuple[Any, Any, bool], np.ndarray] = {}  # (class, group, within) -> partners
    for i in np.flatnonzero(y == 0):
        anchor, within = a[i], bool(rng.random() < share)
        key = (lab[anchor], grp[anchor], within)
        if key not in pools:
            other = lab != lab[anchor]
            pool = np.flatnonzero(other & ((grp == grp[anchor]) == within))
            pools[key] = pool if len(pool) else np.flatnonzero(other)
        b[i] = rng.choice(pools[key])
    return b
