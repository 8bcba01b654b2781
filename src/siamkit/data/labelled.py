"""A labelled dataset held in memory, and its class-disjoint splits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from siamkit.errors import DataError


@dataclass
class LabelledData:
    """Items with integer class labels.

    ``items`` is a tensor (N, ...) or a list (file paths, strings). ``classes`` names the labels;
    ``groups`` (N,) optionally says which larger group each item belongs to (an alphabet, a
    writer), named by ``group_names``.
    """

    items: Tensor | Sequence[Any]
    labels: Tensor
    classes: list[str] | None = None
    groups: Tensor | None = None
    group_names: list[str] | None = None

    def __post_init__(self) -> None:
        self.labels = torch.as_tensor(self.labels, dtype=torch.long)
        if self.labels.ndim != 1 or len(self.items) != len(self.labels):
            raise DataError(
                f"items and labels must have one label per item; got {len(self.items)} items "
                f"and labels of shape {tuple(self.labels.shape)}"
            )
        floating = isinstance(self.items, Tensor) and self.items.is_floating_point()
        if floating and not torch.isfinite(self.items).all():
            raise DataError("items contain NaN or infinite values")
        if self.groups is not None:
            self.groups = torch.as_tensor(self.groups, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Tensor | Sequence[int]) -> LabelledData:
        """The items at ``indices``, keeping labels, class names and groups."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        if isinstance(self.items, Tensor):
            items: Tensor | list[Any] = self.items[idx]
        else:
            items = [self.items[i] for i in idx.tolist()]
        groups = None if self.groups is None else self.groups[idx]
        return LabelledData(items, self.labels[idx], self.classes, groups, self.group_names)

    def class_ids(self) -> Tensor:
        """The distinct labels present, sorted."""
        return torch.unique(self.labels)

    def indices_by_class(self) -> dict[int, Tensor]:
        """Label -> indices of its items."""
        order = torch.argsort(self.labels, stable=True)
        ids, counts = torch.unique_consecutive(self.labels[order], return_counts=True)
        return dict(zip(ids.tolist(), torch.split(order, counts.tolist()), strict=True))

    def require_nonempty(self, what: str) -> LabelledData:
        """Return self, or raise :class:`DataError` naming ``what`` when there are no items."""
        if len(self) == 0:
            raise DataError(f"{what} is empty: no items")
        return self


@dataclass
class Splits:
    """Train, validation and test parts of a dataset; evaluation classes never seen in training.

    ``preprocess`` (a preprocessor spec, optional) says how a raw input file becomes an item like
    these, so a model trained on them can be saved with the matching preprocessing.
    """

    train: LabelledData
    val: LabelledData
    test: LabelledData
    preprocess: Any = None
