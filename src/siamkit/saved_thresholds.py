"""Thresholds a model folder saved for reference-set verification, read without torch (shared by
``siamkit verify --references``, the server and the torch-free runtime)."""

from __future__ import annotations

from typing import Any


def saved_reference_threshold(extra: dict[str, Any], k: int, aggregate: str) -> float | None:
    """The threshold a model saved for ``k`` references and ``aggregate``: the one chosen on
    validation writers for that K (or the nearest saved K), else the model's main reference
    thresholds, else ``None``."""
    by_k = {int(key): value for key, value in extra.get("reference_thresholds_by_k", {}).items()}
    if by_k:
        chosen = by_k[min(by_k, key=lambda saved: (abs(saved - k), saved))]
    else:
        chosen = extra.get("reference_thresholds", {})
    value = chosen.get(aggregate)
    return None if value is None else float(value)
