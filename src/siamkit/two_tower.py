"""The two-tower network: two different encoders mapping two kinds of input into one space.

Where a :class:`~siamkit.siamese.SiameseNetwork` compares like with like through one shared
encoder, a two-tower model matches *different* modalities, e.g. a word with a recording of it, or
a caption with an image: tower ``a`` embeds one kind of input, tower ``b`` the other, both into
``embedding_dim`` dimensions, and the same kind of head scores a pair (higher = more alike). The
contracts are the siamese network's: ``embed(x, tower)`` embeds one batch, ``forward(a, b)``
returns both embeddings, ``similarity(a, b)`` the head's score. Trained with the symmetric
in-batch contrastive loss (``ranking`` with ``symmetric: true``, i.e. InfoNCE / CLIP's loss) on
batches of matched pairs (:class:`MatchedPairBatches`), saved and loaded as a model folder like any
siamkit model (``siamkit.save_model(folder, network, encoder, head, ..., encoder_b=...)``).

Example (two MLP towers for 8-d and 4-d inputs; any two registered encoders work)::

    from siamkit.encoders import build_encoder
    from siamkit.heads import HEADS
    from siamkit.two_tower import TwoTowerNetwork

    a = build_encoder({"name": "mlp", "params": {"in_features": 8, "embedding_dim": 16}})
    b = build_encoder({"name": "mlp", "params": {"in_features": 4, "embedding_dim": 16}})
    network = TwoTowerNetwork(a, b, HEADS.build({"name": "cosine"}))
    scores = network.similarity(torch.randn(5, 8), torch.randn(5, 4))  # (5,)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from siamkit.data.batches import take
from siamkit.errors import ConfigError, DataError
from siamkit.heads import Head

TOWERS = ("a", "b")


class TwoTowerNetwork(nn.Module):
    """Tower ``encoder_a`` for one kind of input, ``encoder_b`` for the other, and a ``head``.

    The towers share no weights; they must produce embeddings of one size (their
    ``embedding_dim``), so the head can compare an ``a`` input with a ``b`` input.
    """

    def __init__(self, encoder_a: nn.Module, encoder_b: nn.Module, head: Head) -> None:
        super().__init__()
        dims = [getattr(e, "embedding_dim", None) for e in (encoder_a, encoder_b)]
        if None not in dims and dims[0] != dims[1]:
            raise ConfigError(
                f"the two towers must embed into one space: tower a gives {dims[0]} dimensions, "
                f"tower b {dims[1]} (set both encoders' embedding_dim to the same size)"
            )
        self.encoder = Towers(encoder_a, encoder_b, dims[0])
        self.head = head
        self.embedding_dim = dims[0]

    @property
    def encoder_a(self) -> nn.Module:
        """Tower a's encoder."""
        return self.encoder.a

    @property
    def encoder_b(self) -> nn.Module:
        """Tower b's encoder."""
        return self.encoder.b

    def tower(self, name: str) -> nn.Module:
        """The encoder of tower ``"a"`` or ``"b"``."""
        if name not in TOWERS:
            raise DataError(f"a two-tower model has towers 'a' and 'b', not {name!r}")
        return self.encoder.a if name == "a" else self.encoder.b

    def embed(self, x: Any, tower: str = "a") -> Tensor:
        """Embed one batch of tower ``tower``'s inputs: (B, ...) -> (B, D)."""
        return self.tower(tower)(x)

    def forward(self, a: Any, b: Any) -> tuple[Tensor, Tensor]:
        """Embed a batch of ``a`` inputs with tower a and a batch of ``b`` inputs with tower b."""
        return self.encoder_a(a), self.encoder_b(b)

    def similarity(self, a: Any, b: Any) -> Tensor:
        """The head's score of each (``a[i]``, ``b[i]``) pair (higher = more alike)."""
        return self.head(*self(a, b))


class Towers(nn.Module):
    """Both towers in one module, the network's ``encoder``: whatever handles "the encoder's
    parameters" generically (the optimiser, distributed training) handles both towers. It has
    no ``forward``: each input kind goes through its own tower (``a`` or ``b``)."""

    def __init__(self, a: nn.Module, b: nn.Module, embedding_dim: int | None) -> None:
        super().__init__()
        self.a, self.b = a, b
        self.embedding_dim = embedding_dim


@dataclass
class MatchedPairs:
    """Matched inputs of two modalities: ``a[i]`` goes with ``b[i]``; ``keys[i]`` names the ``a``
    side, so pairs that share a key (two recordings of one word, two captions of one image) are
    never used as each other's negatives."""

    a: Tensor | Sequence[Any]
    b: Tensor | Sequence[Any]
    keys: Tensor

    def __post_init__(self) -> None:
        self.keys = torch.as_tensor(self.keys, dtype=torch.long)
        if not len(self.a) == len(self.b) == len(self.keys):
            raise DataError(
                f"matched pairs need as many a items, b items and keys; got {len(self.a)}, "
                f"{len(self.b)} and {len(self.keys)}"
            )

    def __len__(self) -> int:
        return len(self.keys)


def class_name_pairs(items: Tensor | Sequence[Any], labels: Tensor, classes: Sequence[str]):
    """Matched pairs (class name, item) of a labelled set: each item with its class's name (the
    word "seven" with a recording of seven), keyed by the class."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    return MatchedPairs([classes[i] for i in labels.tolist()], items, labels)


class MatchedPairBatches:
    """Batches ``(a, b, ones)`` of matched pairs for the in-batch contrastive loss: each batch
    holds ``batch_size`` pairs with **distinct keys** (every other pair of the batch is a true
    negative); each epoch visits every pair about once, in a new seeded order. ``augment_b``
    (e.g. :func:`siamkit.data.transforms.build_augmentation`) transforms each tensor ``b`` item."""

    def __init__(
        self, pairs: MatchedPairs, batch_size: int = 32, seed: int = 0, augment_b: Any = None
    ) -> None:
        distinct = len(torch.unique(pairs.keys))
        if batch_size < 2 or distinct < 2:
            raise DataError(
                f"in-batch contrastive batches need batch_size >= 2 and 2 distinct keys; got "
                f"batch_size {batch_size} and {distinct} keys"
            )
        self.pairs, self.batch_size, self.seed = pairs, min(batch_size, distinct), seed
        self.augment_b = augment_b
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches ``__iter__`` yields next."""
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.pairs) // self.batch_size)

    def batch_indices(self) -> list[Tensor]:
        """This epoch's batches of pair indices, keys distinct within each batch."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        keys = self.pairs.keys
        queues = {
            k: list(idx[torch.randperm(len(idx), generator=gen)].tolist())
            for k in torch.unique(keys).tolist()
            for idx in [torch.nonzero(keys == k).squeeze(1)]
        }
        batches = []
        for _ in range(len(self)):
            alive = [k for k, q in queues.items() if q]
            if len(alive) < 2:
                break
            sizes = torch.tensor([float(len(queues[k])) for k in alive])
            n = min(self.batch_size, len(alive))
            chosen = torch.multinomial(sizes, n, replacement=False, generator=gen).tolist()
            batches.append(torch.tensor([queues[alive[c]].pop() for c in chosen]))
        return batches

    def __iter__(self) -> Iterator[tuple[Any, Any, Tensor]]:
        for idx in self.batch_indices():
            b = take(self.pairs.b, idx, self.augment_b)
            yield take(self.pairs.a, idx), b, torch.ones(len(idx))
