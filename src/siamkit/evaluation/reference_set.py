"""Reference-set verification, as a bank does it: enroll K genuine signatures of a writer, then
score a questioned signature by its similarity to those K references.

Three aggregates (higher = more similar): ``mean`` (the mean of the K head scores, i.e. minus the
mean distance for the euclidean head), ``max`` (the best-matching reference, i.e. minus the minimum
distance) and ``centroid`` (the head score against the mean of the K reference embeddings, the
writer's prototype). Decisions are always ``score >= threshold``, with the threshold chosen on
validation writers only.

Optional ``spread`` normalisation (writer-dependent scaling inside a writer-independent model):
each score is divided by the mean distance between two different references of the set, so a
writer whose genuine signatures vary a lot is allowed a larger distance. It needs K >= 2 and a
distance head (euclidean: score = -distance); with K = 1 scores are left as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from siamkit.data.signatures import SignatureSet
from siamkit.errors import DataError
from siamkit.evaluation.verification import choose_threshold, verification_report
from siamkit.saved_thresholds import saved_reference_threshold  # noqa: F401  (re-exported)

AGGREGATES = ("mean", "max", "centroid")
NORMALISATIONS = ("none", "spread")


@dataclass(frozen=True)
class ReferenceTrials:
    """Verification trials: each questioned image against K references of one claimed writer."""

    references: np.ndarray  # (T, K) image indices: genuine signatures of the claimed writer
    questioned: np.ndarray  # (T,) image index
    labels: np.ndarray  # (T,) 1 = genuine, 0 = forgery
    kinds: np.ndarray  # (T,) "genuine" | "skilled" | "random"
    writers: np.ndarray  # (T,) the claimed writer

    def __len__(self) -> int:
        return len(self.labels)

    def of_kind(self, negative: str) -> np.ndarray:
        """Mask of the genuine trials and the forgeries of kind ``negative``."""
        return (self.kinds == "genuine") | (self.kinds == negative)


def reference_trials(
    data: SignatureSet,
    writers: Sequence[str],
    k: int,
    seed: int = 0,
    draws: int = 1,
    random_per_writer: int = 10,
) -> ReferenceTrials:
    """Trials for ``writers`` with ``k`` references each, drawn ``draws`` times (seeded).

    Per writer and draw: ``k`` genuine references; the writer's other genuine signatures
    (label 1); every skilled forgery of the writer (label 0); ``random_per_writer`` genuine
    signatures of other writers in ``writers`` (random forgeries, label 0).
    """
    rng = np.random.default_rng(seed)
    rows: list[tuple[np.ndarray, np.ndarray, str, str]] = []
    for writer in writers:
        genuine = data.genuine_of(writer)
        if len(genuine) <= k:
            raise DataError(
                f"writer {writer}: {k} references need at least {k + 1} genuine signatures, "
                f"got {len(genuine)}"
            )
        others = np.flatnonzero(np.isin(data.writers, writers) & (data.writers != writer))
        others = others[~data.forged[others]]
        for _ in range(draws):
            chosen = rng.permutation(genuine)
            refs, rest = chosen[:k], chosen[k:]
            n_random = min(random_per_writer, len(others))
            random = rng.choice(others, n_random, replace=False)
            for kind, questioned in (
                ("genuine", rest),
                ("skilled", data.forged_of(writer)),
                ("random", random),
            ):
                rows += [(refs, q, kind, writer) for q in questioned]
    kinds = np.array([r[2] for r in rows])
    return ReferenceTrials(
        references=np.stack([r[0] for r in rows]),
        questioned=np.array([r[1] for r in rows], dtype=np.int64),
        labels=(kinds == "genuine").astype(np.int64),
        kinds=kinds,
        writers=np.array([r[3] for r in rows]),
    )


def aggregate_scores(scores: Tensor) -> dict[str, Tensor]:
    """(T, K) head scores -> {"mean": (T,), "max": (T,)}.

    ``max`` is the score of the nearest reference (the minimum distance); with K = 1 both equal
    the single score.
    """
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise DataError(f"expected (trials, K >= 1) reference scores, got {tuple(scores.shape)}")
    return {"mean": scores.mean(dim=1), "max": scores.max(dim=1).values}


def reference_scores(head: Any, questioned: Tensor, refs: Tensor) -> dict[str, Tensor]:
    """(T, D) questioned and (T, K, D) reference embeddings -> each of :data:`AGGREGATES`: (T,).

    With K = 1 every aggregate is the single head score.
    """
    if refs.ndim != 3 or refs.shape[1] == 0 or questioned.shape != (refs.shape[0], refs.shape[2]):
        raise DataError(
            f"expected (T, D) questioned and (T, K >= 1, D) reference embeddings, got "
            f"{tuple(questioned.shape)} and {tuple(refs.shape)}"
        )
    t, k, d = refs.shape
    with torch.no_grad():
        scores = head(questioned.repeat_interleave(k, dim=0), refs.reshape(-1, d)).view(t, k)
        centroid = head(questioned, refs.mean(dim=1))
    return {**aggregate_scores(scores), "centroid": centroid}


def check_normalisation(normalisation: str) -> str:
    """``normalisation`` if it is one of :data:`NORMALISATIONS`, else a clear error."""
    if normalisation not in NORMALISATIONS:
        raise DataError(
            f"score normalisation must be one of {NORMALISATIONS}, got {normalisation!r}"
        )
    return normalisation


def reference_spread(head: Any, refs: Tensor) -> Tensor:
    """(T, K, D) reference embeddings, K >= 2 -> (T,): the mean distance (minus the head score)
    between two different references of each set, floored at 1e-6."""
    t, k, d = refs.shape
    first = refs.repeat_interleave(k, dim=1).reshape(-1, d)
    second = refs.repeat(1, k, 1).reshape(-1, d)
    with torch.no_grad():
        scores = head(first, second).view(t, k, k)
    different = ~torch.eye(k, dtype=torch.bool)
    return (-scores[:, different]).mean(dim=1).clamp_min(1e-6)


def normalised_aggregates(
    head: Any, questioned: Tensor, refs: Tensor, normalisation: str = "none"
) -> dict[str, Tensor]:
    """:func:`reference_scores` of (T, D) questioned and (T, K, D) reference embeddings; with
    ``"spread"`` and K >= 2 divided by :func:`reference_spread` of the references."""
    aggregated = reference_scores(head, questioned, refs)
    if check_normalisation(normalisation) == "none" or refs.shape[1] < 2:
        return aggregated
    spread = reference_spread(head, refs)
    return {name: values / spread for name, values in aggregated.items()}


def trial_scores(
    head: Any, embeddings: Tensor, trials: ReferenceTrials, normalisation: str = "none"
) -> dict[str, np.ndarray]:
    """Score every trial from precomputed ``embeddings`` (one row per image) with ``head``."""
    refs = embeddings[torch.from_numpy(trials.references)]
    questioned = embeddings[torch.from_numpy(trials.questioned)]
    aggregated = normalised_aggregates(head, questioned, refs, normalisation)
    return {name: values.numpy() for name, values in aggregated.items()}


def score_against_references(
    model: Any, questioned: Any, references: Sequence[Any]
) -> dict[str, float]:
    """Score one questioned signature against K >= 1 references of the claimed writer.

    ``model`` is a loaded :class:`siamkit.model.Model` (its saved preprocessing is applied to
    the files). Returns the score of each aggregate (``mean``, ``max``, ``centroid``; see the
    module doc), divided by the reference spread when the model was saved with
    ``extra["reference_normalisation"] == "spread"``; higher = more likely genuine.
    """
    if len(references) == 0:
        raise DataError("reference-set verification needs at least one reference signature")
    embeddings = model.embed([questioned, *references])
    normalisation = model.config.extra.get("reference_normalisation", "none")
    aggregated = normalised_aggregates(
        model.network.head, embeddings[:1], embeddings[None, 1:], normalisation
    )
    return {name: float(values[0]) for name, values in aggregated.items()}


def choose_reference_thresholds(
    scores: dict[str, np.ndarray], trials: ReferenceTrials, rule: str = "eer"
) -> dict[str, float]:
    """Per-aggregate thresholds from genuine vs skilled-forgery trials (validation writers only).

    Random forgeries are left out: the threshold is set on the hard case and applied to both.
    """
    mask = trials.of_kind("skilled")
    return {
        name: choose_threshold(values[mask], trials.labels[mask], rule)
        for name, values in scores.items()
    }


def reference_report(
    scores: dict[str, np.ndarray],
    trials: ReferenceTrials,
    thresholds: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """One row per aggregate and forgery kind (skilled, random): AUC, EER and accuracy, FAR and
    FRR at ``thresholds[aggregate]`` (each aggregate's own EER threshold when not given, or
    when ``thresholds`` has no entry for it). A kind without trials (a tree with no skilled
    forgeries) has no rows."""
    rows = []
    kinds = [kind for kind in ("skilled", "random") if (trials.kinds == kind).any()]
    for name, values in scores.items():
        for kind in kinds:
            mask = trials.of_kind(kind)
            threshold = None if thresholds is None else thresholds.get(name)
            report = verification_report(values[mask], trials.labels[mask], threshold)
            rows.append({"aggregate": name, "forgery": kind, **report})
    return rows
