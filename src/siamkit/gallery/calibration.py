"""The open-set threshold of a gallery: the cosine above which a probe is taken as enrolled.

The contract: the rate asked for (``far``, default 1%) is the share of *stranger probes* accepted
(a stranger is accepted when their best score over the enrolled people reaches the threshold) at
the gallery's current size G. :func:`calibrate_model` derives one threshold per gallery size (see
:mod:`siamkit.gallery.openset`) from people the model never trained on: its recipe's validation
people (``folds=0``), or every training + validation person through cross-fitted models
(``folds=K``, see :mod:`siamkit.gallery.crossfit`). It stores the table, the FAR interval the
calibration data support and a warning when they cannot support the rate asked, in the model
folder's ``config.json`` (``extra["gallery_threshold"]``), where
:func:`siamkit.gallery.images.cosine_threshold` finds the threshold for a gallery's size.
``extra["gallery_threshold"]["cosine"]`` is the size-1 threshold (a pair rate), which folders
calibrated before the per-size table also hold: those keep working with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from siamkit.errors import CheckpointError, DataError
from siamkit.gallery import unit_vectors
from siamkit.gallery.openset import (
    KEY,
    SIZES,
    SUPPORT_FACTOR,
    probe_scores,
    size_table,
    support_warning,
)
from siamkit.model import load, update_config


def threshold_at_far(impostor_scores: Any, far: float = 0.01) -> float:
    """The lowest threshold accepting at most ``far`` of the impostor scores (``score >= t``)."""
    if not 0 <= far < 1:
        raise DataError(f"far must be in [0, 1), got {far}")
    # float32, as the gallery's scores are: the next float32 up is above every rejected score
    top = np.sort(np.asarray(impostor_scores, dtype=np.float32).ravel())[::-1]
    if not len(top):
        raise DataError("no impostor scores to calibrate a threshold on")
    allowed = int(np.floor(far * len(top)))  # impostors that may be accepted
    return float(np.nextafter(top[allowed], np.float32(np.inf)))


def far_interval(accepted: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact binomial) interval of a false-accept rate seen as ``accepted`` of
    ``trials`` impostor comparisons, at two-sided ``confidence``.

    It assumes independent comparisons: impostor pairs among few people share those people, so
    the true uncertainty of a threshold calibrated on them is wider than this.
    """
    from scipy.stats import beta

    if trials < 1 or not 0 <= accepted <= trials:
        raise DataError(
            f"far_interval: need 0 <= accepted <= trials, trials >= 1; got {accepted} of {trials}"
        )
    if not 0 < confidence < 1:
        raise DataError(f"far_interval: confidence must be in (0, 1), got {confidence}")
    tail = (1 - confidence) / 2
    low = 0.0 if accepted == 0 else float(beta.ppf(tail, accepted, trials - accepted + 1))
    high = 1.0 if accepted == trials else float(beta.ppf(1 - tail, accepted + 1, trials - accepted))
    return low, high


def far_support(accepted: int, trials: int, far: float) -> dict[str, Any]:
    """What ``accepted`` false accepts in ``trials`` impostor trials support for the rate
    ``far`` asked: ``{"far", "accepted", "trials", "far_low", "far_high", "supported"}``, the
    Clopper-Pearson 95% interval (:func:`far_interval`) and whether its upper end stays within
    :data:`~siamkit.gallery.openset.SUPPORT_FACTOR` times ``far`` (the criterion of the open-set
    gallery thresholds and of the signature thresholds per K)."""
    low, high = far_interval(accepted, trials)
    return {
        "far": far, "accepted": accepted, "trials": trials, "far_low": low, "far_high": high,
        "supported": high <= SUPPORT_FACTOR * far,
    }  # fmt: skip


def rule_support(accepted: int, trials: int, rule: str) -> dict[str, Any]:
    """What ``accepted`` false accepts in ``trials`` support for a threshold chosen by ``rule``:
    :func:`far_support` for a ``far<=X`` rule, else the same keys with the interval only
    (``far`` and ``supported`` ``None``)."""
    kind, _, target = rule.partition("<=")
    if kind == "far":
        return far_support(accepted, trials, float(target))
    low, high = far_interval(accepted, trials)
    return {
        "far": None, "accepted": accepted, "trials": trials, "far_low": low, "far_high": high,
        "supported": None,
    }  # fmt: skip


