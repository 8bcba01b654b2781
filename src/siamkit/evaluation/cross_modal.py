"""Cross-modal retrieval with a two-tower model: recall@1 in both directions.

The ``a`` side is a set of distinct keys' inputs (the words "zero".."nine", one caption per
image...), the ``b`` side many items each belonging to one key (recordings of the words):

- ``b_to_a_recall_at_1``: the fraction of ``b`` items whose most similar ``a`` input is their own
  key's (a spoken digit retrieves its word);
- ``a_to_b_recall_at_1``: the fraction of ``a`` inputs whose most similar ``b`` item is one of
  theirs (the word retrieves a recording of itself), and ``a_to_b_r_precision``: the fraction of
  each key's R items among its R best-ranked ``b`` items (R = its item count), averaged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from siamkit.errors import DataError
from siamkit.heads import Head


@torch.no_grad()
def cross_modal_recall(
    head: Head, a: Tensor, a_keys: Tensor, b: Tensor, b_keys: Tensor
) -> dict[str, float]:
    """Recall@1 both ways and R-precision of ``a`` -> ``b`` from embeddings and their keys."""
    a_keys, b_keys = torch.as_tensor(a_keys), torch.as_tensor(b_keys)
    if not torch.isin(b_keys, a_keys).all():
        raise DataError("every b item's key must be among the a inputs' keys")
    scores = head.pairwise(a.float(), b.float())  # (A, B)
    b_to_a = a_keys[scores.argmax(0)] == b_keys
    a_to_b = b_keys[scores.argmax(1)] == a_keys
    precision = []
    for row, key in zip(scores, a_keys.tolist(), strict=True):
        relevant = int((b_keys == key).sum())
        if relevant:
            top = row.topk(relevant).indices
            precision.append(float((b_keys[top] == key).float().mean()))
    return {
        "b_to_a_recall_at_1": float(b_to_a.float().mean()),
        "a_to_b_recall_at_1": float(a_to_b.float().mean()),
        "a_to_b_r_precision": sum(precision) / max(len(precision), 1),
        "a_inputs": float(len(a_keys)),
        "b_items": float(len(b_keys)),
    }


def matched_pair_scores(
    head: Head, a: Tensor, a_keys: Tensor, b: Tensor, b_keys: Tensor, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Scores and 0/1 labels of verification pairs: every ``b`` item with its own key's ``a``
    input (1) and with one other key's, drawn at random (0)."""
    a_keys, b_keys = torch.as_tensor(a_keys), torch.as_tensor(b_keys)
    row = {k: i for i, k in enumerate(a_keys.tolist())}
    own = torch.tensor([row[k] for k in b_keys.tolist()])
    gen = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, len(a_keys), (len(b_keys),), generator=gen)
    other = (own + shift) % len(a_keys)
    scores = head.pairwise(a.float(), b.float())
    cols = torch.arange(len(b_keys))
    return (
        torch.cat([scores[own, cols], scores[other, cols]]),
        torch.cat([torch.ones(len(cols)), torch.zeros(len(cols))]),
    )
