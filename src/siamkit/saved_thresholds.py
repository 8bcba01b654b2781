"""Thresholds a model folder saved for reference-set verification, read without torch (shared by
``siamkit verify --references``, the server and the torch-free runtime)."""

from __future__ import annotations

from typing import Any


def saved_reference_threshold(extra: dict[str, Any], k: int, aggregate: str) -> float | None:
    """The threshold a model saved for ``k`` references and ``aggregate``: the one chosen on
    validation writers for that K (or the nearest saved K), else the model's main reference
    thresholds, else ``None``."""
    chosen = _nearest_k(extra.get("reference_thresholds_by_k", {}), k)
    if chosen is None:
        chosen = extra.get("reference_thresholds", {})
    value = chosen.get(aggregate)
    return None if value is None else float(value)


SUPPORT_KEY = "reference_threshold_support_by_k"


def saved_reference_support(extra: dict[str, Any], k: int, aggregate: str) -> dict[str, Any] | None:
    """What the validation writers support for the threshold :func:`saved_reference_threshold`
    returns (the same nearest saved K): the row that
    :func:`~siamkit.evaluation.reference_set.threshold_support` stored (``rule``, ``k``,
    ``trials``, ``accepted``, ``far_low``, ``far_high``; with a ``far<=X`` rule also ``far``,
    ``supported`` and ``warning``), or ``None`` for folders saved without the table (before it
    existed) or without that aggregate."""
    chosen = _nearest_k(extra.get(SUPPORT_KEY, {}), k)
    return None if chosen is None else chosen.get(aggregate)


def _nearest_k(by_k: dict[str, Any], k: int) -> Any:
    """The entry of the saved K nearest to ``k`` (the smaller on a tie), ``None`` if empty."""
    table = {int(key): value for key, value in by_k.items()}
    return table[min(table, key=lambda saved: (abs(saved - k), saved))] if table else None
