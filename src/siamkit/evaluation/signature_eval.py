"""The writer-independent signature protocol: train on some writers, choose thresholds on others,
test on writers never seen, with K enrolled references per writer (K = 1, 3, 5).

Also registers the ``siamkit eval MODEL SIGNATURE_TREE`` evaluator: for a model saved by
:func:`save_signature_model` it scores the writers the model was never trained on (its test
writers) and prints one row per K, aggregate and forgery kind.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from siamkit.data.signature_preprocess import SignaturePreprocess
from siamkit.data.signatures import SignaturePairBatches, SignatureSet, WriterSplit
from siamkit.data.signatures import read_signature_tree as read_tree
from siamkit.data.transforms import build_augmentation
from siamkit.errors import DataError
from siamkit.evaluation.embedding import embed_all
from siamkit.evaluation.reference_set import (
    AGGREGATES,
    ReferenceTrials,
    choose_reference_thresholds,
    reference_report,
    reference_trials,
    trial_scores,
)
from siamkit.evaluation.tasks import Report, register_evaluator
from siamkit.evaluation.verification import equal_error_rate
from siamkit.losses import build_loss
from siamkit.model import save_model
from siamkit.registry import ComponentSpec
from siamkit.siamese import SiameseNetwork
from siamkit.training import History, fit

if TYPE_CHECKING:
    from siamkit.model import Model
    from siamkit.recipe import TrainRecipe

KS = (1, 3, 5)
Thresholds = dict[int, dict[str, float]]  # K -> aggregate -> threshold


@dataclass
class TrainedFold:
    """A network trained on one fold's training writers, and how long training took."""

    network: SiameseNetwork
    head_spec: ComponentSpec
    history: History
    seconds: float


def preprocess_of(recipe: TrainRecipe) -> SignaturePreprocess:
    """The SigNet preprocessing named by the recipe's data params (``size``, ``canvas``,
    ``mean``, ``std``)."""
    params = recipe.data.params
    return SignaturePreprocess(
        params.get("size", (155, 220)), params.get("canvas", (310, 440)),
        mean=params.get("mean", 0.0), std=params.get("std", 1.0),
    )  # fmt: skip


def embed_writers(
    network: SiameseNetwork, images: Tensor, data: SignatureSet, writers: Sequence[str]
) -> Tensor:
    """Embeddings of every image (N, D); rows of images outside ``writers`` are left at zero."""
    idx = np.flatnonzero(np.isin(data.writers, list(writers)))
    emb = embed_all(network, images[torch.from_numpy(idx)])
    full = torch.zeros(len(data), emb.shape[1])
    full[torch.from_numpy(idx)] = emb
    return full


def writer_scores(
    network: SiameseNetwork,
    images: Tensor,
    data: SignatureSet,
    writers: Sequence[str],
    ks: Sequence[int] = KS,
    seed: int = 0,
    draws: int = 5,
) -> dict[int, tuple[ReferenceTrials, dict[str, np.ndarray]]]:
    """Reference-set trials of ``writers`` and their mean/max scores, for each K."""
    emb = embed_writers(network, images, data, writers)
    head = network.head.cpu()
    out = {}
    for k in ks:
        trials = reference_trials(data, writers, k, seed=seed + k, draws=draws)
        out[k] = (trials, trial_scores(head, emb, trials))
    return out


def reference_validator(
    images: Tensor, data: SignatureSet, writers: Sequence[str], k: int = 5, seed: int = 0
):
    """A ``validate`` callable for :func:`siamkit.training.fit`: skilled-forgery EER (and
    ``eer_complement`` = 1 - EER, to maximise) on ``writers`` with K references, averaged over
    the mean and max aggregates (fewer ties and less noise than either alone)."""

    def validate(network: SiameseNetwork) -> dict[str, float]:
        device = next(network.parameters()).device
        trials, scores = writer_scores(network, images, data, writers, (k,), seed)[k]
        network.to(device)
        mask = trials.of_kind("skilled")
        eers = {a: equal_error_rate(s[mask], trials.labels[mask])[0] for a, s in scores.items()}
        eer = float(np.mean(list(eers.values())))
        return {"eer": eer, "eer_complement": 1.0 - eer, **{f"eer_{a}": e for a, e in eers.items()}}

    return validate


