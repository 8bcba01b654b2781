"""The twin network: one encoder applied to every input, and a head comparing the embeddings."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from siamkit.heads import Head


class SiameseNetwork(nn.Module):
    """One shared ``encoder`` plus a ``head``.

    Weight sharing is structural: there is exactly one encoder module, and ``forward`` calls it on
    each input, so both (or all three) branches use and update the same parameters.
    """

    def __init__(self, encoder: nn.Module, head: Head) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def embed(self, x: Any) -> Tensor:
        """Embed one batch: (B, ...) inputs -> (B, D) embeddings."""
        return self.encoder(x)

    def forward(self, *inputs: Any) -> tuple[Tensor, ...]:
        """Embed 2 (pair) or 3 (anchor, positive, negative) batches with the same encoder."""
        if len(inputs) < 2:
            raise TypeError(f"SiameseNetwork.forward takes 2 or more batches, got {len(inputs)}")
        if all(isinstance(x, Tensor) and x.shape == inputs[0].shape for x in inputs):
            # One encoder call on the stacked batches: same weights, fewer, larger kernels.
            return tuple(self.encoder(torch.cat(inputs)).chunk(len(inputs)))
        return tuple(self.encoder(x) for x in inputs)

    def similarity(self, a: Any, b: Any) -> Tensor:
        """The head's score per pair (higher = more similar; range documented by the head)."""
        ea, eb = self(a, b)
        return self.head(ea, eb)
