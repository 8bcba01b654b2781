"""``siamkit threshold MODEL --rule RULE``: re-set a trained model folder's decision threshold(s)
by a target on its recipe's validation split, never on its test split.

``siamkit train`` already sets the threshold by the recipe's ``evaluation.threshold_rule``; this
changes it afterwards without retraining, e.g. when a deployment asks for ``far<=0.01`` instead
of the equal error rate. The rule is any of
:data:`~siamkit.evaluation.verification.THRESHOLD_RULES`. The validation pairs are drawn as
``siamkit train`` and ``siamkit calibrate`` draw them (:func:`siamkit.calibrate_model.
held_out_pairs`); a signature model gets one threshold per K and aggregate on its saved
validation writers (:func:`siamkit.evaluation.reference_set.thresholds_by_rule`). With every
threshold comes what the validation data supports: the Clopper-Pearson 95% interval of its false
accept rate and, for a ``far<=X`` rule, whether that interval stays near X (a warning when too
few impostor pairs were seen to promise X). The test split's FAR and FRR at the new threshold
are reported, never used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from siamkit.calibrate_model import embedded_signatures, held_out_pairs, saved_recipe
from siamkit.evaluation.verification import check_threshold_rule, choose_threshold, rates_at
from siamkit.model import load, update_config


def rethreshold_folder(
    folder: str | Path, rule: str, data_dir: str | Path | None = None, seed: int | None = None
) -> dict[str, Any]:
    """Choose ``folder``'s threshold(s) by ``rule`` on its validation split, store them in its
    ``config.json`` (with the rule and the support) and return the report: for a pair model
    ``threshold``, ``previous``, ``validation`` (:func:`pair_threshold_support`) and ``test``
    (accuracy, FAR, FRR at the new threshold); for a signature model ``by_k`` rows per K and
    aggregate (support on the validation writers, FAR/FRR on the test writers)."""
    folder = Path(folder)
    rule = check_threshold_rule(rule)
    model = load(folder)
    recipe = saved_recipe(folder, model)
    seed = recipe.seed if seed is None else seed
    if model.config.extra.get("task") == "signatures":
        return _signatures(model, recipe, folder, data_dir, rule, seed)
    val, test = held_out_pairs(model, recipe, data_dir)
    threshold = choose_threshold(*val, rule)
    support = pair_threshold_support(*val, threshold, rule)
    update_config(
        folder, threshold=threshold, extra={"threshold_rule": rule, "threshold_support": support}
    )
    return {
        "rule": rule, "threshold": threshold, "previous": model.threshold,
        "validation": support, "test": rates_at(*test, threshold),
    }  # fmt: skip


def pair_threshold_support(scores: Any, labels: Any, threshold: float, rule: str) -> dict[str, Any]:
    """What validation pairs (``labels`` 1 = same) support for ``threshold`` chosen by ``rule``:
    ``accepted`` of ``trials`` impostor pairs, ``frr`` of the genuine pairs, the Clopper-Pearson
    95% interval ``far_low``-``far_high`` and, for a ``far<=X`` rule, ``far`` (= X) and
    ``supported``; ``warning`` when the pairs cannot support X. Impostor pairs among few
    classes share those classes, so the true uncertainty is wider than this interval."""
    from siamkit.gallery.calibration import least_supported_far, rule_support

    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.int64).ravel()
    impostors = s[y == 0]
    accepted = int((impostors >= threshold).sum())  # as choose_threshold: score >= t is "same"
    row: dict[str, Any] = {"rule": rule, "threshold": float(threshold), **rates_at(s, y, threshold)}
    row |= rule_support(accepted, len(impostors), rule)
    row["warning"] = None
    if row["supported"] is False:
        row["warning"] = (
            f"{row['trials']} impostor validation pairs support a FAR of "
            f"{row['far_low']:.2%}-{row['far_high']:.2%}, not the {row['far']:.2%} asked: "
            f"validate on more pairs (evaluation.val_pairs) or ask for about "
            f"{least_supported_far(row['trials']):.1%} or more"
        )
    return row


def _signatures(
    model: Any, recipe: Any, folder: Path, data_dir: Any, rule: str, seed: int
) -> dict[str, Any]:
    """Thresholds per K and aggregate on the validation writers, FAR/FRR on the test writers."""
    from siamkit.evaluation.reference_set import thresholds_by_rule
    from siamkit.evaluation.signature_eval import (
        KS,
        evaluate_writers,
        pair_threshold,
        reference_threshold_extra,
    )

    normalisation = model.config.extra.get("reference_normalisation", "none")
    embedded, writers = embedded_signatures(model, recipe, folder, data_dir)
    val = embedded.scores(writers["val"], KS, seed, normalisation=normalisation)
    thresholds, support = thresholds_by_rule(val, rule)
    rows, _ = evaluate_writers(
        embedded, writers["test"], thresholds, KS, normalisation=normalisation
    )
    test = {(r["k"], r["aggregate"]): r for r in rows if r["forgery"] == "skilled"}
    update_config(
        folder, threshold=pair_threshold(thresholds),
        extra=reference_threshold_extra(thresholds, support),
    )  # fmt: skip
    by_k = [
        {**row, "test_far": test[k, a]["far"], "test_frr": test[k, a]["frr"]}
        for k, rows_of_k in support.items()
        for a, row in rows_of_k.items()
    ]
    return {"rule": rule, "by_k": by_k, "aggregate": model.config.extra.get("reference_aggregate")}


def worst_warning(report: dict[str, Any]) -> str | None:
    """The first support warning of a :func:`rethreshold_folder` report, if any."""
    rows = report.get("by_k") or [report.get("validation", {})]
    return next((row["warning"] for row in rows if row.get("warning")), None)
