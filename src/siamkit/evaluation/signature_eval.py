"""The writer-independent signature protocol: train on some writers, choose thresholds on others,
test on writers never seen, with K enrolled references per writer (K = 1, 3, 5).

Also registers the ``siamkit eval MODEL SIGNATURE_TREE`` evaluator: on any ``genuine/``,
``forged/`` tree it scores every writer the model was never trained or validated on (on the
dataset it was trained on: its test writers; on a tree of new writers: all of them) and prints one
row per K, aggregate and forgery kind.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from siamkit.data.batches import ClassBatches
from siamkit.data.signature_preprocess import SignaturePreprocess
from siamkit.data.signatures import (
    SignaturePairBatches,
    SignatureSet,
    WriterSplit,
    signature_classes,
    signature_labelled,
)
from siamkit.data.signatures import read_signature_tree as read_tree
from siamkit.data.transforms import build_augmentation
from siamkit.errors import DataError
from siamkit.evaluation.embedding import embed_all
from siamkit.evaluation.reference_set import (
    AGGREGATES,
    NORMALISATIONS,
    ReferenceTrials,
    check_normalisation,
    reference_report,
    reference_trials,
    saved_reference_threshold,
    thresholds_by_rule,
    trial_scores,
    with_saved_support,
)
from siamkit.evaluation.seen_classes import Nouns, seen_classes, select_unseen
from siamkit.evaluation.tasks import Report, register_evaluator
from siamkit.evaluation.verification import equal_error_rate
from siamkit.model import save_model
from siamkit.registry import ComponentSpec
from siamkit.saved_thresholds import SUPPORT_KEY
from siamkit.siamese import SiameseNetwork
from siamkit.training import History, fit

if TYPE_CHECKING:
    from siamkit.model import Model
    from siamkit.recipe import TrainRecipe

KS = (1, 3, 5)
WRITERS = Nouns("writer", "writers")
Thresholds = dict[int, dict[str, float]]  # K -> aggregate -> threshold
Support = dict[int, dict[str, dict[str, Any]]]  # K -> aggregate -> threshold_support row


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


@dataclass(frozen=True)
class EmbeddedSignatures:
    """A trained network's head and the embeddings of a signature set, computed once and scored
    by every protocol step (choice of normalisation, calibration, evaluation)."""

    head: Any
    embeddings: Tensor  # (N, D), one row per image of data; zero for images not embedded
    data: SignatureSet
    writers: frozenset[str]  # the writers whose images were embedded

    @classmethod
    def of(
        cls, network: SiameseNetwork, images: Tensor, data: SignatureSet, writers: Sequence[str]
    ) -> EmbeddedSignatures:
        """Embed the images of ``writers`` (all other rows stay zero); the head moves to CPU."""
        idx = torch.from_numpy(data.of_writers(writers))
        emb = embed_all(network, images[idx])
        full = torch.zeros(len(data), emb.shape[1])
        full[idx] = emb
        return cls(network.head.cpu(), full, data, frozenset(writers))

    def scores(
        self,
        writers: Sequence[str],
        ks: Sequence[int] = KS,
        seed: int = 0,
        draws: int = 5,
        normalisation: str = "none",
    ) -> dict[int, tuple[ReferenceTrials, dict[str, np.ndarray]]]:
        """Reference-set trials of ``writers`` (embedded) and their aggregate scores
        (normalised as asked, see :mod:`siamkit.evaluation.reference_set`), for each K."""
        if missing := sorted(set(writers) - self.writers):
            raise DataError(
                f"writers {missing} were not embedded (embedded: {sorted(self.writers)})"
            )
        out = {}
        for k in ks:
            trials = reference_trials(self.data, writers, k, seed=seed + k, draws=draws)
            out[k] = (trials, trial_scores(self.head, self.embeddings, trials, normalisation))
        return out


def reference_validator(
    images: Tensor, data: SignatureSet, writers: Sequence[str], k: int = 5, seed: int = 0
):
    """A ``validate`` callable for :func:`siamkit.training.fit`: skilled-forgery EER (and
    ``eer_complement`` = 1 - EER, to maximise) on ``writers`` with K references, averaged over
    the aggregates (fewer ties and less noise than any one alone)."""

    def validate(network: SiameseNetwork) -> dict[str, float]:
        device = next(network.parameters()).device
        embedded = EmbeddedSignatures.of(network, images, data, writers)
        trials, scores = embedded.scores(writers, (k,), seed)[k]
        network.to(device)
        mask = trials.of_kind("skilled")
        eers = {a: equal_error_rate(s[mask], trials.labels[mask])[0] for a, s in scores.items()}
        eer = float(np.mean(list(eers.values())))
        return {"eer": eer, "eer_complement": 1.0 - eer, **{f"eer_{a}": e for a, e in eers.items()}}

    return validate


def training_batches(
    recipe: TrainRecipe,
    loss: torch.nn.Module,
    data: SignatureSet,
    images: Tensor,
    writers: Sequence[str],
    mix: tuple[float, float, float] = (0.5, 0.3, 0.2),
) -> SignaturePairBatches | ClassBatches:
    """The batches the recipe's loss needs, from the training ``writers`` only.

    Pair losses (contrastive, as SigNet) get :class:`SignaturePairBatches` of
    ``recipe.batches.examples_per_epoch`` pairs in the proportions ``mix``. Mined losses
    (``mined_triplet``) get class-balanced batches of ``m_per_class`` images per class where the
    classes come from ``groups_per_batch`` writers: each writer's genuine signatures and its
    skilled forgeries are two classes, so the forgeries are the miner's hard negatives.
    """
    augment = build_augmentation(recipe.augmentation)
    settings = recipe.batches
    if getattr(loss, "kind", None) == "labelled":
        return ClassBatches(
            signature_labelled(images, data, writers), settings.batch_size,
            settings.m_per_class, recipe.seed, augment, settings.batches_per_epoch,
            settings.groups_per_batch or settings.batch_size // (2 * settings.m_per_class),
        )  # fmt: skip
    return SignaturePairBatches(
        images, data, list(writers), settings.examples_per_epoch, settings.batch_size,
        recipe.seed, mix, augment,
    )  # fmt: skip


def train_fold(
    recipe: TrainRecipe,
    data: SignatureSet,
    images: Tensor,
    split: WriterSplit,
    out_dir: str | Path,
    mix: tuple[float, float, float] = (0.5, 0.3, 0.2),
    show_progress: bool = True,
    resume: bool = False,
) -> TrainedFold:
    """Train the recipe's twin network on ``split.train`` writers only (batches from
    :func:`training_batches`: SigNet pairs or writer-grouped mined batches); the best epoch is
    chosen by the skilled-forgery EER with 5 references on the validation writers. ``resume``
    continues from the checkpoint in ``out_dir``.
    """
    from siamkit.recipe import build_network, build_recipe_loss

    torch.manual_seed(recipe.seed)
    network, head_spec = build_network(recipe)
    labels, _ = signature_classes(data)  # the classes of signature_labelled, without the images
    train_labels = torch.from_numpy(labels[data.of_writers(split.train)])
    loss = build_recipe_loss(recipe, network, train_labels)
    batches = training_batches(recipe, loss, data, images, split.train, mix)
    validate = reference_validator(images, data, split.val, seed=recipe.seed)
    training = recipe.training.model_copy(update={"seed": recipe.seed})
    started = time.perf_counter()
    history = fit(
        network, loss, batches, training, out_dir, validate=validate,
        monitor="eer_complement", show_progress=show_progress, resume=resume,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    return TrainedFold(network.cpu().eval(), head_spec, history, seconds)


def choose_normalisation(
    embedded: EmbeddedSignatures, val_writers: Sequence[str], k: int = 5, seed: int = 0
) -> tuple[str, dict[str, float]]:
    """The score normalisation (``none`` or ``spread``) with the lower skilled-forgery EER of
    the validation writers with ``k`` references (best aggregate), and each one's EER."""
    eers = {}
    for normalisation in NORMALISATIONS:
        trials, scores = embedded.scores(val_writers, (k,), seed, normalisation=normalisation)[k]
        mask = trials.of_kind("skilled")
        eers[normalisation] = min(
            equal_error_rate(s[mask], trials.labels[mask])[0] for s in scores.values()
        )
    return min(eers, key=eers.__getitem__), eers


