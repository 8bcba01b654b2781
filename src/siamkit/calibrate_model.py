"""``siamkit calibrate MODEL``: fit the probability map of an existing model folder on its
recipe's validation split and store it in the folder (see :mod:`siamkit.calibration`).

The recipe saved in ``config.json``'s extra says which data the model was trained on; the map is
fitted on the validation classes (people, alphabets, writers) or the dev pairs, and reported
before/after on the test classes. Signature models (saved with their writer split) get one map
per K and aggregate, fitted on their validation writers' reference-set trials
(:data:`CALIBRATION_DRAWS` reference draws each).
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
from siamkit.data.pairs import regroup_negatives, within_group_share
from siamkit.errors import CheckpointError, ConfigError, DataError
from siamkit.evaluation.verification import pair_scores
from siamkit.model import Model, load


def calibrate_folder(
    folder: str | Path,
    data_dir: str | Path | None = None,
    seed: int | None = None,
    within_share: float | None = None,
) -> dict[str, Any]:
    """Fit and store ``folder``'s map(s); returns the before/after report on the test split
    (its ``plot``: ``folder/reliability.png``). Class datasets are calibrated on
    :func:`draw_calibration_pairs` (``within_share``: see there)."""
    folder = Path(folder)
    model = load(folder)
    recipe = saved_recipe(folder, model)
    seed = recipe.seed if seed is None else seed
    plot = folder / "reliability.png"
    if model.config.extra.get("task") == "signatures":
        report = _signatures(model, recipe, folder, data_dir, plot, seed)
    else:
        mix: dict[str, Any] = {}
        if recipe.sentence_pairs:
            val, test = _text_pairs(model, recipe, data_dir)
        else:
            splits = _class_splits(recipe, data_dir)
            evaluation, network = recipe.evaluation, model.network
            val, mix = draw_calibration_pairs(
                network, splits, evaluation.val_pairs, recipe.seed, within_share
            )
            test = pair_scores(network, splits.test, evaluation.test_pairs, recipe.seed + 1)
        calibrator, report = calibrate_run(val, test, model.config.head.name, plot, seed)
        if calibrator is None:
            raise DataError(f"{folder}: {report['skipped']}")
        report.update(mix)
        store_calibration(folder, pairs=calibrator, report=_without_plot(report))
    return report


def saved_recipe(folder: Path, model: Model) -> Any:
    """The recipe that trained ``model`` (saved in its config's extra by ``siamkit train``); a
    :class:`CheckpointError` for a folder saved without one (its validation split is unknown)."""
    from siamkit.recipe import parse_recipe

    if model.two_tower:
        raise ConfigError(
            f"{folder}: a two-tower model (encoder and encoder_b); siamkit calibrate and siamkit "
            "threshold draw pairs of one kind of input, so its map or threshold is fitted in "
            "Python on cross-modal pairs (siamkit.calibration.fit_calibrator, "
            "siamkit.evaluation.verification.choose_threshold)"
        )
    if "recipe" not in model.config.extra:
        raise CheckpointError(
            f"{folder}: config.json has no recipe in its extra (it was not saved by siamkit "
            "train), so its validation split is unknown; fit a map in Python with "
            "siamkit.calibration.fit_calibrator, or choose a threshold with "
            "siamkit.evaluation.verification.choose_threshold, on your own labelled pairs"
        )
    return parse_recipe(model.config.extra["recipe"], f"{folder}/config.json extra.recipe")


def held_out_pairs(model: Model, recipe: Any, data_dir: Any) -> tuple[Any, Any]:
    """(scores, labels) of the validation and of the test pairs of the model's recipe: pairs of
    its validation and test classes, or its dev and test sentence pairs."""
    return (_text_pairs if recipe.sentence_pairs else _class_pairs)(model, recipe, data_dir)


def embedded_signatures(model: Model, recipe: Any, folder: Path, data_dir: Any) -> Any:
    """The saved validation and test writers of a signature model, embedded once
    (:class:`~siamkit.evaluation.signature_eval.EmbeddedSignatures`), and the writer split."""
    from siamkit.data.paths import dataset_dir
    from siamkit.data.signatures import read_signature_tree
    from siamkit.evaluation.signature_eval import EmbeddedSignatures

    writers = model.config.extra.get("writers")
    if not writers:
        raise CheckpointError(f"{folder}: a signature model without its saved writer split")
    data = read_signature_tree(dataset_dir("signatures", data_dir or recipe.data_dir))
    images = model.prepare(data.paths)
    embedded = EmbeddedSignatures.of(model.network, images, data, writers["val"] + writers["test"])
    return embedded, writers


def _without_plot(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "plot"}


CALIBRATION_PAIRS = 5000  # validation pairs a class model's map is fitted on (at least)
# reference draws per validation writer for a signature model's maps (test trials: 5): each
# draw is another reference set for the same questioned signatures, more calibration trials at
# no training cost (docs/calibration.md, "Signatures")
CALIBRATION_DRAWS = 200


def draw_calibration_pairs(
    network: Any,
    splits: Any,
    val_pairs: int,
    seed: int = 0,
    within_share: float | None = None,
    embeddings: Any = None,
) -> tuple[tuple[Any, Any], dict[str, Any]]:
    """(scores, labels) of the pairs of ``splits.val`` classes a map is fitted on, and how they
    were drawn. ``max(val_pairs, CALIBRATION_PAIRS)`` balanced pairs, drawn as the test pairs
    are; when the classes come in groups (Omniglot's alphabets), the negatives are redrawn so
    that a share ``within_share`` of them is within one group: by default the share uniform
    pairs of ``splits.test`` have (from its labels and groups alone, no scores). A map is only
    calibrated for pairs as hard as those it was fitted on (docs/calibration.md).
    ``embeddings`` of ``splits.val.items``, when the caller has them, spare embedding it again."""
    import torch

    from siamkit.data.pairs import make_pairs
    from siamkit.evaluation.embedding import embed_all

    val, n = splits.val, max(val_pairs, CALIBRATION_PAIRS)
    a, b, y = make_pairs(val.require_nonempty("the validation set").labels, n, seed)
    drawn: dict[str, Any] = {"calibration_pairs_asked": n}
    test_groups = splits.test.groups
    if val.groups is not None and (within_share is not None or test_groups is not None):
        if within_share is None:
            within_share = within_group_share(splits.test.labels, test_groups)
        share_before = within_group_share(val.labels, val.groups)
        b = torch.as_tensor(regroup_negatives(val.labels, val.groups, a, b, y, within_share, seed))
        drawn.update(within_group_share=within_share, val_within_group_share=share_before)
    emb = embed_all(network, val.items) if embeddings is None else embeddings
    with torch.no_grad():
        scores = network.head.to(emb.device)(emb[a], emb[b])
    return (scores.float(), y), drawn


def _class_splits(recipe: Any, data_dir: Any) -> Any:
    """The splits of the recipe's class dataset (``data_dir``: another copy of it)."""
    from siamkit.data.datasets import build_dataset

    return build_dataset(recipe.data.name, data_dir or recipe.data_dir, **recipe.data.params)


def _class_pairs(model: Model, recipe: Any, data_dir: Any) -> tuple[Any, Any]:
    """Validation and test pairs of a class dataset, drawn as ``run_recipe`` draws them."""
    splits = _class_splits(recipe, data_dir)
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
    from siamkit.evaluation.signature_eval import KS

    extra = model.config.extra
    embedded, writers = embedded_signatures(model, recipe, folder, data_dir)
    normalisation = extra.get("reference_normalisation", "none")
    val = embedded.scores(
        writers["val"], KS, seed, draws=CALIBRATION_DRAWS, normalisation=normalisation
    )
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
