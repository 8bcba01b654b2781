"""Calibrated match probabilities: a monotone map from a head's score to P(same), with an interval.

A score says which pair is more alike; a probability says how often pairs scored like this one
are the same class. :func:`fit_calibrator` learns that map on held-out labelled pairs of classes
never seen in training (the validation split): Platt scaling (a logistic curve on the score) and
isotonic regression (a non-decreasing step-wise curve), the one with the lower cross-validated
log-loss on those pairs is kept. A bootstrap of the calibration pairs gives each probability an
interval (5-95% of the refitted maps), so ``0.93 (0.88-0.96)`` shows how much the calibration
data supports the figure.

The fitted :class:`Calibrator` is plain JSON (Platt: two floats; isotonic: its breakpoints; the
band: three arrays on a grid of scores) saved in a model folder's ``config.json`` under
``extra["calibration"]`` (pairs) and ``extra["calibration_by_k"]`` (reference sets: one map per
K and aggregate). Reading and applying it needs numpy only (the torch-free runtime uses it);
fitting needs scikit-learn.

Example::

    cal = fit_calibrator(val_scores, val_labels)
    p, low, high = cal.probability([0.71])
    expected_calibration_error(cal.predict(test_scores), test_labels)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from siamkit.errors import CheckpointError, DataError

Method = Literal["platt", "isotonic"]
METHODS: tuple[Method, ...] = ("platt", "isotonic")
FORMAT = 1
NOT_CALIBRATED = (
    "this model is not calibrated (no probability map in its config.json); run "
    "`siamkit calibrate MODEL` to fit one on its recipe's validation split"
)


def _arrays(scores: Any, labels: Any | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if not np.isfinite(s).all():
        raise DataError("calibration: scores contain NaN or infinite values")
    if labels is None:
        return s, None
    y = np.asarray(labels, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise DataError(f"calibration: {len(s)} scores but {len(y)} labels")
    if not np.isin(y, (0.0, 1.0)).all():
        raise DataError("calibration: labels must be 0 (different) or 1 (same)")
    return s, y


# --- metrics ---------------------------------------------------------------------------------


def reliability_bins(probabilities: Any, labels: Any, bins: int = 15) -> dict[str, np.ndarray]:
    """Equal-width bins of [0, 1]: per bin the pair count, mean probability and fraction same
    (NaN for empty bins). The last bin includes 1.0."""
    p, y = _arrays(probabilities, labels)
    index = np.clip((p * bins).astype(int), 0, bins - 1)
    count = np.bincount(index, minlength=bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(index, weights=p, minlength=bins) / count
        frac = np.bincount(index, weights=y, minlength=bins) / count
    return {"count": count, "mean_probability": mean_p, "fraction_same": frac}


def expected_calibration_error(probabilities: Any, labels: Any, bins: int = 15) -> float:
    """ECE: the pair-weighted mean of |fraction same - mean probability| over ``bins``
    equal-width bins of [0, 1]."""
    b = reliability_bins(probabilities, labels, bins)
    used = b["count"] > 0
    gaps = np.abs(b["fraction_same"][used] - b["mean_probability"][used])
    return float((b["count"][used] * gaps).sum() / b["count"].sum())


def brier_score(probabilities: Any, labels: Any) -> float:
    """The mean squared difference between the probability and the 0/1 label."""
    p, y = _arrays(probabilities, labels)
    return float(np.mean((p - y) ** 2))


def log_loss(probabilities: Any, labels: Any, eps: float = 1e-6) -> float:
    """The mean negative log-likelihood of the labels (probabilities clipped to [eps, 1-eps])."""
    p, y = _arrays(probabilities, labels)
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def calibration_metrics(probabilities: Any, labels: Any) -> dict[str, float]:
    """ECE (15 bins), Brier score and log-loss of ``probabilities`` against 0/1 ``labels``."""
    return {
        "ece": expected_calibration_error(probabilities, labels),
        "brier": brier_score(probabilities, labels),
        "log_loss": log_loss(probabilities, labels),
    }


def ece_floor(probabilities: Any, draws: int = 20, seed: int = 0) -> float:
    """The mean ECE of ``probabilities`` when labels are drawn from them (perfect calibration):
    the sampling noise below which a measured ECE on this many pairs cannot go."""
    p, _ = _arrays(probabilities)
    rng = np.random.default_rng(seed)
    return float(np.mean([
        expected_calibration_error(p, rng.random(len(p)) < p) for _ in range(draws)
    ]))  # fmt: skip


def naive_probability(scores: Any, head: str) -> np.ndarray:
    """The score read as a probability through its head's documented range, before any
    calibration: ``learned`` (a sigmoid) as it is; ``cosine`` (s + 1) / 2; ``euclidean``
    (score = -distance) 1 - distance / 2 clipped to [0, 1], the linear map of the distance range
    of unit-norm embeddings [0, 2] onto [1, 0]. Reference-set scores use their head's map."""
    s, _ = _arrays(scores)
    if head == "learned":
        return np.clip(s, 0.0, 1.0)
    if head == "cosine":
        return np.clip((s + 1.0) / 2.0, 0.0, 1.0)
    if head == "euclidean":
        return np.clip(1.0 + s / 2.0, 0.0, 1.0)
    raise DataError(f"no naive probability for head {head!r}: expected learned, cosine, euclidean")


