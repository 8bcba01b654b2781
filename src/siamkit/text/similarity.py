"""Sentence embeddings and similarity with any text model, and the STS evaluation protocol.

Every function takes a text model in any of its three forms: a loaded :class:`~siamkit.model.Model`,
a :class:`~siamkit.siamese.SiameseNetwork`, or a bare text encoder (a module mapping a list of
strings to embeddings ``(B, D)``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr
from torch import Tensor, nn

from siamkit.data.text import TextPairs
from siamkit.errors import DataError
from siamkit.siamese import SiameseNetwork

TextModel = Any  # siamkit.model.Model | SiameseNetwork | nn.Module taking a list of strings


def text_encoder(model: TextModel) -> nn.Module:
    """The encoder module of a :class:`~siamkit.model.Model`, a network, or the encoder itself."""
    network = getattr(model, "network", model)
    encoder = network.encoder if isinstance(network, SiameseNetwork) else network
    if not isinstance(encoder, nn.Module):
        raise DataError(f"expected a text model or encoder, got {type(model).__name__}")
    return encoder


@torch.no_grad()
def embed_texts(model: TextModel, texts: Sequence[str], batch_size: int = 64) -> Tensor:
    """L2-normalised embeddings ``(N, D)`` of ``texts`` in eval mode, batched by similar length
    (less padding, so faster) and returned in the input order."""
    if isinstance(texts, str) or len(texts) == 0:
        raise DataError("embed_texts: expected a non-empty list of texts")
    encoder = text_encoder(model)
    was_training = encoder.training
    encoder.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    try:
        parts = [
            encoder([texts[i] for i in order[start : start + batch_size]]).float().cpu()
            for start in range(0, len(order), batch_size)
        ]
    finally:
        encoder.train(was_training)
    embeddings = torch.cat(parts)[torch.argsort(torch.tensor(order))]
    return F.normalize(embeddings, dim=1)


def similarity(model: TextModel, a: Sequence[str], b: Sequence[str]) -> Tensor:
    """Cosine similarity of each pair ``(a[i], b[i])``, in [-1, 1] (higher = more similar)."""
    if len(a) != len(b):
        raise DataError(
            f"similarity needs as many first as second texts, got {len(a)} and {len(b)}"
        )
    return (embed_texts(model, a) * embed_texts(model, b)).sum(1)


def evaluate_sts(model: TextModel, pairs: TextPairs) -> dict[str, float]:
    """The STS protocol: Spearman and Pearson correlation (x 100) of cosine with gold scores."""
    cosine = similarity(model, pairs.a, pairs.b).numpy()
    gold = pairs.scores.numpy()
    return {
        "spearman": 100 * float(spearmanr(cosine, gold).statistic),
        "pearson": 100 * float(pearsonr(cosine, gold).statistic),
    }


def sts_validator(pairs: TextPairs) -> Callable[[SiameseNetwork], dict[str, float]]:
    """A ``validate`` callable for :func:`siamkit.training.fit`: STS metrics on ``pairs``."""
    return lambda network: evaluate_sts(network, pairs)


def sentences_per_second(model: TextModel, texts: Sequence[str], batch_size: int = 64) -> float:
    """Embedding throughput on ``texts`` (inference, batched, current thread settings)."""
    start = time.perf_counter()
    embed_texts(model, texts, batch_size)
    return len(texts) / (time.perf_counter() - start)
