"""``siamkit train`` for a recipe with ``encoder_b``: a two-tower model matching each class's
name with its items.

Tower a (``encoder``) embeds class names (``text_rnn`` gets a vocabulary built from the training
classes' names), tower b (``encoder_b``) embeds the items with the dataset's preprocessing. Every
training item is paired with its class's name (:func:`siamkit.two_tower.class_name_pairs`) and
the loss (``ranking`` with ``symmetric: true``: InfoNCE both ways) is fed batches of pairs with
distinct classes (:class:`siamkit.two_tower.MatchedPairBatches`). The best epoch is chosen on the
validation items, the decision threshold (a name and an item: "same" or not) at their EER, and
the report gives recall@1 both ways on the test items (on FSDD: speakers never heard in
training; see :mod:`siamkit.evaluation.cross_modal`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from siamkit.checkpoint import atomic_write_text
from siamkit.data.datasets import build_dataset
from siamkit.data.labelled import LabelledData
from siamkit.data.transforms import build_augmentation
from siamkit.encoders import build_encoder
from siamkit.errors import ConfigError, DataError
from siamkit.evaluation.cross_modal import cross_modal_recall, matched_pair_scores
from siamkit.evaluation.embedding import embed_all
from siamkit.evaluation.verification import choose_threshold, verification_report
from siamkit.heads import HEADS
from siamkit.losses import build_loss
from siamkit.model import save_model
from siamkit.recipe import (
    RecipeResult,
    default_preprocess,
    keep_weights,
    load_init_weights,
    result_summary,
    start_run_folder,
)
from siamkit.recipe_schema import TrainRecipe
from siamkit.training import EpochCallback, fit
from siamkit.two_tower import MatchedPairBatches, TwoTowerNetwork, class_name_pairs


def build_name_tower(spec: Any, names: Sequence[str]) -> nn.Module:
    """Tower a: a ``text_rnn`` gets a vocabulary of the class names' words; any other encoder is
    built as it is."""
    if spec.name == "text_rnn":
        from siamkit.encoders.text import Vocabulary

        return build_encoder(spec, vocabulary=Vocabulary.build(names))
    return build_encoder(spec)


def class_names(data: LabelledData) -> list[str]:
    """The names of ``data``'s classes (the a-tower inputs); the reader must name them."""
    if not data.classes:
        raise DataError("a two-tower recipe needs a dataset whose classes have names")
    return list(data.classes)


@torch.no_grad()
def tower_embeddings(network: TwoTowerNetwork, data: LabelledData) -> dict[str, Any]:
    """Embeddings of the names of ``data``'s classes (tower a) and of its items (tower b)."""
    was_training = network.training
    network.eval()
    keys = data.class_ids()
    names = class_names(data)
    a = network.embed([names[k] for k in keys.tolist()], "a").float().cpu()
    b = embed_all(_TowerB(network), data.items)
    network.train(was_training)
    return {"a": a, "a_keys": keys, "b": b, "b_keys": data.labels}


class _TowerB(nn.Module):
    """Tower b seen as a one-encoder network (what :func:`embed_all` embeds with)."""

    def __init__(self, network: TwoTowerNetwork) -> None:
        super().__init__()
        self.network = network

    def embed(self, x: Any) -> torch.Tensor:
        return self.network.embed(x, "b")


def two_tower_report(
    network: TwoTowerNetwork, data: LabelledData, threshold: float | None, seed: int
) -> dict[str, float]:
    """Recall@1 both ways and verification of (name, item) pairs on ``data``."""
    e = tower_embeddings(network, data)
    head = network.head.cpu()
    scores, labels = matched_pair_scores(head, e["a"], e["a_keys"], e["b"], e["b_keys"], seed)
    return {
        **cross_modal_recall(head, e["a"], e["a_keys"], e["b"], e["b_keys"]),
        **verification_report(scores, labels, threshold),
    }


def validator(data: LabelledData, seed: int):
    """Validation metrics for :func:`fit`: ``auc`` and ``eer`` of (name, item) pairs and the
    smaller recall@1 of the two directions."""

    def validate(network: TwoTowerNetwork) -> dict[str, float]:
        device = next(network.parameters()).device
        report = two_tower_report(network, data, None, seed)
        network.head.to(device)
        recall = min(report["a_to_b_recall_at_1"], report["b_to_a_recall_at_1"])
        return {"auc": report["auc"], "eer": report["eer"], "recall_at_1": recall}

    return validate


def run_two_tower_recipe(
    recipe: TrainRecipe,
    out_dir: str | Path,
    resume: bool = False,
    data_dir: str | Path | None = None,
    show_progress: bool = True,
    callbacks: Sequence[EpochCallback] = (),
) -> RecipeResult:
    """Train, calibrate, evaluate and save a two-tower model as the recipe says."""
    out_dir = start_run_folder(recipe, out_dir)
    splits = build_dataset(recipe.data.name, data_dir or recipe.data_dir, **recipe.data.params)
    for part, what in (
        (splits.train, "training"),
        (splits.val, "validation"),
        (splits.test, "test"),
    ):
        part.require_nonempty(f"the {what} split")
    names = class_names(splits.train)
    torch.manual_seed(recipe.seed)
    assert recipe.encoder_b is not None
    network = TwoTowerNetwork(
        build_name_tower(recipe.encoder, names),
        load_init_weights(build_encoder(recipe.encoder_b), recipe.init_weights),
        HEADS.build(recipe.head),
    )
    loss = build_loss(recipe.loss, network)  # type: ignore[arg-type]
    if getattr(loss, "kind", None) != "pair":
        raise ConfigError(
            f"a two-tower recipe trains on matched pairs: use a pair loss such as ranking "
            f"(symmetric: true), not {recipe.loss.name!r}"
        )
    pairs = class_name_pairs(splits.train.items, splits.train.labels, names)
    augment = build_augmentation(recipe.augmentation)
    batches = MatchedPairBatches(pairs, recipe.batches.batch_size, recipe.seed, augment)
    evaluation = recipe.evaluation
    started = time.perf_counter()
    history = fit(
        network,
        loss,
        batches,
        recipe.training.model_copy(update={"seed": recipe.seed}),
        out_dir,
        validate=validator(splits.val, recipe.seed),
        monitor=evaluation.monitor,
        resume=resume,
        show_progress=show_progress,
        callbacks=callbacks,
    )
    train_seconds = time.perf_counter() - started
    keep_weights(network, evaluation.keep, history, out_dir)
    network.cpu().eval()
    val = two_tower_report(network, splits.val, None, recipe.seed)
    threshold = choose_threshold(*_val_pairs(network, splits.val, recipe.seed))
    test = two_tower_report(network, splits.test, threshold, recipe.seed + 1)
    preprocess = default_preprocess(splits)
    model_dir = save_model(
        out_dir / "model",
        network,
        recipe.encoder,
        recipe.head,
        None,
        threshold,
        extra={
            "task": "two_tower",
            "recipe": recipe.model_dump(mode="json"),
            "test": test,
            "validation": val,
            "class_names": names,
        },
        encoder_b=recipe.encoder_b,
        preprocess_b=preprocess,
    )
    result = RecipeResult(
        model_dir,
        history,
        threshold,
        test,
        train_seconds=train_seconds,
        title="two towers: names vs items of the test split",
    )
    atomic_write_text(out_dir / "report.json", json.dumps(result_summary(result), indent=2))
    return result


def _val_pairs(network: TwoTowerNetwork, data: LabelledData, seed: int):
    e = tower_embeddings(network, data)
    return matched_pair_scores(network.head, e["a"], e["a_keys"], e["b"], e["b_keys"], seed)