# --- the map ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probability:
    """Probabilities of "same" and their bootstrap interval (arrays of one shape)."""

    p: np.ndarray
    low: np.ndarray
    high: np.ndarray

    def __iter__(self):
        return iter((self.p, self.low, self.high))

    def text(self, i: int = 0) -> str:
        """``"p=0.93 (0.88-0.96)"`` for pair ``i`` (4 decimals below 0.01 or above 0.99)."""
        p, low, high = (_shown(float(v[i])) for v in (self.p, self.low, self.high))
        return f"p={p} ({low}-{high})"


def _shown(value: float) -> str:
    return f"{value:.2f}" if 0.01 <= value <= 0.99 else f"{value:.4f}"


@dataclass(frozen=True)
class Calibrator:
    """A fitted score -> P(same) map (non-decreasing), and its bootstrap band.

    ``params``: Platt ``{"a", "b"}`` with p = 1 / (1 + exp(-(a * s + b))), a >= 0; isotonic
    ``{"x", "y"}`` breakpoints, linear between them and flat outside. ``band``: ``grid`` of
    scores with the ``low`` and ``high`` percentiles of the bootstrap maps at each.
    """

    method: Method
    params: dict[str, Any]
    band: dict[str, list[float]]
    pairs: int
    selection: dict[str, float] = field(default_factory=dict)  # method -> CV log-loss
    level: tuple[float, float] = (5.0, 95.0)

    def predict(self, scores: Any) -> np.ndarray:
        """P(same) of each score, kept within [f, 1 - f] with f = 0.5 / (pairs + 1): no more
        certainty than the calibration pairs can support."""
        s, _ = _arrays(scores)
        floor = _floor(self.pairs)
        return np.clip(_apply(self.method, self.params, s), floor, 1 - floor)

    def interval(self, scores: Any) -> tuple[np.ndarray, np.ndarray]:
        """The bootstrap band (low, high) at each score (interpolated on the saved grid)."""
        s, _ = _arrays(scores)
        grid = np.asarray(self.band["grid"])
        return np.interp(s, grid, self.band["low"]), np.interp(s, grid, self.band["high"])

    def probability(self, scores: Any) -> Probability:
        """P(same) with its interval; the interval always contains the probability."""
        p = self.predict(scores)
        low, high = self.interval(scores)
        return Probability(p, np.minimum(low, p), np.maximum(high, p))

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (no pickles); :meth:`from_json` reads it back."""
        return {
            "format": FORMAT, "method": self.method, "params": self.params, "band": self.band,
            "pairs": self.pairs, "selection": self.selection, "level": list(self.level),
        }  # fmt: skip

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Calibrator:
        """The calibrator saved by :meth:`to_json`; a clear error for anything else."""
        try:
            if raw.get("format", FORMAT) > FORMAT:
                raise CheckpointError(
                    f"calibration format {raw['format']} is newer than this siamkit ({FORMAT})"
                )
            method = raw["method"]
            needed = {"platt": ("a", "b"), "isotonic": ("x", "y")}[method]
            params = {k: raw["params"][k] for k in needed}
            band = {k: [float(v) for v in raw["band"][k]] for k in ("grid", "low", "high")}
            return cls(method, params, band, int(raw["pairs"]), dict(raw.get("selection", {})),
                       tuple(raw.get("level", (5.0, 95.0))))  # fmt: skip
        except (KeyError, TypeError, AttributeError) as error:
            raise CheckpointError(
                f"not a valid calibration map ({error!r} missing or wrong)"
            ) from error


def _floor(pairs: int) -> float:
    return 0.5 / (pairs + 1)


def _bounds(pairs: int) -> tuple[float, float]:
    return _floor(pairs), 1 - _floor(pairs)


def _apply(method: str, params: dict[str, Any], s: np.ndarray) -> np.ndarray:
    if method == "platt":
        z = params["a"] * s + params["b"]
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function, overflow-free
    return np.interp(s, params["x"], params["y"])


# --- fitting (scikit-learn) --------------------------------------------------------------------


def _fit_map(method: Method, s: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Fit one method's parameters on scores ``s`` and labels ``y`` (both classes present)."""
    floor = _floor(len(y))  # never claim certainty the pairs cannot support
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e6, solver="newton-cholesky", max_iter=100).fit(s[:, None], y)
        a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        if a < 0:  # scores that do not rank: the constant base rate (still non-decreasing)
            a, b = 0.0, float(np.log(y.mean() / (1 - y.mean())))
        return {"a": a, "b": b}
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=floor, y_max=1 - floor, out_of_bounds="clip").fit(s, y)
    return {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}