def calibrate(
    embedded: EmbeddedSignatures,
    val_writers: Sequence[str],
    ks: Sequence[int] = KS,
    seed: int = 0,
    normalisation: str = "none",
    rule: str = "eer",
) -> Thresholds:
    """Per-K, per-aggregate thresholds chosen by ``rule`` (default: at the skilled-forgery EER)
    on the validation writers; :func:`thresholds_by_rule` also says what they support."""
    scored = embedded.scores(val_writers, ks, seed, normalisation=normalisation)
    return thresholds_by_rule(scored, rule)[0]


def evaluate_writers(
    embedded: EmbeddedSignatures,
    writers: Sequence[str],
    thresholds: Thresholds | None,
    ks: Sequence[int] = KS,
    seed: int = 1000,
    normalisation: str = "none",
) -> tuple[list[dict[str, Any]], dict[int, tuple[ReferenceTrials, dict[str, np.ndarray]]]]:
    """Rows (K, aggregate, forgery, AUC, EER, accuracy, FAR, FRR) on ``writers`` at the given
    thresholds, and the raw trials and scores (for plots)."""
    scored = embedded.scores(writers, ks, seed, normalisation=normalisation)
    rows = []
    for k, (trials, scores) in scored.items():
        at = None if thresholds is None else thresholds[k]
        rows += [{"k": k, **row} for row in reference_report(scores, trials, at)]
    return rows, scored


