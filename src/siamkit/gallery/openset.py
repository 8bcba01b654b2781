"""Open-set thresholds per stranger probe, at the gallery's size.

A stranger (someone not enrolled) is accepted when their best score over the G enrolled people
is at or above the threshold. The rate a user asks for (``far``) is the share of stranger probes
accepted at the gallery's current size G, so the threshold depends on G: with G independent
impostor comparisons per probe, a threshold accepting ``far`` of impostor *pairs* accepts
``1 - (1 - far) ** G`` of the strangers.

Calibration data are *groups*: the embeddings of people one model never trained on (e.g. one
cross-fitted fold, see :mod:`siamkit.gallery.crossfit`). Within a group every image is a stranger
probe against the group's other people, each enrolled by one image. For a probe with ``m`` other
people, :func:`stranger_far` computes the exact share of accepted probes over every gallery of
``G <= m`` of those people (each enrolled by a random one of their images), so probes that
resemble many people ("wolves") count as they are, which a per-pair rate hides. For ``G > m`` it
extrapolates with independent comparisons at the pooled pair rate ``a`` of those probes:
``1 - (1 - a) ** G``. That is exact for independent scores and, when some probes are wolves,
an upper bound (the function is concave in ``a``), so the extrapolated thresholds err strict;
per-probe rates are not used there, as their noise over few people would err lenient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from math import comb, log
from typing import Any

import numpy as np

from siamkit.errors import ConfigError, DataError
from siamkit.gallery import unit_vectors

KEY = "gallery_threshold"  # where a model folder's config.extra keeps the calibration

SIZES = (*range(1, 11), 12, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 300, 500, 1000)
SUPPORT_FACTOR = (
    4.0  # warn when the upper end of the FAR interval exceeds this many times the rate asked
)


@dataclass(frozen=True)
class ProbeScores:
    """One group's impostor scores: ``scores[p, q, i]`` is probe ``p``'s cosine with image ``i``
    of its ``q``-th other person (``nan`` pads people with fewer images)."""

    scores: np.ndarray

    @property
    def probes(self) -> int:
        return self.scores.shape[0]

    @property
    def others(self) -> int:
        return self.scores.shape[1]


def probe_scores(embeddings: Any, labels: Any) -> ProbeScores:
    """Every image of a group as a stranger probe against the group's other people."""
    x, y = unit_vectors(embeddings), np.asarray(labels)
    people = np.unique(y)
    if len(people) < 2:
        raise DataError(f"open-set calibration: a group needs >= 2 people, got {len(people)}")
    most = max(int(np.sum(y == p)) for p in people)
    # the same float32 arithmetic as impostor_cosines, so a threshold sits exactly above a score
    ii, jj = np.nonzero(y[:, None] != y[None, :])
    cos = np.full((len(y), len(y)), np.nan, dtype=np.float32)
    cos[ii, jj] = np.einsum("nd,nd->n", x[ii], x[jj])
    out = np.full((len(y), len(people) - 1, most), np.nan, dtype=np.float32)
    for n, person in enumerate(people):
        probes = np.flatnonzero(y == person)
        for slot, other in enumerate(np.delete(people, n)):
            cols = np.flatnonzero(y == other)
            out[probes, slot, : len(cols)] = cos[np.ix_(probes, cols)]
    return ProbeScores(out)


def _acceptance(group: ProbeScores, t: float) -> np.ndarray:
    """(probes, others): the share of each other person's images scoring >= ``t``."""
    s = group.scores
    with np.errstate(invalid="ignore"):
        return (s >= t).sum(axis=2) / np.sum(~np.isnan(s), axis=2)


def _accepted_over_subsets(accept: np.ndarray, size: int) -> np.ndarray:
    """Per probe: P(best of ``size`` random distinct others is accepted), exactly, through the
    elementary symmetric polynomial of the rejection probabilities."""
    reject = 1.0 - accept
    m = reject.shape[1]
    e = np.zeros((len(reject), size + 1))
    e[:, 0] = 1.0
    for q in range(m):
        e[:, 1:] = e[:, 1:] + e[:, :-1] * reject[:, q : q + 1]
    return 1.0 - e[:, size] / comb(m, size)


def stranger_far(groups: Sequence[ProbeScores], t: float, size: int) -> float:
    """Share of stranger probes accepted at threshold ``t`` by a gallery of ``size`` people."""
    if size < 1:
        raise DataError(f"stranger_far: gallery size must be >= 1, got {size}")
    rates, pooled = [], []
    for group in groups:
        accept = _acceptance(group, t)
        if size <= group.others:
            rates.append(_accepted_over_subsets(accept, size))
        else:  # extrapolated: independent comparisons at the pooled pair rate (see above)
            rates.append(np.full(group.probes, np.nan))
            pooled.append(accept.ravel())
    rates = np.concatenate(rates)
    if pooled:
        pair = float(np.concatenate(pooled).mean())
        rates[np.isnan(rates)] = 1.0 - (1.0 - pair) ** size
    return float(rates.mean())


def threshold_at_stranger_far(groups: Sequence[ProbeScores], far: float, size: int) -> float:
    """The lowest threshold accepting at most ``far`` of the stranger probes at gallery ``size``."""
    if not 0 <= far < 1:
        raise DataError(f"far must be in [0, 1), got {far}")
    values = np.unique(np.concatenate([g.scores[~np.isnan(g.scores)] for g in groups]))
    if not len(values):
        raise DataError("no impostor scores to calibrate a threshold on")
    # the lowest threshold of a rate sits just above a rejected score (or at the lowest score)
    candidates = np.append(values[:1], np.nextafter(values, np.float32(np.inf)))
    lo, hi = 0, len(candidates) - 1  # stranger_far is non-increasing in t; hi always passes
    while lo < hi:
        mid = (lo + hi) // 2
        if stranger_far(groups, float(candidates[mid]), size) <= far:
            hi = mid
        else:
            lo = mid + 1
    return float(candidates[lo])


