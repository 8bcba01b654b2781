"""Calibration people a model never trained on, by cross-fitting a recipe.

A model's own validation people are few (4 in the faces recipes). Cross-fitting turns every
non-test person of the recipe into calibration data: the training + validation people are split
into ``folds`` (by person, seeded), and for each fold the recipe is trained again (for a
pre-trained recipe: fine-tuned) without that fold's people, which it then embeds. Each group of
embeddings comes from a model that never saw those people. Finished folds are saved as
``<work_dir>/fold<k>.npz`` and skipped when run again (interrupt and resume); an unfinished fold
resumes from ``fit``'s checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siamkit.data.labelled import LabelledData
from siamkit.errors import DataError

Group = tuple[np.ndarray, np.ndarray]  # (embeddings, labels) of people one model never saw


def calibration_people(splits: Any) -> LabelledData:
    """The recipe's training and validation people together (never its test people)."""
    train, val = splits.train, splits.val
    if isinstance(train.items, torch.Tensor):
        items: Any = torch.cat([train.items, val.items])
    else:
        items = list(train.items) + list(val.items)
    return LabelledData(items, torch.cat([train.labels, val.labels]), train.classes)


def person_folds(labels: torch.Tensor, folds: int, seed: int) -> list[np.ndarray]:
    """The people of ``labels`` cut into ``folds`` seeded, near-equal groups of person ids."""
    people = np.unique(labels.numpy())
    if folds < 2 or folds > len(people) // 2:
        raise DataError(
            f"cross-fitting: folds must be in [2, {len(people) // 2}] for {len(people)} people "
            f"(each fold needs >= 2 people), got {folds}"
        )
    order = np.random.default_rng(seed).permutation(people)
    return [np.sort(part) for part in np.array_split(order, folds)]


def crossfit_groups(
    recipe: Any,
    folds: int,
    work_dir: str | Path,
    epochs: int | None = None,
    data_dir: str | Path | None = None,
    show_progress: bool = True,
    on_fold: Callable[[int, int], None] | None = None,
) -> list[Group]:
    """One group per fold: that fold's people embedded by the recipe trained without them
    (``epochs`` overrides the recipe's, e.g. a short fine-tuning)."""
    from siamkit.data.datasets import build_dataset

    splits = build_dataset(recipe.data.name, data_dir or recipe.data_dir, **recipe.data.params)
    people = calibration_people(splits)
    work = Path(work_dir)
    groups = []
    for k, held in enumerate(person_folds(people.labels, folds, recipe.seed)):
        if on_fold is not None:
            on_fold(k, folds)
        saved = work / f"fold{k}.npz"
        if saved.is_file():
            data = np.load(saved)
            if np.array_equal(np.unique(data["labels"]), held):
                groups.append((data["embeddings"], data["labels"]))
                continue
        mask = torch.isin(people.labels, torch.as_tensor(held))
        train = people.subset((~mask).nonzero().squeeze(1))
        heldout = people.subset(mask.nonzero().squeeze(1))
        x = _train_and_embed(recipe, train, heldout, work / f"fold{k}", epochs, k, show_progress)
        work.mkdir(parents=True, exist_ok=True)
        np.savez(saved, embeddings=x, labels=heldout.labels.numpy())
        groups.append((x, heldout.labels.numpy()))
    return groups


def _train_and_embed(
    recipe: Any,
    train: LabelledData,
    heldout: LabelledData,
    out: Path,
    epochs: int | None,
    k: int,
    show_progress: bool,
) -> np.ndarray:
    """Train the recipe on ``train`` (last epoch's weights) and embed ``heldout``."""
    from siamkit.evaluation.embedding import embed_all
    from siamkit.recipe import build_batches, build_network, build_recipe_loss
    from siamkit.training import fit

    update: dict[str, Any] = {"seed": recipe.seed + k}
    if epochs is not None:
        update["epochs"] = epochs
    training = recipe.training.model_copy(update=update)
    torch.manual_seed(recipe.seed + k)
    network, _ = build_network(recipe)
    loss = build_recipe_loss(recipe, network, train.labels)
    resume = (out / "checkpoint").is_dir()
    fit(network, loss, build_batches(recipe, loss, train), training, out,
        resume=resume, show_progress=show_progress)  # fmt: skip
    network.cpu().eval()
    return embed_all(network, heldout.items).numpy()
