"""Text tasks on any text encoder (a module mapping a list of strings to embeddings (B, D)).

- training on sentence pairs (scored 0-5 or labelled 0/1): :func:`train_text_pairs`;
- sentence similarity and the STS protocol (Spearman/Pearson x 100): :func:`evaluate_sts`;
- text matching: rank a reference set for each query: :func:`rank_references`;
- classification by labelled references (k-NN vote or class prototypes), few-shot evaluation;
- paraphrase detection with a threshold chosen on training pairs: :func:`paraphrase_report`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score
from torch import Tensor, nn

from siamkit.data.episodes import sample_episodes
from siamkit.data.labelled import LabelledData
from siamkit.data.text import TextPairBatches, TextPairs
from siamkit.errors import DataError

TextEncoder = Callable[[Sequence[str]], Tensor]


@torch.no_grad()
def embed_texts(encoder: nn.Module, texts: Sequence[str], batch_size: int = 64) -> Tensor:
    """L2-normalised embeddings of ``texts`` in eval mode, batched by similar lengths for speed."""
    if len(texts) == 0:
        raise DataError("embed_texts: no texts to embed")
    was_training = encoder.training
    encoder.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    parts = [
        encoder([texts[i] for i in order[start : start + batch_size]])
        for start in range(0, len(order), batch_size)
    ]
    encoder.train(was_training)
    embeddings = torch.cat(parts)[torch.argsort(torch.tensor(order))]
    return F.normalize(embeddings.float(), dim=1)


def similarity(encoder: nn.Module, a: Sequence[str], b: Sequence[str]) -> Tensor:
    """Cosine similarity of each pair ``(a[i], b[i])``, in [-1, 1] (higher = more similar)."""
    if len(a) != len(b):
        raise DataError(
            f"similarity needs as many first as second texts, got {len(a)} and {len(b)}"
        )
    return (embed_texts(encoder, a) * embed_texts(encoder, b)).sum(1)


def evaluate_sts(encoder: nn.Module, pairs: TextPairs) -> dict[str, float]:
    """STS protocol: Spearman and Pearson correlation (x 100) of cosine similarity with gold."""
    cosine = similarity(encoder, pairs.a, pairs.b).numpy()
    gold = pairs.scores.numpy()
    return {
        "spearman": 100 * float(spearmanr(cosine, gold).statistic),
        "pearson": 100 * float(pearsonr(cosine, gold).statistic),
    }


@dataclass
class TextTrainResult:
    """Per-epoch mean loss and validation metrics, and wall-clock training seconds."""

    losses: list[float] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def train_text_pairs(
    encoder: nn.Module,
    loss: nn.Module,
    batches: TextPairBatches,
    epochs: int = 1,
    lr: float = 2e-5,
    weight_decay: float = 0.01,
    warmup_fraction: float = 0.1,
    grad_clip: float | None = 1.0,
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
) -> TextTrainResult:
    """Train ``encoder`` with ``loss(e1, e2, targets)`` (scored or 0/1 pairs): AdamW, linear
    warm-up then linear decay, a rich progress bar; Ctrl-C stops after the current step."""
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=lr, weight_decay=weight_decay)
    total = epochs * len(batches)
    warmup = max(1, int(warmup_fraction * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    result, start = TextTrainResult(), time.perf_counter()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]}"),
    )
    with Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task("training", total=total, loss="-")
        try:
            for epoch in range(epochs):
                batches.set_epoch(epoch)
                encoder.train()
                running = []
                for a, b, targets in batches:
                    value = training_step(encoder, loss, optimizer, a, b, targets, grad_clip)
                    schedule.step()
                    running.append(value)
                    bar.update(
                        task, advance=1, loss=f"{value:.4f}", description=f"epoch {epoch + 1}"
                    )
                result.losses.append(float(np.mean(running)))
                if validate is not None:
                    result.metrics.append(validate(encoder))
        except KeyboardInterrupt:
            bar.console.print("[yellow]interrupted: keeping the weights trained so far")
    result.seconds = time.perf_counter() - start
    encoder.eval()
    return result


def training_step(
    encoder: nn.Module,
    loss: nn.Module,
    optimizer: torch.optim.Optimizer,
    a: list[str],
    b: list[str],
    targets: Tensor,
    grad_clip: float | None,
) -> float:
    """One optimisation step on a batch of pairs; both sides go through the encoder at once."""
    embeddings = encoder(list(a) + list(b))
    value = loss(embeddings[: len(a)], embeddings[len(a) :], targets)
    optimizer.zero_grad()
    value.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(encoder.parameters(), grad_clip)
    optimizer.step()
    return value.item()


def nearest(references: Tensor, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-``k`` references by cosine for each query (normalised embeddings): (scores, indices).

    Exact inner-product search with faiss; the one place to swap in siamkit's gallery index.
    """
    k = min(k, len(references))
    index = faiss.IndexFlatIP(references.shape[1])
    index.add(np.ascontiguousarray(references.numpy(), dtype=np.float32))
    scores, indices = index.search(np.ascontiguousarray(queries.numpy(), dtype=np.float32), k)
    return torch.from_numpy(scores), torch.from_numpy(indices)