@dataclass(frozen=True)
class FoldEvaluation:
    """One trained fold through the protocol: normalisation and thresholds from the validation
    writers, the test writers' rows, and the validation K = 5 skilled EER of each aggregate."""

    normalisation: str
    normalisation_eers: dict[str, float]
    thresholds: Thresholds
    val_eer: dict[str, float]
    rows: list[dict[str, Any]]
    scored: dict[int, tuple[ReferenceTrials, dict[str, np.ndarray]]]
    rule: str = "eer"
    support: Support = field(default_factory=dict)  # what the validation trials support

    @property
    def aggregate(self) -> str:
        """The aggregate with the lowest validation EER (the one ``verify`` should use)."""
        return min(self.val_eer, key=self.val_eer.__getitem__)


def evaluate_fold(
    network: SiameseNetwork,
    images: Tensor,
    data: SignatureSet,
    split: WriterSplit,
    test_ks: Sequence[int] = KS,
    seed: int = 0,
    rule: str = "eer",
) -> FoldEvaluation:
    """Embed the fold's validation and test writers once; choose the score normalisation and
    the thresholds for every K (by ``rule``, the recipe's ``evaluation.threshold_rule``) on the
    validation writers; score the test writers."""
    embedded = EmbeddedSignatures.of(network, images, data, [*split.val, *split.test])
    normalisation, normalisation_eers = choose_normalisation(embedded, split.val)
    val_scored = embedded.scores(split.val, KS, seed, normalisation=normalisation)
    thresholds, support = thresholds_by_rule(val_scored, rule)
    val_rows, _ = evaluate_writers(embedded, split.val, None, (5,), normalisation=normalisation)
    rows, scored = evaluate_writers(
        embedded, split.test, thresholds, test_ks, normalisation=normalisation
    )
    val_eer = {r["aggregate"]: r["eer"] for r in val_rows if r["forgery"] == "skilled"}
    return FoldEvaluation(
        normalisation, normalisation_eers, thresholds, val_eer, rows, scored, rule, support
    )


def save_signature_model(
    folder: str | Path,
    fold: TrainedFold,
    recipe: TrainRecipe,
    thresholds: Thresholds,
    split: WriterSplit,
    normalisation: str = "none",
    aggregate: str = "mean",
    support: Support | None = None,
) -> Path:
    """Save the fold's model with its SigNet preprocessing, the per-aggregate reference
    thresholds (K = 5, or the largest K) that ``siamkit verify --references`` applies, the
    thresholds for every K, the score normalisation they were chosen with, the aggregate
    ``verify`` uses by default, and the writer split (so ``siamkit eval`` tests unseen
    writers). ``support`` (:attr:`FoldEvaluation.support`) is stored beside the thresholds as
    ``reference_threshold_support_by_k``, with its ``reference_threshold_rule``."""
    if aggregate not in AGGREGATES:
        raise DataError(f"reference aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    extra = {
        "task": "signatures",
        **reference_threshold_extra(thresholds, support),
        "reference_normalisation": check_normalisation(normalisation),
        "reference_aggregate": aggregate,
        "writers": {"train": split.train, "val": split.val, "test": split.test},
        "recipe": recipe.model_dump(mode="json"),
    }
    return save_model(
        folder, fold.network, recipe.encoder, fold.head_spec, preprocess_of(recipe).spec,
        pair_threshold(thresholds), extra,
    )  # fmt: skip