def _check_pairs(s: np.ndarray, y: np.ndarray, folds: int) -> None:
    counts = (int((y == 0).sum()), int((y == 1).sum()))
    if min(counts) < max(folds, 2):
        raise DataError(
            f"calibration needs at least {max(folds, 2)} same and different pairs; got "
            f"{counts[1]} same and {counts[0]} different"
        )


def cross_validated_log_loss(
    s: np.ndarray, y: np.ndarray, method: Method, folds: int = 5, seed: int = 0
) -> float:
    """The log-loss of ``method`` fitted on k-1 folds and scored on the held-out fold."""
    from sklearn.model_selection import StratifiedKFold

    losses = []
    for train, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(s, y):
        params = _fit_map(method, s[train], y[train])
        losses.append(log_loss(_apply(method, params, s[held]), y[held]) * len(held))
    return float(sum(losses) / len(y))


def fit_calibrator(
    scores: Any,
    labels: Any,
    methods: Sequence[Method] = METHODS,
    folds: int = 5,
    resamples: int = 200,
    grid_size: int = 101,
    seed: int = 0,
) -> Calibrator:
    """Fit P(same | score) on labelled calibration pairs (validation classes, never the test).

    Each of ``methods`` is scored by ``folds``-fold cross-validated log-loss on these pairs; the
    best is refitted on all of them. The band: the method refitted on ``resamples`` bootstrap
    resamples, 5th and 95th percentiles on ``grid_size`` score quantiles.
    """
    s, y = _arrays(scores, labels)
    _check_pairs(s, y, folds)
    unknown = set(methods) - set(METHODS)
    if unknown or not methods:
        raise DataError(f"calibration methods must be some of {METHODS}, got {list(methods)}")
    selection = {m: cross_validated_log_loss(s, y, m, folds, seed) for m in methods}
    method = min(selection, key=selection.__getitem__)
    params = _fit_map(method, s, y)
    grid = np.unique(np.quantile(s, np.linspace(0, 1, grid_size)))
    rng = np.random.default_rng(seed)
    curves = []
    for _ in range(resamples):
        pick = rng.integers(0, len(s), len(s))
        if 0 < y[pick].sum() < len(pick):
            curves.append(_apply(method, _fit_map(method, s[pick], y[pick]), grid))
    level = (5.0, 95.0)
    low, high = np.clip(np.percentile(np.array(curves), level, axis=0), *_bounds(len(s)))
    band = {"grid": grid.tolist(), "low": low.tolist(), "high": high.tolist()}
    return Calibrator(method, params, band, len(s), selection, level)


def calibration_report(
    calibrator: Calibrator, scores: Any, labels: Any, head: str
) -> dict[str, dict[str, float]]:
    """ECE, Brier and log-loss on held-out pairs ``before`` (the naive reading of the score, see
    :func:`naive_probability`) and ``after`` calibration, with the method and pair counts."""
    s, y = _arrays(scores, labels)
    after = calibrator.predict(s)
    return {
        "before": calibration_metrics(naive_probability(s, head), y),
        "after": calibration_metrics(after, y),
        "ece_floor": ece_floor(after),  # type: ignore[dict-item]
        "method": calibrator.method,  # type: ignore[dict-item]
        "calibration_pairs": calibrator.pairs,  # type: ignore[dict-item]
        "test_pairs": len(y),  # type: ignore[dict-item]
    }


