"""Training batch sources: fresh pairs, triplets or class-balanced batches every epoch.

Items are indexed in memory batch by batch (no per-item collation), which is what keeps small CNNs
fast on a CPU. Each source has ``set_epoch(epoch)`` so epoch ``e`` draws the same batches whether
training ran straight through or was resumed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from pytorch_metric_learning.samplers import MPerClassSampler
from pytorch_metric_learning.utils import common_functions as pml_common
from torch import Tensor

from siamkit.data.labelled import LabelledData
from siamkit.data.pairs import make_pairs, make_triplets
from siamkit.errors import DataError

Augment = Callable[[Tensor], Tensor]


def take(items: Tensor | Sequence[Any], idx: Tensor, augment: Augment | None = None) -> Any:
    """The items at ``idx`` as one batch: a tensor (augmented per item if asked) or a list."""
    if not isinstance(items, Tensor):
        return [items[i] for i in idx.tolist()]
    batch = items[idx]
    if augment is not None:
        batch = torch.stack([augment(x) for x in batch])
    return batch if batch.is_floating_point() else batch.float().div_(255)


class _EpochSource:
    """Common part: a dataset, a batch size, a seed and the current epoch."""

    def __init__(self, data: LabelledData, batch_size: int, seed: int, augment: Augment | None):
        data.require_nonempty("the training set")
        if batch_size < 2:
            raise DataError(f"batch_size must be at least 2, got {batch_size}")
        self.data, self.batch_size, self.seed, self.augment = data, batch_size, seed, augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches ``__iter__`` yields next."""
        self.epoch = epoch

    def _seed(self) -> int:
        return self.seed * 1_000_003 + self.epoch

    def _take(self, idx: Tensor) -> Any:
        return take(self.data.items, idx, self.augment)


class PairBatches(_EpochSource):
    """Batches ``(x1, x2, y)`` of balanced positive/negative pairs, new pairs each epoch."""

    def __init__(
        self,
        data: LabelledData,
        pairs_per_epoch: int,
        batch_size: int = 64,
        seed: int = 0,
        augment: Augment | None = None,
        positive_fraction: float = 0.5,
    ) -> None:
        super().__init__(data, batch_size, seed, augment)
        self.pairs_per_epoch, self.positive_fraction = pairs_per_epoch, positive_fraction

    def __len__(self) -> int:
        return -(-self.pairs_per_epoch // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Any, Any, Tensor]]:
        a, b, y = make_pairs(
            self.data.labels, self.pairs_per_epoch, self._seed(), self.positive_fraction
        )
        for s in range(0, len(y), self.batch_size):
            sl = slice(s, s + self.batch_size)
            yield self._take(a[sl]), self._take(b[sl]), y[sl]


class TripletBatches(_EpochSource):
    """Batches ``(anchor, positive, negative)``, new triplets each epoch."""

    def __init__(
        self,
        data: LabelledData,
        triplets_per_epoch: int,
        batch_size: int = 64,
        seed: int = 0,
        augment: Augment | None = None,
    ) -> None:
        super().__init__(data, batch_size, seed, augment)
        self.triplets_per_epoch = triplets_per_epoch

    def __len__(self) -> int:
        return -(-self.triplets_per_epoch // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Any, Any, Any]]:
        a, p, n = make_triplets(self.data.labels, self.triplets_per_epoch, self._seed())
        for s in range(0, len(a), self.batch_size):
            sl = slice(s, s + self.batch_size)
            yield self._take(a[sl]), self._take(p[sl]), self._take(n[sl])


class ClassBatches(_EpochSource):
    """Batches ``(x, labels)`` with ``m_per_class`` items of each of ``batch_size / m`` classes,
    for online mining.

    By default classes are drawn from the whole set (pytorch-metric-learning's MPerClassSampler).
    With ``groups_per_batch`` each batch takes its classes from that many random groups (e.g.
    alphabets), so the negatives a miner finds are the look-alikes a within-group task must
    tell apart; more groups join a batch when the chosen ones hold too few classes.
    """

    def __init__(
        self,
        data: LabelledData,
        batch_size: int = 64,
        m_per_class: int = 4,
        seed: int = 0,
        augment: Augment | None = None,
        batches_per_epoch: int | None = None,
        groups_per_batch: int | None = None,
    ) -> None:
        super().__init__(data, batch_size, seed, augment)
        if batch_size % m_per_class:
            raise DataError(
                f"batch_size ({batch_size}) must be a multiple of m_per_class ({m_per_class})"
            )
        n_classes = len(data.class_ids())
        if n_classes * m_per_class < batch_size:
            raise DataError(
                f"batch_size {batch_size} needs {batch_size // m_per_class} classes of "
                f"{m_per_class}; the training set has {n_classes} classes"
            )
        if groups_per_batch is not None and data.groups is None:
            raise DataError("groups_per_batch needs a dataset with groups (e.g. alphabets)")
        self.m_per_class, self.groups_per_batch = m_per_class, groups_per_batch
        self.batches_per_epoch = batches_per_epoch or max(1, len(data) // batch_size)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[tuple[Any, Tensor]]:
        torch.manual_seed(self._seed())  # per-item augmentation draws from the global generator
        if self.groups_per_batch is None:
            batches = self._mixed_batches()
        else:
            batches = self._grouped_batches(torch.Generator().manual_seed(self._seed()))
        for idx in batches:
            yield self._take(idx), self.data.labels[idx]

    def _mixed_batches(self) -> list[Tensor]:
        sampler = MPerClassSampler(
            self.data.labels,
            self.m_per_class,
            batch_size=self.batch_size,
            length_before_new_iter=self.batches_per_epoch * self.batch_size,
        )
        # The sampler draws from pytorch-metric-learning's numpy generator; seed it for this
        # epoch so a resumed run draws the same batches as one that ran straight through.
        shared, pml_common.NUMPY_RANDOM = (
            pml_common.NUMPY_RANDOM,
            np.random.RandomState(self._seed() % 2**32),
        )
        try:
            order = torch.as_tensor(list(iter(sampler)), dtype=torch.long)
        finally:
            pml_common.NUMPY_RANDOM = shared
        usable = len(order) - len(order) % self.batch_size
        return list(order[:usable].split(self.batch_size))

    def _grouped_batches(self, gen: torch.Generator) -> list[Tensor]:
        labels, groups = self.data.labels, self.data.groups
        classes = labels.unique()
        class_group = torch.zeros(int(classes.max()) + 1, dtype=torch.long)
        class_group[labels] = groups
        members = {int(c): (labels == c).nonzero().flatten() for c in classes}
        group_ids = groups.unique()
        n_classes = self.batch_size // self.m_per_class
        batches = []
        for _ in range(self.batches_per_epoch):
            order = group_ids[torch.randperm(len(group_ids), generator=gen)]
            for taken in range(self.groups_per_batch, len(order) + 1):
                pool = classes[torch.isin(class_group[classes], order[:taken])]
                if len(pool) >= n_classes:
                    break
            chosen = pool[torch.randperm(len(pool), generator=gen)[:n_classes]]
            batches.append(torch.cat([self._pick(members[int(c)], gen) for c in chosen]))
        return batches

    def _pick(self, items: Tensor, gen: torch.Generator) -> Tensor:
        """``m_per_class`` of a class's items (without repeats when it has enough)."""
        if len(items) >= self.m_per_class:
            return items[torch.randperm(len(items), generator=gen)[: self.m_per_class]]
        return items[torch.randint(len(items), (self.m_per_class,), generator=gen)]
