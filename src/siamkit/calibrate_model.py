"""``siamkit calibrate MODEL``: fit the probability map of an existing model folder on its
recipe's validation split and store it in the folder (see :mod:`siamkit.calibration`).

The recipe saved in ``config.json``'s extra says which data the model was trained on; the map is
fitted on the validation classes (people, alphabets, writers) or the dev pairs, and reported
before/after on the test classes. Signature models (saved with their writer split) get one map
per K and aggregate, fitted on their validation writers' reference-set trials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from siamkit.calibration import (
    calibrate_run,
    calibration_report,
    fit_reference_calibrators,
    naive_probability,
    reliability_diagram,
    store_calibration,
)
from siamkit.errors import CheckpointError, DataError
from siamkit.model import Model, load


def calibrate_folder(
    folder: str | Path, data_dir: str | Path | None = None, seed: int | None = None
) -> dict[str, Any]:
    """Fit and store ``folder``'s map(s); returns the before/after report on the test split
    (its ``plot``: ``folder/reliability.png``)."""
    folder = Path(folder)
    model = load(folder)
    extra = model.config.extra
    if "recipe" not in extra:
        raise CheckpointError(
            f"{folder}: config.json has no recipe in its extra (it was not saved by siamkit "
            "train), so its validation split is unknown; calibrate it in Python with "
            "siamkit.calibration.fit_calibrator on your own labelled validation pairs"
        )
    from siamkit.recipe import parse_recipe

    recipe = parse_recipe(extra["recipe"], f"{folder}/config.json extra.recipe")
    seed = recipe.seed if seed is None else seed
    plot = folder / "reliability.png"
    if extra.get("task") == "signatures":
        report = _signatures(model, recipe, folder, data_dir, plot, seed)
    else:
        val, test = (_text_pairs if recipe.sentence_pairs else _class_pairs)(
            model, recipe, data_dir
        )
        calibrator, report = calibrate_run(val, test, model.config.head.name, plot, seed)
        if calibrator is None:
            raise DataError(f"{folder}: {report['skipped']}")
        store_calibration(folder, pairs=calibrator, report=_without_plot(report))
    return report


def _without_plot(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "plot"}


def _class_pairs(model: Model, recipe: Any, data_dir: Any) -> tuple[Any, Any]:
    """Validation and test pairs of a class dataset, drawn as ``run_recipe`` draws them."""
    from siamkit.data.datasets import build_dataset
    from siamkit.evaluation.verification import pair_scores

    splits = build_dataset(recipe.data.name, data_dir or recipe.data_dir, **recipe.data.params)
    evaluation, network = recipe.evaluation, model.network
    val = pair_scores(network, splits.val, evaluation.val_pairs, recipe.seed)
    test = pair_scores(network, splits.test, evaluation.test_pairs, recipe.seed + 1)
    return val, test


def _text_pairs(model: Model, recipe: Any, data_dir: Any) -> tuple[Any, Any]:
    """Dev and test sentence pairs with 0/1 labels."""
    from siamkit.text.training import labelled_scores, read_pair_splits

    splits, _ = read_pair_splits(recipe, data_dir)
    network, cut = model.network, splits.label_threshold
    return labelled_scores(network, splits.val, cut), labelled_scores(network, splits.test, cut)


def _signatures(
    model: Model, recipe: Any, folder: Path, data_dir: Any, plot: Path, seed: int
) -> dict[str, Any]:
    """One map per K and aggregate on the saved validation writers; the report on the test
    writers with the model's K and aggregate."""
    from siamkit.data.paths import dataset_dir
    from siamkit.data.signatures import read_signature_tree
    from siamkit.evaluation.signature_eval import KS, EmbeddedSignatures

    extra = model.config.extra
    writers = extra.get("writers")
    if not writers:
        raise CheckpointError(f"{folder}: a signature model without its saved writer split")
    data = read_signature_tree(dataset_dir("signatures", data_dir or recipe.data_dir))
    images = model.prepare(data.paths)
    embedded = EmbeddedSignatures.of(model.network, images, data, writers["val"] + writers["test"])
    normalisation = extra.get("reference_normalisation", "none")
    val = embedded.scores(writers["val"], KS, seed, normalisation=normalisation)
    maps = fit_reference_calibrators(val, seed=seed)
    k = int(extra.get("reference_thresholds_k", 5))
    aggregate = extra.get("reference_aggregate", "mean")
    trials, scores = embedded.scores(writers["test"], (k,), 1000, normalisation=normalisation)[k]
    s, head = scores[aggregate], model.config.head.name
    report = calibration_report(maps[k][aggregate], s, trials.labels, head)
    report.update(k=k, aggregate=aggregate)
    store_calibration(folder, by_k=maps, report=report)
    curves = {"before": naive_probability(s, head), "after": maps[k][aggregate].predict(s)}
    title = f"Signatures, unseen writers, K={k} {aggregate}"
    report["plot"] = str(reliability_diagram(plot, trials.labels, curves, title))
    return report
