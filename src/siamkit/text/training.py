"""Training text models on sentence pairs: ``siamkit train-text CONFIG.yaml``.

The core recipe (``siamkit train``) draws pairs from class labels; sentence-pair data instead
comes as given pairs with a graded score (STS-B) or a 0/1 label (MRPC), and a word-level encoder
needs its vocabulary built from the training text first. This module reads such a recipe, builds
the encoder (vocabulary for ``text_rnn``), trains with the core :func:`~siamkit.training.fit`
(checkpoints, resume, early stopping on dev Spearman or AUC), chooses the decision threshold and
saves a model folder that ``siamkit.load`` and every text command accept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.metrics import roc_auc_score
from torch import nn

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
from siamkit.heads import CosineHead
from siamkit.losses import build_loss
from siamkit.model import save_model
from siamkit.recipe import parse_config, read_yaml
from siamkit.registry import ComponentSpec
from siamkit.siamese import SiameseNetwork
from siamkit.text.paraphrase import ThresholdRule, choose_pair_threshold, paraphrase_report
from siamkit.text.similarity import evaluate_sts, similarity
from siamkit.text_losses import ScoredPairLoss, binarize
from siamkit.training import History, TrainConfig, fit


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VocabularySettings(_Strict):
    """How the word-level encoder's vocabulary is built from the training sentences."""

    min_freq: int = Field(1, ge=1)
    max_size: int | None = Field(None, ge=3)
    pretrained_words: bool = Field(
        False,
        description="also add the whole words of the init_embeddings model's word-piece "
        "vocabulary, so words unseen in training keep their pre-trained vector",
    )


class TextRecipe(_Strict):
    """Everything ``siamkit train-text`` needs, as read from a YAML file."""

    seed: int = 0
    data: Literal["stsb", "mrpc"] = "stsb"
    data_dir: str | None = None
    extra_train: Literal["stsb", "mrpc"] | None = Field(
        None,
        description="also train on this dataset's training pairs (from the datasets root; "
        "targets rescaled to the main dataset's range) in batches of their own; validation "
        "and test stay on `data`",
    )
    encoder: ComponentSpec
    vocabulary: VocabularySettings = Field(default_factory=VocabularySettings)
    init_embeddings: str | None = Field(
        None, description="sentence-transformer whose word-piece vectors initialise text_rnn"
    )
    loss: ComponentSpec = Field(default_factory=lambda: ComponentSpec(name="cosent"))
    batch_size: int = Field(16, ge=2)
    train_pairs: int | None = Field(
        None, ge=2, description="train on a seeded subset of this many pairs (quick runs)"
    )
    threshold_rule: ThresholdRule = Field(
        "accuracy", description="the decision threshold maximises accuracy or F1 of 'same'"
    )
    training: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _extra_is_another_dataset(self) -> TextRecipe:
        if self.extra_train == self.data:
            raise ValueError(f"extra_train must name another dataset than data ({self.data!r})")
        return self


def load_text_recipe(path: str | Path) -> TextRecipe:
    """Read and validate a text recipe YAML; errors name the file and the offending field."""
    return parse_config(read_yaml(path), TextRecipe, str(path))


def build_text_encoder(recipe: TextRecipe, train: Sequence[TextPairs]) -> nn.Module:
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


def build_text_loss(recipe: TextRecipe, network: SiameseNetwork, max_score: float) -> nn.Module:
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


def extra_training_splits(recipe: TextRecipe, splits: TextSplits) -> TextSplits:
    """The ``extra_train`` dataset's splits (from the datasets root, see
    :func:`~siamkit.data.paths.datasets_root`) with scores rescaled to ``splits``' range."""
    extra = read_text_splits(recipe.extra_train, seed=recipe.seed)
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
    network: SiameseNetwork, splits: TextSplits, rule: ThresholdRule = "accuracy"
) -> float:
    """The accuracy- (or F1-) maximising cosine threshold for "same": on the train pairs for 0/1
    data (MRPC), on the dev pairs binarised at ``label_threshold`` for scored data (STS-B)."""
    pairs = splits.train if splits.max_score <= 1 else splits.val
    labels = binarize(pairs.scores, splits.label_threshold)
    return choose_pair_threshold(similarity(network, pairs.a, pairs.b), labels, rule)


@dataclass
class TextRunResult:
    """What a text recipe run produced."""

    model_dir: Path
    history: History
    threshold: float
    test: dict[str, float]
    train_seconds: float


def run_text_recipe(
    recipe: TextRecipe,
    out_dir: str | Path,
    resume: bool = False,
    data_dir: str | Path | None = None,
    show_progress: bool = True,
) -> TextRunResult:
    """Train, calibrate, evaluate on the test split and save the model under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "recipe.json", recipe.model_dump_json(indent=2))
    folder = data_dir or recipe.data_dir
    splits = read_text_splits(recipe.data, Path(folder) if folder else None, seed=recipe.seed)
    if recipe.train_pairs is not None and recipe.train_pairs < len(splits.train):
        order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))
        splits.train = splits.train.subset(order[: recipe.train_pairs])
    extra = extra_training_splits(recipe, splits) if recipe.extra_train else None
    all_splits = [splits] if extra is None else [splits, extra]
    torch.manual_seed(recipe.seed)
    network = SiameseNetwork(
        build_text_encoder(recipe, [s.train for s in all_splits]), CosineHead()
    )
    loss = build_text_loss(recipe, network, splits.max_score)
    sources = [training_pairs(loss, s) for s in all_splits]
    batches = TextPairBatches(sources, recipe.batch_size, recipe.seed)
    monitor = "spearman" if splits.max_score > 1 else "auc"
    config = recipe.training.model_copy(update={"seed": recipe.seed})
    started = time.perf_counter()
    history = fit(
        network, loss, batches, config, out_dir, validate=pair_validator(splits),
        monitor=monitor, resume=resume, show_progress=show_progress,
    )  # fmt: skip
    train_seconds = time.perf_counter() - started
    network.cpu().eval()
    threshold = decision_threshold(network, splits, recipe.threshold_rule)
    if splits.max_score > 1:
        test = evaluate_sts(network, splits.test)
    else:
        test = paraphrase_report(network, splits.test, threshold)
    model_dir = save_model(
        out_dir / "model", network, recipe.encoder, {"name": "cosine"}, None, threshold,
        extra={"task": "text", "text_recipe": recipe.model_dump(mode="json"), "test": test},
    )  # fmt: skip
    result = TextRunResult(model_dir, history, threshold, test, train_seconds)
    atomic_write_text(out_dir / "report.json", json.dumps(summary(result), indent=2))
    return result


def summary(result: TextRunResult) -> dict[str, Any]:
    """A JSON-able summary of a run."""
    return {
        "model_dir": str(result.model_dir),
        "threshold": result.threshold,
        "best_epoch": result.history.best_epoch,
        "epochs_run": len(result.history.epochs),
        "train_seconds": result.train_seconds,
        "test": result.test,
        "history": result.history.epochs,
    }