def least_supported_far(trials: int) -> float:
    """About the smallest rate ``trials`` impostor trials can support (a hint for warnings)."""
    return SUPPORT_FACTOR / trials


def probe_far(pair_far: float, enrolled: int) -> float:
    """The most a stranger probed against ``enrolled`` people can be falsely accepted when each
    comparison accepts with ``pair_far``: ``enrolled x pair_far`` capped at 1, whatever the
    dependence between the comparisons (Boole's inequality; independent ones would give
    ``1 - (1 - pair_far) ** enrolled``, just under it)."""
    if not 0 <= pair_far <= 1 or enrolled < 0:
        raise DataError(
            f"probe_far: need pair_far in [0, 1] and enrolled >= 0, got {pair_far}, {enrolled}"
        )
    return min(1.0, enrolled * pair_far)


def impostor_cosines(embeddings: Any, labels: Any) -> np.ndarray:
    """Cosine similarity of every pair of items with different labels."""
    x, y = unit_vectors(embeddings), np.asarray(labels)
    i, j = np.triu_indices(len(y), k=1)
    different = y[i] != y[j]
    return np.einsum("nd,nd->n", x[i[different]], x[j[different]])


def calibrate_groups(
    groups: Sequence[tuple[Any, Any]], far: float = 0.01, sizes: Sequence[int] = SIZES
) -> dict[str, Any]:
    """The per-size open-set calibration of ``groups`` of (embeddings, labels), each the people
    one model never trained on: ``{"cosine" (size 1), "far", "contract", "people", "pairs",
    "trials", "sizes": [rows of :class:`~siamkit.gallery.openset.SizedThreshold`], "warning"}``;
    ``warning`` (or None) says when the data cannot support the rate asked (from the size-1
    row; the stranger probes are the same at every size, and each row says if it is
    extrapolated)."""
    scored = [probe_scores(x, y) for x, y in groups]
    table = size_table(scored, far, sorted({1, *sizes}))
    pairs = sum(len(impostor_cosines(x, y)) for x, y in groups)
    return {
        "cosine": table[0]["cosine"],
        "far": far,
        "contract": "stranger probes accepted at the gallery's size",
        "people": sum(len(np.unique(np.asarray(y))) for _, y in groups),
        "pairs": pairs,
        "trials": sum(s.probes for s in scored),
        "groups": len(scored),
        "sizes": table,
        "warning": support_warning(table[0]),
    }


def calibrate_model(
    folder: str | Path,
    far: float = 0.01,
    data_dir: str | Path | None = None,
    folds: int = 0,
    epochs: int | None = None,
    work_dir: str | Path | None = None,
    sizes: Sequence[int] = SIZES,
    show_progress: bool = False,
) -> dict:
    """Set the gallery thresholds (one per gallery size) of the model in ``folder``.

    ``folds=0``: on the recipe's validation people, scored by the model itself (no training).
    ``folds=K >= 2``: on every training + validation person, each scored by a model trained
    (fine-tuned, for a pre-trained recipe) by the recipe without that person's fold, for
    ``epochs`` (default: the recipe's); the folds' work goes to ``work_dir`` (default
    ``<folder>.crossfit`` beside the model folder) and an interrupted run resumes there.
    Returns (and stores in ``config.json``) what :func:`calibrate_groups` returns, plus
    ``folds`` and ``epochs``.
    """
    from siamkit.data.datasets import build_dataset
    from siamkit.evaluation.embedding import embed_all

    folder = Path(folder)
    model = load(folder)
    raw = model.config.extra.get("recipe", {})
    data = raw.get("data")
    if not data:
        raise CheckpointError(
            f"{folder}: no training recipe recorded in config.json; cannot find validation people"
        )
    if folds:
        from siamkit.gallery.crossfit import crossfit_groups
        from siamkit.recipe_schema import parse_recipe

        recipe = parse_recipe(raw, f"{folder}/config.json recipe")
        work = Path(work_dir) if work_dir else folder.with_name(folder.name + ".crossfit")
        groups = crossfit_groups(recipe, folds, work, epochs, data_dir, show_progress)
    else:
        splits = build_dataset(
            data["name"], data_dir or raw.get("data_dir"), **data.get("params", {})
        )
        val = splits.val.require_nonempty("the recipe's validation split")
        groups = [(embed_all(model.network, val.items).numpy(), val.labels.numpy())]
    found = calibrate_groups(groups, far, sizes) | {"folds": folds, "epochs": epochs}
    update_config(folder, extra={KEY: found})
    return found
