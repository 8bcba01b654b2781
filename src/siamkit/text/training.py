"""Training text models on sentence pairs: ``siamkit train CONFIG.yaml`` with ``data: stsb``
or ``data: mrpc``.

A class dataset's recipe draws pairs from class labels; sentence-pair data instead comes as given
pairs with a graded score (STS-B) or a 0/1 label (MRPC), and a word-level encoder needs its
vocabulary built from the training text first. For such a recipe (the one
:class:`~siamkit.recipe_schema.TrainRecipe` schema) this module builds the encoder (vocabulary
for ``text_rnn``), trains with the core :func:`~siamkit.training.fit` (checkpoints, resume, early
stopping on dev Spearman or AUC), chooses the decision threshold and saves a model folder that
``siamkit.load`` and every text command accept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from siamkit import distributed
from siamkit.calibration import calibrate_run
from siamkit.checkpoint import atomic_write_text
from siamkit.data.text import TextPairBatches, TextPairs, TextSplits, read_text_splits
from siamkit.encoders import build_encoder
from siamkit.encoders.text import (
    Vocabulary,
    pretrained_model,
    pretrained_words,
    wordpiece_vectors,
)
from siamkit.errors import ConfigError
from siamkit.evaluation.verification import choose_threshold
from siamkit.heads import CosineHead
from siamkit.losses import build_loss
from siamkit.model import save_model
from siamkit.recipe import RecipeResult, keep_weights, other_rank_result, start_run_folder
from siamkit.recipe_schema import SentencePairData, TrainRecipe
from siamkit.registry import ComponentSpec
from siamkit.siamese import SiameseNetwork
from siamkit.text.paraphrase import paraphrase_report
from siamkit.text.similarity import evaluate_sts, similarity
from siamkit.text_losses import ScoredPairLoss, binarize
from siamkit.training import EpochCallback, fit


def pair_data(recipe: TrainRecipe) -> SentencePairData:
    """The recipe's ``data.params`` as sentence-pair settings (checked when the recipe is read)."""
    return SentencePairData.model_validate(recipe.data.params)


def build_text_encoder(recipe: TrainRecipe, train: Sequence[TextPairs]) -> nn.Module:
    """The recipe's encoder; ``text_rnn`` gets a vocabulary of the training sentences and,
    if asked, embeddings initialised from a sentence-transformer's word pieces."""
    if recipe.encoder.name != "text_rnn":
        if recipe.init_embeddings:
            raise ConfigError("init_embeddings applies to the text_rnn encoder only")
        return build_encoder(recipe.encoder)
    settings = recipe.vocabulary
    if settings.pretrained_words and not recipe.init_embeddings:
        raise ConfigError("vocabulary.pretrained_words needs init_embeddings (the model to take)")
    pretrained = pretrained_model(recipe.init_embeddings) if recipe.init_embeddings else None
    extra = pretrained_words(pretrained) if settings.pretrained_words else ()
    texts = [text for pairs in train for text in pairs.texts()]
    vocabulary = Vocabulary.build(texts, settings.min_freq, settings.max_size, extra)
    encoder = build_encoder(recipe.encoder, vocabulary=vocabulary)
    if pretrained is not None:
        encoder.init_embeddings(wordpiece_vectors(vocabulary.words, pretrained))
    return encoder


def build_text_loss(recipe: TrainRecipe, network: SiameseNetwork, max_score: float) -> nn.Module:
    """The loss; scored losses get the dataset's ``max_score`` unless the recipe sets one."""
    spec = recipe.loss
    if spec.name in ("cosent", "cosine_regression") and "max_score" not in spec.params:
        spec = ComponentSpec(name=spec.name, params={**spec.params, "max_score": max_score})
    loss = build_loss(spec, network)
    if getattr(loss, "kind", None) != "pair":
        raise ConfigError(
            f"loss {spec.name!r} takes {getattr(loss, 'kind', '?')}s; sentence-pair training "
            "needs a pair loss (cosent, cosine_regression, contrastive, cosine_embedding, ranking)"
        )
    return loss


def training_pairs(loss: nn.Module, splits: TextSplits) -> TextPairs:
    """Train pairs with the targets ``loss`` expects: scores, or 0/1 labels (1 = same)."""
    train = splits.train
    if isinstance(loss, ScoredPairLoss):
        return train
    labels = binarize(train.scores, splits.label_threshold)
    return TextPairs(train.a, train.b, labels)


def extra_training_splits(name: str, seed: int, splits: TextSplits) -> TextSplits:
    """The splits of dataset ``name`` (from the datasets root, see
    :func:`~siamkit.data.paths.datasets_root`) with scores rescaled to ``splits``' range."""
    extra = read_text_splits(name, seed=seed)
    factor = splits.max_score / extra.max_score
    train = TextPairs(extra.train.a, extra.train.b, extra.train.scores * factor)
    return TextSplits(
        train, extra.val, extra.test, splits.max_score, extra.label_threshold * factor
    )


