"""Training recipes: one YAML file says what to train on, how, and how to evaluate the result.

``siamkit train CONFIG.yaml`` runs :func:`run_recipe`: read the dataset, build the twin network and
its loss, draw pairs / triplets / class-balanced batches (chosen by the loss), train with
checkpoints, choose the decision threshold on validation pairs, report on the held-out test
classes, and save a model folder that ``siamkit.load`` and every CLI command accept. Recipes of
given sentence pairs (STS-B, MRPC) share the schema and are run by :mod:`siamkit.text.training`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from siamkit import distributed
from siamkit.calibrate_model import draw_calibration_pairs
from siamkit.calibration import calibrate_run
from siamkit.checkpoint import atomic_write_text, load_tensors, load_weights
from siamkit.data.batches import ClassBatches, PairBatches, TripletBatches
from siamkit.data.datasets import build_dataset
from siamkit.data.labelled import LabelledData, Splits
from siamkit.data.transforms import build_augmentation
from siamkit.encoders import build_encoder
from siamkit.encoders.base import Encoder
from siamkit.errors import CheckpointError, ConfigError
from siamkit.evaluation.embedding import embed_all
from siamkit.evaluation.fewshot import FewShotResult, evaluate_episodes
from siamkit.evaluation.plots import roc_plot, score_histogram
from siamkit.evaluation.seen_classes import recorded_classes
from siamkit.evaluation.verification import (
    choose_threshold,
    pair_scores,
    verification_report,
    verification_validator,
)
from siamkit.heads import HEADS
from siamkit.losses import build_loss
from siamkit.model import save_model
from siamkit.recipe_schema import (  # noqa: F401  (the schema is part of this module's API)
    SENTENCE_PAIR_DATASETS,
    BatchSettings,
    EvaluationSettings,
    FewShotSettings,
    SentencePairData,
    TrainRecipe,
    VocabularySettings,
    load_recipe,
    parse_config,
    parse_recipe,
    read_yaml,
)
from siamkit.registry import ComponentSpec
from siamkit.siamese import SiameseNetwork
from siamkit.training import EpochCallback, History, fit, last_epoch_weights


@dataclass
class RecipeResult:
    """What a recipe run produced: the model folder, training history and reports."""

    model_dir: Path
    history: History
    threshold: float
    test: dict[str, float]
    fewshot: dict[str, FewShotResult] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)
    train_seconds: float | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    title: str | None = None  # what ``test`` was measured on, when not the unseen test classes


def load_init_weights(encoder: Encoder, init_weights: str | None) -> Encoder:
    """``encoder`` with its pre-trained part (:attr:`Encoder.pretrained`) loaded strictly from
    the safetensors file ``init_weights``, when given."""
    if init_weights:
        path = Path(init_weights)
        if not path.is_file():
            raise CheckpointError(
                f"init_weights {path}: file not found (relative paths start from the current "
                "folder; `make face-weights`, `make speaker-weights` and `make "
                "speech-embedding-weights` write the pre-trained ones)"
            )
        load_weights(encoder.pretrained, load_tensors(path), path)
    return encoder


def build_network(recipe: TrainRecipe) -> tuple[SiameseNetwork, ComponentSpec]:
    """The twin network of a recipe (its encoder loaded with ``init_weights`` when given), and
    its head spec completed with the embedding size."""
    encoder = load_init_weights(build_encoder(recipe.encoder), recipe.init_weights)
    head_spec = recipe.head
    if head_spec.name == "learned" and "embedding_dim" not in head_spec.params:
        head_spec = ComponentSpec(
            name="learned", params={**head_spec.params, "embedding_dim": encoder.embedding_dim}
        )
    return SiameseNetwork(encoder, HEADS.build(head_spec)), head_spec


def build_recipe_loss(recipe: TrainRecipe, network: SiameseNetwork, labels: Tensor) -> nn.Module:
    """The recipe's loss for ``network``; class-proxy losses get one proxy per label value up to
    the largest of the training ``labels``."""
    return build_loss(recipe.loss, network, num_classes=int(labels.max()) + 1)


def build_batches(recipe: TrainRecipe, loss: nn.Module, train: LabelledData) -> Any:
    """The batch source the loss needs (pairs, triplets or class-balanced batches)."""
    settings, seed = recipe.batches, recipe.seed
    augment = build_augmentation(recipe.augmentation)
    kind = getattr(loss, "kind", None)
    if kind == "pair":
        return PairBatches(
            train, settings.examples_per_epoch, settings.batch_size, seed, augment,
            settings.positive_fraction,
        )  # fmt: skip
    if kind == "triplet":
        count = settings.examples_per_epoch
        return TripletBatches(train, count, settings.batch_size, seed, augment)
    if kind == "labelled":
        return ClassBatches(
            train, settings.batch_size, settings.m_per_class, seed, augment,
            settings.batches_per_epoch, settings.groups_per_batch,
        )  # fmt: skip
    raise ConfigError(f"loss {recipe.loss.name!r} has unknown kind {kind!r}")


def default_preprocess(splits: Splits) -> ComponentSpec | None:
    """The reader's preprocessing, or for image tensors a plain resize to the training size."""
    if splits.preprocess is not None:
        return ComponentSpec.model_validate(splits.preprocess)
    items = splits.train.items
    if isinstance(items, torch.Tensor) and items.ndim == 4:
        mode = "L" if items.shape[1] == 1 else "RGB"
        return ComponentSpec(name="image", params={"size": list(items.shape[2:]), "mode": mode})
    return None