@dataclass(frozen=True)
class SizedThreshold:
    """The threshold for galleries of ``size`` people and what the calibration data support:
    ``far_low``-``far_high`` is the Clopper-Pearson 95% interval of the stranger FAR, from
    ``accepted`` of ``trials`` stranger probes; ``extrapolated`` when ``size`` exceeds the people
    a calibration probe was compared with."""

    size: int
    cosine: float
    far: float
    accepted: int
    trials: int
    far_low: float
    far_high: float
    extrapolated: bool
    supported: bool


def sized_threshold(groups: Sequence[ProbeScores], far: float, size: int) -> SizedThreshold:
    """The threshold at ``far`` per stranger probe for a gallery of ``size``, with its interval."""
    from siamkit.gallery.calibration import far_support

    t = threshold_at_stranger_far(groups, far, size)
    trials = sum(g.probes for g in groups)
    accepted = int(round(stranger_far(groups, t, size) * trials))
    support = far_support(accepted, trials, far)
    extrapolated = size > min(g.others for g in groups)
    return SizedThreshold(
        size, t, far, accepted, trials, support["far_low"], support["far_high"], extrapolated,
        support["supported"],
    )  # fmt: skip


def size_table(
    groups: Sequence[ProbeScores], far: float, sizes: Sequence[int] = SIZES
) -> list[dict[str, Any]]:
    """:func:`sized_threshold` for each gallery size, as JSON-able rows."""
    if not groups:
        raise DataError("open-set calibration: no groups of scores")
    return [asdict(sized_threshold(groups, far, s)) for s in sorted(set(sizes))]


def support_warning(row: dict[str, Any]) -> str | None:
    """A sentence when the calibration data cannot support the asked rate at this size."""
    if row["extrapolated"]:
        return (
            f"a gallery of {row['size']} people is larger than the calibration data's galleries: "
            "its threshold is extrapolated (independent comparisons at the pooled pair rate)"
        )
    if row["far_high"] > SUPPORT_FACTOR * row["far"]:
        from siamkit.gallery.calibration import least_supported_far

        least = least_supported_far(row["trials"])
        return (
            f"{row['trials']} stranger probes support a FAR of {row['far_low']:.2%}-"
            f"{row['far_high']:.2%} per probe at gallery size {row['size']}, not the "
            f"{row['far']:.2%} asked: calibrate on more people (e.g. --folds 4) or ask for "
            f"about {least:.1%} or more"
        )
    return None


def threshold_for_size(calibration: dict[str, Any], size: int) -> dict[str, Any]:
    """The stored table's threshold for a gallery of ``size`` people: the row of that size, or
    the cosine interpolated linearly in log(size) between the two nearest sizes (with the larger
    one's interval), or the largest size's row with a warning beyond the table. Returns the row
    plus ``gallery_size``, ``interpolated`` and ``warning``."""
    rows = sorted(calibration.get("sizes", []), key=lambda r: r["size"])
    if not rows:
        raise DataError("gallery calibration has no per-size table (calibrated by an old version)")
    size = max(int(size), 1)
    above = [r for r in rows if r["size"] >= size]
    below = [r for r in rows if r["size"] <= size]
    if not above:
        row = dict(rows[-1])
        row |= {"gallery_size": size, "interpolated": False}
        row["warning"] = (
            f"the gallery has {size} people, more than the largest calibrated size "
            f"({rows[-1]['size']}): its threshold is too lenient; re-run gallery-threshold"
        )
        return row
    hi = dict(above[0])
    if hi["size"] == size or not below:
        return hi | {"gallery_size": size, "interpolated": False, "warning": support_warning(hi)}
    lo = below[-1]
    w = (log(size) - log(lo["size"])) / (log(hi["size"]) - log(lo["size"]))
    hi["cosine"] = float(lo["cosine"] + w * (hi["cosine"] - lo["cosine"]))
    return hi | {"gallery_size": size, "interpolated": True, "warning": support_warning(hi)}


def gallery_cosine(
    calibration: dict[str, Any] | None,
    pair_threshold: float | None,
    head: str,
    normalized: bool,
    size: int | None = None,
) -> float | None:
    """The cosine below which a probe is "unknown", from what a model folder's config holds.

    ``calibration`` is the stored gallery calibration (``config.extra[KEY]``,
    see :func:`siamkit.gallery.calibration.calibrate_model`): its threshold for a gallery of
    ``size`` people when given and the calibration has a per-size table
    (:func:`threshold_for_size`), else its size-1 (pair) threshold. Without one, the model's
    ``pair_threshold`` as a cosine: a cosine head's as it is, a euclidean head's on L2-normalised
    embeddings (``normalized``) turned from ``-d`` to ``1 - d^2 / 2``; ``None`` without a
    threshold. Raises :class:`ConfigError` for
    a head whose scale has no cosine equivalent."""
    if calibration is not None:
        if size is not None and calibration.get("sizes"):
            return float(threshold_for_size(calibration, size)["cosine"])
        return float(calibration["cosine"])
    if pair_threshold is None:
        return None
    if head == "cosine":
        return float(pair_threshold)
    if head == "euclidean" and normalized:
        return float(1 - pair_threshold**2 / 2)  # |a - b|^2 = 2 - 2 cos for unit vectors
    raise ConfigError(
        f"the model's threshold is on its {head!r} head's scale, which has no cosine equivalent; "
        "pass a cosine threshold explicitly"
    )
