"""The open-set threshold of a gallery: the cosine above which a probe is taken as enrolled.

A model's own threshold sits at the equal error rate of its validation pairs: right for deciding
one pair, far too lenient for a gallery, where a probe is compared with every enrolled person and
the best impostor score decides. :func:`calibrate_model` sets a stricter one: the cosine that
accepts at most ``far`` (default 1%) of the impostor pairs among the validation people of the
model's recipe (people never trained on), and stores it in the model folder's ``config.json``
(``extra["gallery_threshold"]``), where :func:`siamkit.gallery.images.cosine_threshold` finds it.
With G people enrolled, expect an open-set false-accept rate of up to about G x ``far``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from siamkit.checkpoint import atomic_write_text
from siamkit.errors import CheckpointError, DataError
from siamkit.gallery import unit_vectors
from siamkit.model import CONFIG_FILE, load, read_config

KEY = "gallery_threshold"


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


def calibrate_model(
    folder: str | Path, far: float = 0.01, data_dir: str | Path | None = None
) -> dict:
    """Set the gallery threshold of the model in ``folder`` on its recipe's validation people.

    Returns (and stores in ``config.json``) ``{"cosine", "far", "people", "pairs"}``.
    """
    from siamkit.data.datasets import build_dataset
    from siamkit.evaluation.embedding import embed_all

    folder = Path(folder)
    model = load(folder)
    recipe = model.config.extra.get("recipe", {})
    data = recipe.get("data")
    if not data:
        raise CheckpointError(
            f"{folder}: no training recipe recorded in config.json; cannot find validation people"
        )
    splits = build_dataset(
        data["name"], data_dir or recipe.get("data_dir"), **data.get("params", {})
    )
    val = splits.val.require_nonempty("the recipe's validation split")
    scores = impostor_cosines(embed_all(model.network, val.items).numpy(), val.labels.numpy())
    found = {
        "cosine": threshold_at_far(scores, far),
        "far": far,
        "people": len(val.class_ids()),
        "pairs": len(scores),
    }
    config = read_config(folder)
    config.extra[KEY] = found
    atomic_write_text(folder / CONFIG_FILE, config.model_dump_json(indent=2))
    return found
