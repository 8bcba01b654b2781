"""``siamkit train`` for a recipe with an ``ensemble:`` block: known-class classification by the
siamese network and a classifier together (:mod:`siamkit.ensemble`).

The reader's chosen splits are merged and every class's items are cut into training, validation
and test items (:func:`siamkit.ensemble.known_class_splits`); the network trains on the training
items as the recipe says (encoder, loss, batches, training), then both parts, the temperature,
``C`` and the ensemble weight are fitted (validation items only) and the test items are scored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from siamkit.checkpoint import atomic_write_text
from siamkit.data.datasets import build_dataset
from siamkit.ensemble import evaluate_ensemble, fit_ensemble, known_class_splits, merge
from siamkit.evaluation.verification import choose_threshold, pair_scores, verification_validator
from siamkit.model import save_model
from siamkit.recipe import (
    RecipeResult,
    _monitored,
    build_batches,
    build_network,
    build_recipe_loss,
    default_preprocess,
    keep_weights,
)
from siamkit.recipe_schema import TrainRecipe
from siamkit.training import EpochCallback, fit

TITLE = "known classes, held-out test items"


def run_ensemble_recipe(
    recipe: TrainRecipe,
    out_dir: str | Path,
    resume: bool = False,
    data_dir: str | Path | None = None,
    show_progress: bool = True,
    callbacks: Sequence[EpochCallback] = (),
) -> RecipeResult:
    """Train the network on the known classes' training items, fit the ensemble on the
    validation items, report each part and the ensemble on the test items, save ``out_dir``."""
    settings = recipe.ensemble
    if settings is None:
        raise ValueError("run_ensemble_recipe needs a recipe with an ensemble block")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "recipe.json", recipe.model_dump_json(indent=2))
    splits = build_dataset(recipe.data.name, data_dir or recipe.data_dir, **recipe.data.params)
    known = known_class_splits(
        merge([getattr(splits, name) for name in settings.splits]),
        settings.train_per_class, settings.val_per_class, recipe.seed,
    )  # fmt: skip
    torch.manual_seed(recipe.seed)
    network, head_spec = build_network(recipe)
    loss = build_recipe_loss(recipe, network, known.train.labels)
    evaluation = recipe.evaluation
    validate = verification_validator(known.val, evaluation.val_pairs, recipe.seed)
    history = fit(
        network, loss, build_batches(recipe, loss, known.train),
        recipe.training.model_copy(update={"seed": recipe.seed}), out_dir,
        validate=_monitored(validate, evaluation.monitor), monitor=evaluation.monitor,
        resume=resume, show_progress=show_progress, callbacks=callbacks,
    )  # fmt: skip
    keep_weights(network, evaluation.keep, history, out_dir)
    network.cpu().eval()
    ensemble, choices = fit_ensemble(
        network, known, settings.features, tuple(settings.c_grid), settings.weight_steps,
        recipe.seed,
    )  # fmt: skip
    test = evaluate_ensemble(ensemble, known.test)
    val_scores, val_labels = pair_scores(network, known.val, evaluation.val_pairs, recipe.seed)
    threshold = choose_threshold(val_scores, val_labels, evaluation.threshold_rule)
    model_dir = save_model(
        out_dir / "model", network, recipe.encoder, head_spec, default_preprocess(splits),
        threshold, extra={"recipe": recipe.model_dump(mode="json"), "ensemble_test": test},
    )  # fmt: skip
    ensemble.save(out_dir)
    report = {"model_dir": str(model_dir), "test": test, "validation_choices": choices}
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2))
    return RecipeResult(model_dir, history, threshold, test, title=TITLE)
