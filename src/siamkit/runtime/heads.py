"""The heads of :mod:`siamkit.heads` in numpy (higher = more similar, same ranges), and the
reference-set aggregates of :mod:`siamkit.evaluation.reference_set`, for the torch-free runtime."""

from __future__ import annotations

from typing import Any

import numpy as np

from siamkit.errors import ConfigError, DataError
from siamkit.saved_thresholds import saved_reference_threshold  # noqa: F401  (re-exported)


def _check(a: np.ndarray, b: np.ndarray) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise DataError(f"a head compares two (batch, dim) embedding batches of one shape; "
                        f"got {a.shape} and {b.shape}")  # fmt: skip


def _normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


class NumpyHead:
    """``score(a, b)`` -> (B,) and ``pairwise(q, r)`` -> (Q, R) for "euclidean" (minus the
    distance), "cosine" and "learned" (``sigmoid(w . |a - b| + b)``, weights from the export)."""

    def __init__(self, name: str, weights: dict[str, Any] | None = None) -> None:
        if name not in ("euclidean", "cosine", "learned"):
            raise ConfigError(f"head {name!r} has no numpy implementation")
        if name == "learned" and not weights:
            raise ConfigError("learned head: the export holds no head weights")
        self.name = name
        if weights:
            self.weight = np.asarray(weights["weight"], dtype=np.float32).reshape(-1)
            self.bias = np.float32(weights["bias"])

    def score(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Similarity of ``a[i]`` and ``b[i]``."""
        _check(a, b)
        if self.name == "euclidean":
            return -np.linalg.norm(a - b, axis=1)
        if self.name == "cosine":
            norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
            return (a * b).sum(1) / np.maximum(norms, 1e-8)
        logits = np.abs(a - b) @ self.weight + self.bias
        return 1 / (1 + np.exp(-logits))

    def pairwise(self, queries: np.ndarray, references: np.ndarray) -> np.ndarray:
        """Scores of every query against every reference, (Q, R)."""
        if self.name == "euclidean":
            diff = queries[:, None, :] - references[None, :, :]
            return -np.sqrt((diff**2).sum(-1))
        if self.name == "cosine":
            return _normalise(queries) @ _normalise(references).T
        q, r = len(queries), len(references)
        a = np.repeat(queries, r, axis=0)
        b = np.tile(references, (q, 1))
        return self.score(a, b).reshape(q, r)


def reference_aggregates(
    head: NumpyHead, questioned: np.ndarray, refs: np.ndarray, normalisation: str = "none"
) -> dict[str, float]:
    """One questioned embedding (D,) against K reference embeddings (K, D): mean, max and
    centroid scores, divided by the references' spread (mean distance between two different
    references) when ``normalisation == "spread"`` and K >= 2."""
    k = len(refs)
    scores = head.score(np.repeat(questioned[None], k, axis=0), refs)
    centroid = head.score(questioned[None], refs.mean(0, keepdims=True))[0]
    out = {"mean": float(scores.mean()), "max": float(scores.max()), "centroid": float(centroid)}
    if normalisation not in ("none", "spread"):
        raise DataError(f"score normalisation must be 'none' or 'spread', got {normalisation!r}")
    if normalisation == "none" or k < 2:
        return out
    between = head.score(np.repeat(refs, k, axis=0), np.tile(refs, (k, 1))).reshape(k, k)
    spread = max(float((-between[~np.eye(k, dtype=bool)]).mean()), 1e-6)
    return {name: value / spread for name, value in out.items()}
