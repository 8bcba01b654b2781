"""PNG plots of verification results: ROC curve and genuine/impostor score histograms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402


def roc_plot(scores: Any, labels: Any, path: str | Path, title: str = "ROC") -> Path:
    """Save the ROC curve (FAR on x, TAR on y) with the EER line to ``path``."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    fpr, tpr, _ = roc_curve(y, s)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label="model")
    ax.plot([0, 1], [1, 0], ":", color="grey", label="EER line")
    ax.set(
        xlabel="false accept rate", ylabel="true accept rate", title=title, xlim=(0, 1), ylim=(0, 1)
    )
    ax.legend(loc="lower right")
    return _save(fig, path)


def score_histogram(
    scores: Any,
    labels: Any,
    path: str | Path,
    threshold: float | None = None,
    title: str = "Scores",
) -> Path:
    """Save overlaid histograms of genuine (label 1) and impostor (label 0) scores."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(s.min(), s.max(), 40)
    ax.hist(s[y == 1], bins, alpha=0.6, label="same (genuine)")
    ax.hist(s[y == 0], bins, alpha=0.6, label="different (impostor)")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set(xlabel="similarity score (higher = more similar)", ylabel="pairs", title=title)
    ax.legend()
    return _save(fig, path)


def reliability_plot(
    curves: dict[str, dict[str, Any]], path: str | Path, title: str = "Reliability"
) -> Path:
    """Save a reliability diagram: fraction same against mean probability per bin for each named
    curve (bins from :func:`siamkit.calibration.reliability_bins`), the diagonal as perfect
    calibration, and the pairs per bin of the last curve below."""
    fig, (ax, counts) = plt.subplots(
        2, 1, figsize=(4.5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    for name, b in curves.items():
        used = b["count"] > 0
        ax.plot(b["mean_probability"][used], b["fraction_same"][used], "o-", label=name)
    ax.set(ylabel="fraction of pairs that are the same", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize="small")
    last = list(curves.values())[-1]
    edges = np.linspace(0, 1, len(last["count"]) + 1)
    counts.bar(edges[:-1], last["count"], width=np.diff(edges), align="edge", alpha=0.6)
    counts.set(xlabel="predicted probability of same", ylabel="pairs", yscale="log")
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