def rank_references(
    encoder: nn.Module, queries: Sequence[str], references: Sequence[str], k: int = 5
) -> list[list[tuple[str, float]]]:
    """For each query, its ``k`` most similar references as ``(text, cosine)``, best first."""
    scores, indices = nearest(embed_texts(encoder, references), embed_texts(encoder, queries), k)
    return [
        [(references[j], float(s)) for s, j in zip(row_s.tolist(), row_i.tolist(), strict=True)]
        for row_s, row_i in zip(scores, indices, strict=True)
    ]


def classify_embeddings(
    queries: Tensor,
    references: Tensor,
    labels: Tensor,
    method: Literal["knn", "prototype"] = "prototype",
    k: int = 5,
) -> Tensor:
    """Labels of ``queries`` from labelled ``references`` (normalised embeddings): the majority
    label of the ``k`` nearest (``knn``, ties to the nearest) or the nearest class mean
    (``prototype``)."""
    classes = torch.unique(labels)
    if method == "prototype":
        prototypes = torch.stack([references[labels == c].mean(0) for c in classes])
        return classes[(queries @ F.normalize(prototypes, dim=1).T).argmax(1)]
    if method != "knn":
        raise DataError(f"classification method must be 'knn' or 'prototype', got {method!r}")
    _, indices = nearest(references, queries, k)
    votes = labels[indices]  # (Q, k), nearest first
    counts = (votes[..., None] == classes).sum(1).float()  # (Q, C)
    first_rank = (votes[..., None] == classes).float().argmax(1)  # earliest rank of each class
    return classes[(counts - first_rank / (k + 1)).argmax(1)]


def classify_texts(
    encoder: nn.Module,
    texts: Sequence[str],
    reference_texts: Sequence[str],
    reference_labels: Sequence[str],
    method: Literal["knn", "prototype"] = "prototype",
    k: int = 5,
) -> list[str]:
    """Label each text by its nearest labelled references (k-NN vote or class prototypes)."""
    names = sorted(set(reference_labels))
    ids = torch.tensor([names.index(label) for label in reference_labels])
    queries, refs = embed_texts(encoder, texts), embed_texts(encoder, reference_texts)
    return [names[i] for i in classify_embeddings(queries, refs, ids, method, k).tolist()]


def fewshot_text_accuracy(
    encoder: nn.Module,
    data: LabelledData,
    n_way: int,
    k_shot: int,
    episodes: int = 500,
    n_query: int = 5,
    seed: int = 0,
    method: Literal["knn", "prototype"] = "prototype",
) -> tuple[float, float]:
    """Mean accuracy and 95% confidence half-width over N-way K-shot episodes of ``data``:
    classify each episode's queries by its ``k_shot`` labelled references per class."""
    embeddings = embed_texts(encoder, list(data.items))
    accuracies = []
    for ep in sample_episodes(data.labels, n_way, k_shot, n_query, episodes, seed):
        predicted = classify_embeddings(
            embeddings[ep.query], embeddings[ep.support], ep.support_labels, method, k_shot
        )
        accuracies.append(float((predicted == ep.query_labels).float().mean()))
    mean = float(np.mean(accuracies))
    return mean, 1.96 * float(np.std(accuracies)) / math.sqrt(len(accuracies))


def best_threshold(scores: Tensor, labels: Tensor) -> float:
    """The cosine threshold with the highest accuracy on ``labels`` (1 = same if score >= it)."""
    order = torch.argsort(scores, descending=True)
    s, y = scores[order], labels[order].float()
    # accepting the first i pairs: correct = positives among them + negatives after them
    correct = torch.cat([torch.zeros(1), torch.cumsum(2 * y - 1, 0)]) + (1 - y).sum()
    i = int(correct.argmax())
    if i == 0:
        return float(s[0]) + 1e-6
    if i == len(s):
        return float(s[-1])
    return float((s[i - 1] + s[i]) / 2)


def paraphrase_report(encoder: nn.Module, train: TextPairs, test: TextPairs) -> dict[str, float]:
    """Paraphrase detection: cosine >= threshold (chosen for accuracy on ``train``); test
    accuracy and F1 of the paraphrase class."""
    threshold = best_threshold(similarity(encoder, train.a, train.b), train.scores)
    predicted = (similarity(encoder, test.a, test.b) >= threshold).int().numpy()
    gold = test.scores.int().numpy()
    return {
        "threshold": threshold,
        "accuracy": float(accuracy_score(gold, predicted)),
        "f1": float(f1_score(gold, predicted)),
    }


def sentences_per_second(encoder: nn.Module, texts: Sequence[str], batch_size: int = 64) -> float:
    """Embedding throughput on ``texts`` (inference, batched)."""
    start = time.perf_counter()
    embed_texts(encoder, texts, batch_size)
    return len(texts) / (time.perf_counter() - start)