def train_fold(
    recipe: TrainRecipe,
    data: SignatureSet,
    images: Tensor,
    split: WriterSplit,
    out_dir: str | Path,
    mix: tuple[float, float, float] = (0.5, 0.3, 0.2),
    show_progress: bool = True,
) -> TrainedFold:
    """Train the recipe's twin network with SigNet pairs of ``split.train`` writers only.

    Each epoch draws ``recipe.batches.examples_per_epoch`` pairs (genuine-genuine,
    genuine-skilled, genuine-random in the proportions ``mix``); the best epoch is chosen by
    the skilled-forgery EER with 5 references on the validation writers.
    """
    from siamkit.recipe import build_network

    torch.manual_seed(recipe.seed)
    network, head_spec = build_network(recipe)
    loss = build_loss(recipe.loss, network)
    batches = SignaturePairBatches(
        images, data, split.train, recipe.batches.examples_per_epoch, recipe.batches.batch_size,
        recipe.seed, mix, build_augmentation(recipe.augmentation),
    )  # fmt: skip
    validate = reference_validator(images, data, split.val, seed=recipe.seed)
    training = recipe.training.model_copy(update={"seed": recipe.seed})
    started = time.perf_counter()
    history = fit(
        network, loss, batches, training, out_dir, validate=validate,
        monitor="eer_complement", show_progress=show_progress,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    return TrainedFold(network.cpu().eval(), head_spec, history, seconds)


def calibrate(
    network: SiameseNetwork,
    images: Tensor,
    data: SignatureSet,
    val_writers: Sequence[str],
    ks: Sequence[int] = KS,
    seed: int = 0,
) -> Thresholds:
    """Per-K, per-aggregate thresholds at the skilled-forgery EER of the validation writers."""
    scored = writer_scores(network, images, data, val_writers, ks, seed)
    return {k: choose_reference_thresholds(s, t) for k, (t, s) in scored.items()}


def evaluate_writers(
    network: SiameseNetwork,
    images: Tensor,
    data: SignatureSet,
    writers: Sequence[str],
    thresholds: Thresholds | None,
    ks: Sequence[int] = KS,
    seed: int = 1000,
) -> tuple[list[dict[str, Any]], dict[int, tuple[ReferenceTrials, dict[str, np.ndarray]]]]:
    """Rows (K, aggregate, forgery, AUC, EER, accuracy, FAR, FRR) on ``writers`` at the given
    thresholds, and the raw trials and scores (for plots)."""
    scored = writer_scores(network, images, data, writers, ks, seed)
    rows = []
    for k, (trials, scores) in scored.items():
        at = None if thresholds is None else thresholds[k]
        rows += [{"k": k, **row} for row in reference_report(scores, trials, at)]
    return rows, scored


def save_signature_model(
    folder: str | Path,
    fold: TrainedFold,
    recipe: TrainRecipe,
    thresholds: Thresholds,
    split: WriterSplit,
) -> Path:
    """Save the fold's model with its SigNet preprocessing, the per-aggregate reference
    thresholds (K = 5, or the largest K) that ``siamkit verify --references`` applies, the
    thresholds for every K, and the writer split (so ``siamkit eval`` tests unseen writers)."""
    k_main = 5 if 5 in thresholds else max(thresholds)
    extra = {
        "task": "signatures",
        "reference_thresholds": thresholds[k_main],
        "reference_thresholds_k": k_main,
        "reference_thresholds_by_k": {str(k): t for k, t in thresholds.items()},
        "writers": {"train": split.train, "val": split.val, "test": split.test},
        "recipe": recipe.model_dump(mode="json"),
    }
    pair_threshold = thresholds[1]["mean"] if 1 in thresholds else None
    return save_model(
        folder, fold.network, recipe.encoder, fold.head_spec, preprocess_of(recipe).spec,
        pair_threshold, extra,
    )  # fmt: skip


# --- siamkit eval MODEL SIGNATURE_TREE ------------------------------------------------------


def is_signature_tree(path: Path) -> bool:
    """A folder with ``genuine/<writer>/`` sub-folders (``forged/<writer>/`` optional)."""
    genuine = path / "genuine"
    return genuine.is_dir() and any(p.is_dir() for p in genuine.iterdir())


def _thresholds_for(model: Model, ks: Sequence[int]) -> tuple[Thresholds | None, str]:
    by_k = model.config.extra.get("reference_thresholds_by_k")
    if by_k and all(str(k) in by_k for k in ks):
        return {k: by_k[str(k)] for k in ks}, "thresholds chosen on validation writers"
    main = model.config.extra.get("reference_thresholds")
    if main and all(a in main for a in AGGREGATES):
        return {k: main for k in ks}, "the model's reference thresholds for every K"
    if model.threshold is not None:
        return {k: dict.fromkeys(AGGREGATES, model.threshold) for k in ks}, "the model threshold"
    return None, "no saved threshold: accuracy/FAR/FRR at each row's own EER (optimistic)"


def evaluate_signature_tree(model: Model, root: Path) -> Report:
    """Reference-set verification (K = 1, 3, 5) on the model's unseen writers in ``root``."""
    data = read_tree(root)
    saved = model.config.extra.get("writers", {}).get("test")
    present = set(data.writer_ids())
    writers = [w for w in saved if w in present] if saved else data.writer_ids()
    if len(writers) < 2:
        raise DataError(
            f"{root}: expected at least 2 writers to evaluate, found {len(writers)} "
            f"(model test writers: {saved})"
        )
    fewest = min(len(data.genuine_of(w)) for w in writers)
    ks = [k for k in KS if k < fewest]
    images = model.prepare(data.paths)
    thresholds, source = _thresholds_for(model, ks)
    rows, _ = evaluate_writers(model.network, images, data, writers, thresholds, ks)
    keep = ("k", "aggregate", "forgery", "eer", "accuracy", "far", "frr", "auc", "threshold")
    table = [{key: row[key] for key in keep} for row in rows]
    which = "the model's test writers (never seen in training)" if saved else "all writers"
    notes = [f"{len(writers)} writers of {root}: {which}; decisions at {source}"]
    return Report(f"signature verification on {root.name}", table, notes)


register_evaluator("signature tree (genuine/, forged/)", is_signature_tree, evaluate_signature_tree)