def pair_validator(splits: TextSplits):
    """``validate`` for fit: dev Spearman/Pearson for scored data, AUC for 0/1 data."""
    val = splits.val
    if splits.max_score > 1:
        return lambda network: evaluate_sts(network, val)

    def auc(network: SiameseNetwork) -> dict[str, float]:
        return {"auc": float(roc_auc_score(val.scores.numpy(), similarity(network, val.a, val.b)))}

    return auc


def decision_threshold(
    network: SiameseNetwork, splits: TextSplits, rule: str = "accuracy"
) -> float:
    """The cosine threshold for "same" by ``rule`` (highest accuracy or F1, the EER, or a target
    ``far<=X`` / ``frr<=X``, see :func:`~siamkit.evaluation.verification.choose_threshold`): on the
    train pairs for 0/1 data (MRPC), on the dev pairs binarised at ``label_threshold`` for scored
    data (STS-B)."""
    pairs = splits.train if splits.max_score <= 1 else splits.val
    labels = binarize(pairs.scores, splits.label_threshold)
    return choose_threshold(similarity(network, pairs.a, pairs.b), labels, rule)


def labelled_scores(
    network: SiameseNetwork, pairs: TextPairs, label_threshold: float
) -> tuple[Any, Any]:
    """Cosine scores of ``pairs`` and their 0/1 labels (graded scores binarised at
    ``label_threshold``), for calibration."""
    return similarity(network, pairs.a, pairs.b), binarize(pairs.scores, label_threshold)


def run_text_recipe(
    recipe: TrainRecipe,
    out_dir: str | Path,
    resume: bool = False,
    data_dir: str | Path | None = None,
    show_progress: bool = True,
    callbacks: Sequence[EpochCallback] = (),
) -> RecipeResult:
    """Train, calibrate, evaluate on the test split and save the model under ``out_dir``
    (what :func:`siamkit.recipe.run_recipe` does for a sentence-pair recipe)."""
    out_dir = start_run_folder(recipe, out_dir)
    splits, all_splits = read_pair_splits(recipe, data_dir)
    torch.manual_seed(recipe.seed)
    network = SiameseNetwork(
        build_text_encoder(recipe, [s.train for s in all_splits]), CosineHead()
    )
    loss = build_text_loss(recipe, network, splits.max_score)
    sources = [training_pairs(loss, s) for s in all_splits]
    batches = TextPairBatches(sources, recipe.batches.batch_size, recipe.seed)
    evaluation = recipe.evaluation
    config = recipe.training.model_copy(update={"seed": recipe.seed})
    started = time.perf_counter()
    history = fit(
        network, loss, batches, config, out_dir, validate=pair_validator(splits),
        monitor=evaluation.monitor, resume=resume, show_progress=show_progress,
        callbacks=callbacks,
    )  # fmt: skip
    train_seconds = time.perf_counter() - started
    if not distributed.is_main():
        return other_rank_result(out_dir, history)
    keep_weights(network, evaluation.keep, history, out_dir)
    network.cpu().eval()
    threshold = decision_threshold(network, splits, evaluation.threshold_rule)
    if splits.max_score > 1:
        test = evaluate_sts(network, splits.test)
    else:
        test = paraphrase_report(network, splits.test, threshold)
    calibrator, calibration = calibrate_run(
        labelled_scores(network, splits.val, splits.label_threshold),
        labelled_scores(network, splits.test, splits.label_threshold), "cosine",
        out_dir / "reliability.png", recipe.seed, "Reliability on the test pairs",
    )  # fmt: skip
    model_dir = save_model(
        out_dir / "model", network, recipe.encoder, {"name": "cosine"}, None, threshold,
        extra={"task": "text", "recipe": recipe.model_dump(mode="json"), "test": test,
               "calibration": calibrator and calibrator.to_json()},
    )  # fmt: skip
    result = RecipeResult(model_dir, history, threshold, test, train_seconds=train_seconds,
                          calibration=calibration)  # fmt: skip
    atomic_write_text(out_dir / "report.json", json.dumps(summary(result), indent=2))
    return result


def read_pair_splits(
    recipe: TrainRecipe, data_dir: str | Path | None = None
) -> tuple[TextSplits, list[TextSplits]]:
    """The recipe's dataset splits (cut to ``train_pairs`` when set), and those with the
    ``extra_train`` dataset's splits after them."""
    params = pair_data(recipe)
    folder = data_dir or recipe.data_dir
    name = recipe.data.name
    splits = read_text_splits(name, Path(folder) if folder else None, seed=recipe.seed)
    if params.train_pairs is not None and params.train_pairs < len(splits.train):
        order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))
        splits.train = splits.train.subset(order[: params.train_pairs])
    if params.extra_train is None:
        return splits, [splits]
    return splits, [splits, extra_training_splits(params.extra_train, recipe.seed, splits)]


def summary(result: RecipeResult) -> dict[str, Any]:
    """A JSON-able summary of a run."""
    return {
        "model_dir": str(result.model_dir),
        "threshold": result.threshold,
        "best_epoch": result.history.best_epoch,
        "epochs_run": len(result.history.epochs),
        "train_seconds": result.train_seconds,
        "test": result.test,
        "history": result.history.epochs,
        "calibration": result.calibration,
    }
