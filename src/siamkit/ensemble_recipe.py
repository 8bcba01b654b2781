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
from siamkit.data.labelled import Splits
from siamkit.encoders import build_encoder
from siamkit.ensemble import (
    SimilarityPart,
    evaluate_ensemble,
    fit_ensemble,
    known_class_splits,
    logistic_part,
    merge,
    siamese_part,
)
from siamkit.evaluation.verification import choose_threshold, pair_scores, verification_validator
from siamkit.heads import CosineHead
from siamkit.losses import build_loss
from siamkit.model import save_model
from siamkit.recipe import (
    RecipeResult,
    _monitored,
    build_batches,
    build_network,
    build_recipe_loss,
    default_preprocess,
    keep_weights,
    start_run_folder,
)
from siamkit.recipe_schema import TrainRecipe
from siamkit.siamese import SiameseNetwork
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
    out_dir = start_run_folder(recipe, out_dir)
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
    choices: dict = {}
    if settings.classifier == "cnn":
        classifier = train_cnn_classifier(recipe, known, out_dir, resume, show_progress)
        save_model(out_dir / "classifier", classifier.network, recipe.encoder, {"name": "cosine"},
                   default_preprocess(splits))  # fmt: skip
    else:
        classifier, choices["val_log_loss_by_c"] = logistic_part(
            network, known, settings.features, tuple(settings.c_grid), recipe.seed
        )
    ensemble, fitted = fit_ensemble(
        siamese_part(network, known.train), classifier, known.val,
        known.train.classes or [], settings.weight_steps,
    )  # fmt: skip
    choices |= fitted
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


def train_cnn_classifier(
    recipe: TrainRecipe, known: Splits, out_dir: Path, resume: bool, show_progress: bool
) -> SimilarityPart:
    """A conventional classifier: a second network of the recipe's encoder, trained on the
    known classes with a softmax over learned, normalised class weights (cross-entropy,
    ``normalized_softmax``) on the recipe's batches and augmentation; the class weights are its
    class vectors. Checkpoints in ``out_dir/classifier_training`` (resumable)."""
    settings = recipe.ensemble
    torch.manual_seed(recipe.seed + 1)
    network = SiameseNetwork(build_encoder(recipe.encoder), CosineHead())
    n_classes = int(known.train.labels.max()) + 1
    loss = build_loss({"name": "normalized_softmax"}, network, num_classes=n_classes)
    epochs = settings.classifier_epochs or recipe.training.epochs
    config = recipe.training.model_copy(update={"seed": recipe.seed + 1, "epochs": epochs})
    folder = out_dir / "classifier_training"
    batches = build_batches(recipe, loss, known.train)
    resume = resume and (folder / "checkpoint").is_dir()
    fit(network, loss, batches, config, folder, resume=resume, show_progress=show_progress)
    network.cpu().eval()
    return SimilarityPart(network, loss.loss.W.detach().T.contiguous().cpu())