def reliability_diagram(
    path: str | Path, labels: Any, curves: dict[str, Any], title: str = "Reliability"
) -> Path:
    """Save a reliability diagram PNG: for each named probability array of ``curves`` the
    fraction same against the mean probability per bin (15 equal-width bins), with its ECE."""
    from siamkit.evaluation.plots import reliability_plot

    binned = {
        f"{name} (ECE {expected_calibration_error(p, labels):.3f})": reliability_bins(p, labels)
        for name, p in curves.items()
    }
    return reliability_plot(binned, path, title)


# --- stored in a model folder ------------------------------------------------------------------


def saved_calibration(
    extra: dict[str, Any], k: int | None = None, aggregate: str = "mean"
) -> Calibrator | None:
    """The map a model saved in ``config.json``'s extra: for pairs (``k`` None), or for ``k``
    references and ``aggregate`` (the nearest saved K; the pair map for K = 1 when no per-K map
    was saved); ``None`` when not calibrated."""
    if k is None:
        raw = extra.get("calibration")
        return None if raw is None else Calibrator.from_json(raw)
    by_k = {int(key): value for key, value in extra.get("calibration_by_k", {}).items()}
    if not by_k:  # one reference: every aggregate is the pair score
        return saved_calibration(extra) if k == 1 else None
    chosen = by_k[min(by_k, key=lambda saved: (abs(saved - k), saved))].get(aggregate)
    return None if chosen is None else Calibrator.from_json(chosen)


def require_calibration(calibrator: Calibrator | None) -> Calibrator:
    """``calibrator``, or the "not calibrated" error when it is ``None``."""
    if calibrator is None:
        raise CheckpointError(NOT_CALIBRATED)
    return calibrator


def calibrate_run(
    val: tuple[Any, Any],
    test: tuple[Any, Any],
    head: str,
    plot_path: str | Path | None = None,
    seed: int = 0,
    title: str = "Reliability on unseen test classes",
) -> tuple[Calibrator | None, dict[str, Any]]:
    """Fit on the validation (scores, labels), report before/after on the test (scores, labels)
    and, when ``plot_path`` is given, save the test reliability diagram there. Too few validation
    pairs to fit a map leave the model uncalibrated (``None``) with the reason in the report, so
    a small run still trains and saves."""
    try:
        calibrator = fit_calibrator(*val, seed=seed)
    except DataError as error:
        return None, {"skipped": str(error)}
    report = calibration_report(calibrator, *test, head)
    if plot_path is not None:
        s, y = _arrays(*test)
        curves = {"before": naive_probability(s, head), "after": calibrator.predict(s)}
        report["plot"] = str(reliability_diagram(plot_path, y, curves, title))  # type: ignore
    return calibrator, report


def fit_reference_calibrators(
    scored: dict[int, tuple[Any, dict[str, Any]]], seed: int = 0, resamples: int = 200
) -> dict[int, dict[str, Calibrator]]:
    """One map per K and aggregate from validation reference-set trials: ``scored`` maps K to
    (trials with ``labels``, aggregate -> scores), as
    :meth:`siamkit.evaluation.signature_eval.EmbeddedSignatures.scores` returns. Every trial
    counts (genuine, skilled and random forgeries), as a questioned signature comes."""
    return {
        k: {
            name: fit_calibrator(values, trials.labels, seed=seed, resamples=resamples)
            for name, values in scores.items()
        }
        for k, (trials, scores) in scored.items()
    }


def store_calibration(
    folder: str | Path,
    pairs: Calibrator | None = None,
    by_k: dict[int, dict[str, Calibrator]] | None = None,
    report: dict[str, Any] | None = None,
) -> Path:
    """Write the maps into ``folder/config.json``'s extra (``calibration``, ``calibration_by_k``
    and the before/after ``calibration_report``), keeping everything else."""
    from siamkit.model import update_config

    extra: dict[str, Any] = {}
    if pairs is not None:
        extra["calibration"] = pairs.to_json()
    if by_k is not None:
        extra["calibration_by_k"] = {
            str(k): {name: c.to_json() for name, c in maps.items()} for k, maps in by_k.items()
        }
    if report is not None:
        extra["calibration_report"] = report
    update_config(folder, extra=extra)
    return Path(folder)