def reference_threshold_extra(thresholds: Thresholds, support: Support | None) -> dict[str, Any]:
    """The config extra keys of a signature model's thresholds: the main ones (K = 5, or the
    largest K), every K's, and (with ``support``) what the validation writers support for each
    with the rule they were chosen by."""
    k_main = 5 if 5 in thresholds else max(thresholds)
    extra: dict[str, Any] = {
        "reference_thresholds": thresholds[k_main],
        "reference_thresholds_k": k_main,
        "reference_thresholds_by_k": {str(k): t for k, t in thresholds.items()},
    }
    if support:
        extra[SUPPORT_KEY] = {str(k): rows for k, rows in support.items()}
        extra["reference_threshold_rule"] = next(iter(support[k_main].values()))["rule"]
    return extra


def pair_threshold(thresholds: Thresholds) -> float | None:
    """The model's pair threshold (one reference, mean aggregate), ``None`` without K = 1."""
    return thresholds[1]["mean"] if 1 in thresholds else None


# --- siamkit eval MODEL SIGNATURE_TREE ------------------------------------------------------


def is_signature_tree(path: Path) -> bool:
    """A folder with ``genuine/<writer>/`` sub-folders (``forged/<writer>/`` optional)."""
    genuine = path / "genuine"
    return genuine.is_dir() and any(p.is_dir() for p in genuine.iterdir())


def _thresholds_for(model: Model, ks: Sequence[int]) -> tuple[Thresholds | None, str]:
    extra = model.config.extra
    saved = {k: {a: saved_reference_threshold(extra, k, a) for a in AGGREGATES} for k in ks}
    kept = [a for a in AGGREGATES if all(saved[k][a] is not None for k in ks)]
    if kept:
        source = "thresholds chosen on validation writers (the nearest saved K)"
        if missing := [a for a in AGGREGATES if a not in kept]:
            source += f"; {', '.join(missing)}: none saved, at its own EER (optimistic)"
        return {k: {a: saved[k][a] for a in kept} for k in ks}, source  # type: ignore[misc]
    if model.threshold is not None:
        return {k: dict.fromkeys(AGGREGATES, model.threshold) for k in ks}, "the model threshold"
    return None, "no saved threshold: accuracy/FAR/FRR at each row's own EER (optimistic)"


def evaluate_signature_tree(model: Model, root: Path) -> Report:
    """Reference-set verification (K = 1, 3, 5) on every writer in ``root`` the model never
    trained or validated on (see :mod:`siamkit.evaluation.seen_classes`)."""
    data = read_tree(root)
    chosen = select_unseen(seen_classes(model), data.writer_ids(), root, WRITERS)
    writers = chosen.evaluated
    # only the evaluated writers' images (the trials' draws are by position: same figures)
    kept = data.of_writers(writers)
    data = SignatureSet([data.paths[i] for i in kept], data.writers[kept], data.forged[kept])
    fewest = min(len(data.genuine_of(w)) for w in writers)
    ks = [k for k in KS if k < fewest]
    images = model.prepare(data.paths)
    thresholds, source = _thresholds_for(model, ks)
    normalisation = model.config.extra.get("reference_normalisation", "none")
    embedded = EmbeddedSignatures.of(model.network, images, data, writers)
    rows, _ = evaluate_writers(embedded, writers, thresholds, ks, normalisation=normalisation)
    keep = ("k", "aggregate", "forgery", "eer", "accuracy", "far", "frr", "auc", "threshold")
    table = [{key: row[key] for key in keep} for row in rows]
    notes = [*chosen.notes, f"decisions at {source}; score normalisation: {normalisation}"]
    notes += with_saved_support(table, model.config.extra)  # what validation supports
    if not data.forged.any():
        notes.append(f"no skilled forgeries in {root}/forged/: random forgeries only")
    return Report(f"signature verification on {root.name}", table, notes)


register_evaluator("signature tree (genuine/, forged/)", is_signature_tree, evaluate_signature_tree)
