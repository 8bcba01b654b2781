"""Class-disjoint and stratified splits, seeded."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from siamkit.data.labelled import LabelledData, Splits
from siamkit.errors import DataError


def _counts(n: int, fractions: Sequence[float]) -> list[int]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(
            f"split fractions must be 3 non-negative numbers summing to 1, got {fractions}"
        )
    n_val = round(n * fractions[1])
    n_test = round(n * fractions[2])
    return [n - n_val - n_test, n_val, n_test]


def split_classes(
    data: LabelledData, fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
) -> Splits:
    """Split by class: every class lands in exactly one of train / val / test."""
    classes = data.class_ids()
    if len(classes) < 3:
        raise DataError(f"a class-disjoint split needs at least 3 classes, got {len(classes)}")
    perm = classes[torch.randperm(len(classes), generator=torch.Generator().manual_seed(seed))]
    parts = torch.split(perm, _counts(len(classes), fractions))
    return Splits(*(data.subset(torch.isin(data.labels, p).nonzero().squeeze(1)) for p in parts))


def split_items(
    data: LabelledData, fractions: Sequence[float] = (0.8, 0.2, 0.0), seed: int = 0
) -> Splits:
    """Stratified split of items: each class is divided in the given proportions."""
    gen = torch.Generator().manual_seed(seed)
    parts: list[list[Tensor]] = [[], [], []]
    for idx in data.indices_by_class().values():
        shuffled = idx[torch.randperm(len(idx), generator=gen)]
        for part, chunk in zip(
            parts, torch.split(shuffled, _counts(len(idx), fractions)), strict=True
        ):
            part.append(chunk)
    return Splits(*(data.subset(torch.sort(torch.cat(p)).values) for p in parts))
