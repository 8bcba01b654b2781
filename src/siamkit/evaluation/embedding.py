"""Embedding a whole labelled set (or list of items) in batches, without gradients."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from siamkit.data.batches import take
from siamkit.siamese import SiameseNetwork


@torch.no_grad()
def embed_all(
    network: SiameseNetwork, items: Tensor | Sequence[Any], batch_size: int = 256
) -> Tensor:
    """Embeddings (N, D) of ``items`` (uint8 images are scaled to [0, 1] as in training)."""
    was_training = network.training
    network.eval()
    device = next(network.parameters(), torch.empty(0)).device
    out = []
    for start in range(0, len(items), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(items)))
        batch = take(items, idx)
        if isinstance(batch, Tensor):
            batch = batch.to(device)
        out.append(network.embed(batch).float().cpu())
    network.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0)