def start_run_folder(recipe: TrainRecipe, out_dir: str | Path) -> Path:
    """Create the run folder and record the recipe in it (``recipe.json``; rank 0 only under
    torchrun); every recipe runner starts with this."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if distributed.is_main():
        atomic_write_text(out_dir / "recipe.json", recipe.model_dump_json(indent=2))
    return out_dir


def run_recipe(
    recipe: TrainRecipe,
    out_dir: str | Path,
    resume: bool = False,
    data_dir: str | Path | None = None,
    show_progress: bool = True,
    callbacks: Sequence[EpochCallback] = (),
) -> RecipeResult:
    """Train, calibrate, evaluate and save as the recipe says; outputs go under ``out_dir``.
    ``callbacks`` are called after every epoch (see :data:`siamkit.training.EpochCallback`).
    Sentence-pair recipes are run by :func:`siamkit.text.training.run_text_recipe`."""
    if recipe.sentence_pairs:
        from siamkit.text.training import run_text_recipe

        return run_text_recipe(recipe, out_dir, resume, data_dir, show_progress, callbacks)
    if recipe.encoder_b is not None:
        from siamkit.two_tower_recipe import run_two_tower_recipe

        return run_two_tower_recipe(recipe, out_dir, resume, data_dir, show_progress, callbacks)
    if recipe.ensemble is not None:
        from siamkit.ensemble_recipe import run_ensemble_recipe

        return run_ensemble_recipe(recipe, out_dir, resume, data_dir, show_progress, callbacks)
    out_dir = start_run_folder(recipe, out_dir)
    splits = build_dataset(recipe.data.name, data_dir or recipe.data_dir, **recipe.data.params)
    splits.train.require_nonempty("the training split")
    splits.val.require_nonempty("the validation split (needed to choose the threshold)")
    splits.test.require_nonempty("the test split")
    training = recipe.training.model_copy(update={"seed": recipe.seed})
    torch.manual_seed(recipe.seed)
    network, head_spec = build_network(recipe)
    loss = build_recipe_loss(recipe, network, splits.train.labels)
    evaluation = recipe.evaluation
    validate = verification_validator(splits.val, evaluation.val_pairs, recipe.seed)
    history = fit(
        network, loss, build_batches(recipe, loss, splits.train), training, out_dir,
        validate=_monitored(validate, evaluation.monitor), monitor=evaluation.monitor,
        resume=resume, show_progress=show_progress, callbacks=callbacks,
    )  # fmt: skip
    if not distributed.is_main():
        return other_rank_result(out_dir, history)
    keep_weights(network, evaluation.keep, history, out_dir)
    network.cpu().eval()
    val_embeddings = embed_all(network, splits.val.items)
    val_scores, val_labels = pair_scores(
        network, splits.val, evaluation.val_pairs, recipe.seed, val_embeddings
    )
    threshold = choose_threshold(val_scores, val_labels, evaluation.threshold_rule)
    scores, labels = pair_scores(network, splits.test, evaluation.test_pairs, recipe.seed + 1)
    test = verification_report(scores, labels, threshold)
    calibration_pairs, _ = draw_calibration_pairs(
        network, splits, evaluation.val_pairs, recipe.seed, embeddings=val_embeddings
    )  # the pairs and pair mix `siamkit calibrate` fits on
    calibrator, calibration = calibrate_run(
        calibration_pairs, (scores, labels), head_spec.name,
        out_dir / "reliability.png" if evaluation.plots else None, recipe.seed,
    )  # fmt: skip
    fewshot = {
        f"{s.n_way}-way {s.k_shot}-shot{' within groups' if s.within_groups else ''}": (
            evaluate_episodes(
                network, splits.test, s.n_way, s.k_shot, s.episodes, recipe.seed, s.within_groups
            )
        )
        for s in evaluation.fewshot
    }
    plots = []
    if evaluation.plots:
        plots = [
            roc_plot(scores, labels, out_dir / "roc.png", "ROC on unseen test classes"),
            score_histogram(scores, labels, out_dir / "scores.png", threshold=threshold),
        ]
    if evaluation.explain and isinstance(splits.test.items, Tensor) and splits.test.items.ndim == 4:
        from siamkit.explain.report import explain_test_pairs

        plots += explain_test_pairs(
            network, splits.test, scores, labels, threshold, evaluation.test_pairs,
            recipe.seed + 1, out_dir / "explained", evaluation.explain,
        )  # fmt: skip
    model_dir = save_model(
        out_dir / "model", network, recipe.encoder, head_spec, default_preprocess(splits),
        threshold, extra={"recipe": recipe.model_dump(mode="json"), "test": test,
                          "seen_classes": recorded_classes(splits),
                          "calibration": calibrator and calibrator.to_json()},
    )  # fmt: skip
    result = RecipeResult(model_dir, history, threshold, test, fewshot, plots,
                          calibration=calibration)  # fmt: skip
    atomic_write_text(out_dir / "report.json", json.dumps(result_summary(result), indent=2))
    return result


def other_rank_result(out_dir: Path, history: History) -> RecipeResult:
    """What a rank other than 0 returns in data-parallel training: its history; rank 0 alone
    calibrates, evaluates and saves the model folder (and the others exit meanwhile)."""
    return RecipeResult(out_dir / "model", history, float("nan"), {})


def keep_weights(network: nn.Module, keep: str, history: History, out_dir: Path) -> None:
    """Load the last epoch's weights into ``network`` when ``keep`` is "last" (``fit`` leaves
    the best epoch's)."""
    if keep == "last" and history.epochs:
        state = out_dir / "checkpoint" / "state.safetensors"
        load_weights(network, last_epoch_weights(out_dir), state)


def _monitored(validate: Any, monitor: str) -> Any:
    """Add ``eer_complement`` (1 - EER, higher is better) to the validation metrics."""

    def run(network: SiameseNetwork) -> dict[str, float]:
        metrics = validate(network)
        if monitor == "eer_complement":
            metrics["eer_complement"] = 1.0 - metrics["eer"]
        return metrics

    return run


def result_summary(result: RecipeResult) -> dict[str, Any]:
    """A JSON-able summary of a recipe run."""
    return {
        "model_dir": str(result.model_dir),
        "threshold": result.threshold,
        "best_epoch": result.history.best_epoch,
        "epochs_run": len(result.history.epochs),
        "train_seconds": sum(e["seconds"] for e in result.history.epochs),
        "test_verification": result.test,
        "fewshot": {k: vars(v) for k, v in result.fewshot.items()},
        "calibration": result.calibration,
    }
