"""Training batch sources: fresh pairs, triplets or class-balanced batches every epoch.

Items are indexed in memory batch by batch (no per-item collation), which is what keeps small CNNs
fast on a CPU. Each source has ``set_epoch(epoch)`` so epoch ``e`` draws the same batches whether
training ran straight through or was resumed, and ``set_shard(rank, world_size)`` for data-parallel
training: every process draws the global batch of ``world_size * batch_size`` items exactly as one
process with that batch size would, and keeps its contiguous share of it
(:func:`siamkit.distributed.shard_bounds`); a last global batch smaller than the number of processes
is dropped, so no process gets an empty share. Per-item augmentation is drawn on the share only, so
its random draws (not their distribution) differ from one process's.
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
from siamkit.distributed import shard_bounds
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
        self.epoch, self.rank, self.world_size = 0, 0, 1

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches ``__iter__`` yields next."""
        self.epoch = epoch

    def set_shard(self, rank: int, world_size: int) -> None:
        """Draw global batches of ``world_size * batch_size`` and yield share ``rank`` of each."""
        shard_bounds(0, rank, world_size)  # checks the rank
        self.rank, self.world_size = rank, world_size

    @property
    def global_batch(self) -> int:
        """Items per step over all processes: ``world_size * batch_size``."""
        return self.world_size * self.batch_size

    def _shard(self, start: int, stop: int) -> slice:
        """This rank's part of the global batch ``[start, stop)``."""
        lo, hi = shard_bounds(stop - start, self.rank, self.world_size)
        return slice(start + lo, start + hi)

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
        return -(-self.pairs_per_epoch // self.global_batch)

    def __iter__(self) -> Iterator[tuple[Any, Any, Tensor]]:
        a, b, y = make_pairs(
            self.data.labels, self.pairs_per_epoch, self._seed(), self.positive_fraction
        )
        for s in range(0, len(y) - self.world_size + 1, self.global_batch):
            sl = self._shard(s, min(s + self.global_batch, len(y)))
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
        return -(-self.triplets_per_epoch // self.global_batch)

    def __iter__(self) -> Iterator[tuple[Any, Any, Any]]:
        a, p, n = make_triplets(self.data.labels, self.triplets_per_epoch, self._seed())
        for s in range(0, len(a) - self.world_size + 1, self.global_batch):
            sl = self._shard(s, min(s + self.global_batch, len(a)))
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
        if groups_per_batch is not None and data.groups is None:
            raise DataError("groups_per_batch needs a dataset with groups (e.g. alphabets)")
        self.m_per_class, self.groups_per_batch = m_per_class, groups_per_batch
        self.requested_batches = batches_per_epoch
        self._check_classes()

    def _check_classes(self) -> None:
        n_classes, size = len(self.data.class_ids()), self.global_batch
        if n_classes * self.m_per_class < size:
            across = f" ({self.world_size} processes)" if self.world_size > 1 else ""
            raise DataError(
                f"batch_size {size}{across} needs {size // self.m_per_class} classes of "
                f"{self.m_per_class}; the training set has {n_classes} classes"
            )

    def set_shard(self, rank: int, world_size: int) -> None:  # noqa: D102
        super().set_shard(rank, world_size)
        self._check_classes()

    @property
    def batches_per_epoch(self) -> int:
        """Global batches per epoch: as given, else one pass over the items."""
        return self.requested_batches or max(1, len(self.data) // self.global_batch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[tuple[Any, Tensor]]:
        torch.manual_seed(self._seed())  # per-item augmentation draws from the global generator
        if self.groups_per_batch is None:
            batches = self._mixed_batches()
        else:
            batches = self._grouped_batches(torch.Generator().manual_seed(self._seed()))
        for idx in batches:
            idx = idx[self._shard(0, len(idx))]
            yield self._take(idx), self.data.labels[idx]

    def _mixed_batches(self) -> list[Tensor]:
        sampler = MPerClassSampler(
            self.data.labels,
            self.m_per_class,
            batch_size=self.global_batch,
            length_before_new_iter=self.batches_per_epoch * self.global_batch,
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
        usable = len(order) - len(order) % self.global_batch
        return list(order[:usable].split(self.global_batch))

    def _grouped_batches(self, gen: torch.Generator) -> list[Tensor]:
        labels, groups = self.data.labels, self.data.groups
        classes = labels.unique()
        class_group = torch.zeros(int(classes.max()) + 1, dtype=torch.long)
        class_group[labels] = groups
        members = {int(c): (labels == c).nonzero().flatten() for c in classes}
        group_ids = groups.unique()
        n_classes = self.global_batch // self.m_per_class
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
