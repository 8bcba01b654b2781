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
from siamkit.evaluation.verification import choose_threshold, rates_at, verification_report
from siamkit.saved_thresholds import (  # noqa: F401  (saved_reference_threshold: re-exported)
    saved_reference_support,
    saved_reference_threshold,
)

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


def thresholds_by_rule(
    scored: dict[int, tuple[ReferenceTrials, dict[str, np.ndarray]]], rule: str = "eer"
) -> tuple[dict[int, dict[str, float]], dict[int, dict[str, dict[str, Any]]]]:
    """Per-K, per-aggregate thresholds chosen by ``rule`` (``eer``, ``accuracy``, ``far<=X``,
    ``frr<=X``; see :func:`siamkit.evaluation.verification.choose_threshold`) on genuine vs
    skilled-forgery trials of validation writers (``scored``: K -> (trials, aggregate ->
    scores), as :meth:`siamkit.evaluation.signature_eval.EmbeddedSignatures.scores` returns),
    and what those trials support for each (:func:`threshold_support`: the FAR interval, and
    for a ``far<=X`` rule whether X is supported)."""
    if rule == "f1":
        raise DataError("threshold rule 'f1' applies to sentence pairs, not to signatures")
    thresholds, support = {}, {}
    for k, (trials, scores) in scored.items():
        thresholds[k] = choose_reference_thresholds(scores, trials, rule)
        support[k] = {
            a: threshold_support(values, trials, thresholds[k][a], rule, k, a)
            for a, values in scores.items()
        }
    return thresholds, support


def threshold_support(
    values: np.ndarray, trials: ReferenceTrials, threshold: float, rule: str, k: int, aggregate: str
) -> dict[str, Any]:
    """What validation trials support for one aggregate's threshold chosen by ``rule``.

    The trials are the validation writers' skilled forgeries, each counted once (a forgery is
    questioned against several reference draws: its acceptance is averaged over them, as the
    open-set gallery counts a stranger probe once over its galleries). Returns ``rule``, ``k``,
    ``aggregate``, ``threshold``, ``writers``, ``trials`` (forgeries), ``accepted``,
    ``far_measured`` (the share of forgery trials accepted) and ``far_low``-``far_high``, the
    Clopper-Pearson 95% interval of the FAR; with a ``far<=X`` rule ``far`` (= X) and
    ``supported`` (the gallery's criterion, :func:`siamkit.gallery.calibration.far_support`),
    else ``None`` for both; and ``warning``, a sentence when the trials cannot support X.
    """
    from siamkit.gallery.calibration import rule_support

    skilled = trials.kinds == "skilled"
    if not skilled.any():
        raise DataError("threshold support: the validation trials hold no skilled forgeries")
    accept = np.asarray(values, dtype=np.float64)[skilled] >= threshold  # as choose_threshold
    forgeries, which = np.unique(trials.questioned[skilled], return_inverse=True)
    shares = np.bincount(which, weights=accept) / np.bincount(which)
    accepted, n = int(round(float(shares.sum()))), len(forgeries)
    row: dict[str, Any] = {
        "rule": rule, "k": k, "aggregate": aggregate, "threshold": float(threshold),
        "writers": len(np.unique(trials.writers[skilled])), "far_measured": float(accept.mean()),
    }  # fmt: skip
    row |= rule_support(accepted, n, rule)
    row["warning"] = support_warning(row)
    return row


def support_warning(row: dict[str, Any]) -> str | None:
    """A sentence when a ``far<=X`` threshold's validation trials cannot support X."""
    from siamkit.gallery.calibration import least_supported_far

    if row.get("supported") is not False:
        return None
    return (
        f"{row['trials']} skilled forgeries of {row['writers']} validation writers support a FAR "
        f"of {row['far_low']:.2%}-{row['far_high']:.2%} with K = {row['k']} ({row['aggregate']}), "
        f"not the {row['far']:.2%} asked: calibrate on more writers or ask for about "
        f"{least_supported_far(row['trials']):.1%} or more"
    )


def far_promise(
    support: dict[str, Any], values: np.ndarray, trials: ReferenceTrials
) -> dict[str, Any]:
    """Does a threshold's promise hold on other writers? ``support`` (a
    :func:`threshold_support` row from validation writers) plus the FAR measured at its
    threshold on the skilled forgeries of ``trials`` (e.g. the test writers, scored ``values``
    by the same aggregate): ``test_trials`` (forgeries), ``test_far``, ``test_frr`` (genuine
    trials rejected), ``within_asked`` (``test_far <= far``, ``None`` without a far rule) and
    ``within_interval`` (``test_far <= far_high``)."""
    mask = trials.of_kind("skilled")
    rates = rates_at(values[mask], trials.labels[mask], support["threshold"])
    test_far, asked = rates["far"], support.get("far")
    return {
        **{key: value for key, value in support.items() if key != "warning"},
        "test_trials": len(np.unique(trials.questioned[trials.kinds == "skilled"])),
        "test_far": test_far, "test_frr": rates["frr"],
        "within_asked": None if asked is None else test_far <= asked,
        "within_interval": test_far <= support["far_high"],
    }  # fmt: skip


def with_saved_support(rows: list[dict[str, Any]], extra: dict[str, Any]) -> list[str]:
    """Add ``val_far`` to report ``rows`` (dicts with ``k``, ``aggregate``, ``forgery``, ``far``,
    ``threshold``) decided at thresholds a model folder saved: the FAR interval its validation
    writers' skilled forgeries support (``""`` on random-forgery rows and rows at another
    threshold). Returns notes: the rule and rate asked, each warning saved, and each row whose
    FAR here is above the interval. Rows of a folder saved without the table stay as they are."""
    found = [(row, saved_reference_support(extra, row["k"], row["aggregate"])) for row in rows]
    found = [
        (r, s if s is not None and s["threshold"] == r["threshold"] else None) for r, s in found
    ]
    if all(s is None for _, s in found):
        return []
    notes, asked = [], {s["rule"] for _, s in found if s is not None}
    for row, support in found:
        row["val_far"] = ""
        if support is None or row["forgery"] != "skilled":
            continue
        at_k = "" if support["k"] == row["k"] else f" (K={support['k']})"
        row["val_far"] = f"{support['far_low']:.1%}-{support['far_high']:.1%}{at_k}"
        if support.get("warning") and f"warning: {support['warning']}" not in notes:
            notes.append(f"warning: {support['warning']}")
        if row["far"] > support["far_high"]:
            notes.append(
                f"K = {row['k']} {row['aggregate']}: skilled FAR {row['far']:.1%} here is above "
                f"the validation interval {row['val_far']}: the promise does not hold here"
            )
    head = (
        f"thresholds chosen by {', '.join(sorted(asked))} on the validation writers; val_far: the "
        "95% FAR interval their skilled forgeries support; far: measured on these writers"
    )
    return [head, *notes]
