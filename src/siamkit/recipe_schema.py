"""The recipe schema: what a training recipe YAML may say, checked before anything runs.

One schema for every kind of data: ``data`` names a class dataset (labelled items whose pairs
are drawn per batch: digits, Omniglot, faces, signatures) or a sentence-pair dataset (given
pairs with graded scores or 0/1 labels: STS-B, MRPC), and ``encoder``, ``head``, ``loss``,
``batches``, ``training`` and ``evaluation`` mean the same for both. :mod:`siamkit.recipe` runs
a recipe; errors name the file and each offending field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from siamkit.errors import ConfigError
from siamkit.registry import ComponentSpec
from siamkit.training import TrainConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


SENTENCE_PAIR_DATASETS = ("stsb", "mrpc")
"""``data`` names of given sentence pairs (STS-B graded 0-5, MRPC labelled 0/1), trained by
:mod:`siamkit.text.training`; every other name is a class dataset (a reader of
:data:`~siamkit.data.datasets.DATASETS`) whose pairs are drawn from its classes."""


MOVED = {
    "batch_size": "batches.batch_size",
    "threshold_rule": "evaluation.threshold_rule",
    "extra_train": "data.params.extra_train",
    "train_pairs": "data.params.train_pairs",
}
"""Top-level settings of the former text-recipe dialect and where they are now."""


class BatchSettings(_Strict):
    """How training batches are drawn; ``batch_size`` is the examples of one step for every
    dataset. Class datasets: the loss decides the kind (pair losses get balanced pairs, the
    triplet loss triplets, mined losses class-balanced batches of ``m_per_class`` per class).
    Sentence-pair datasets: each given pair is used once per epoch, in shuffled batches of
    ``batch_size`` pairs; the other settings apply to class datasets only."""

    batch_size: int = Field(64, ge=2)
    examples_per_epoch: int = Field(10_000, ge=1, description="pairs or triplets per epoch")
    positive_fraction: float = Field(0.5, gt=0, lt=1)
    m_per_class: int = Field(4, ge=2)
    batches_per_epoch: int | None = Field(None, ge=1)
    groups_per_batch: int | None = Field(
        None, ge=1, description="draw each mined batch's classes from this many groups"
    )


class FewShotSettings(_Strict):
    """One N-way K-shot evaluation on the test classes."""

    n_way: int = Field(ge=2)
    k_shot: int = Field(1, ge=1)
    episodes: int = Field(1000, ge=1)
    within_groups: bool = False


class EvaluationSettings(_Strict):
    """Validation during training and the final report on the test split. ``monitor``,
    ``threshold_rule`` and ``keep`` apply to every dataset; the drawn pairs, few-shot episodes
    and plots to class datasets (sentence-pair datasets are scored on their given pairs)."""

    val_pairs: int = Field(2000, ge=2)
    test_pairs: int = Field(5000, ge=2)
    monitor: Literal["auc", "eer_complement", "spearman"] = Field(
        "auc", description="the validation metric that picks the best epoch; default auc, "
        "spearman for graded sentence pairs (stsb)",
    )  # fmt: skip
    threshold_rule: str = Field(
        "eer", description="the decision threshold is at the validation EER, or maximises "
        "accuracy or F1 of 'same' (sentence pairs only), or meets a target rate on the "
        "validation pairs: 'far<=0.01' (at most 1% of different pairs accepted) or 'frr<=0.05' "
        "(at most 5% of same pairs rejected); default eer, accuracy for sentence pairs",
    )  # fmt: skip
    keep: Literal["best", "last"] = Field(
        "best", description="weights to keep: the best validation epoch, or the last (when the "
        "validation classes are too few to pick an epoch reliably)",
    )  # fmt: skip
    fewshot: list[FewShotSettings] = Field(default_factory=list)
    plots: bool = True
    explain: int = Field(
        4, ge=0, le=4, description="image models: explain this many test pairs (a right and a "
        "wrong decision on genuine and on impostor pairs) into explained/; 0 turns it off",
    )  # fmt: skip

    @field_validator("threshold_rule")
    @classmethod
    def _known_rule(cls, rule: str) -> str:
        from siamkit.errors import DataError
        from siamkit.evaluation.verification import check_threshold_rule

        try:
            return check_threshold_rule(rule)
        except DataError as error:
            raise PydanticCustomError("threshold_rule", str(error)) from error


class VocabularySettings(_Strict):
    """How a word-level text encoder's (``text_rnn``) vocabulary is built from the training
    sentences."""

    min_freq: int = Field(1, ge=1)
    max_size: int | None = Field(None, ge=3)
    pretrained_words: bool = Field(
        False,
        description="also add the whole words of the init_embeddings model's word-piece "
        "vocabulary, so words unseen in training keep their pre-trained vector",
    )


class EnsembleSettings(_Strict):
    """Known-class classification by a siamese model and a conventional classifier together
    (:mod:`siamkit.ensemble`). The classes are those of the reader's ``splits`` (all people of
    AT&T faces; Omniglot's background characters with ``splits: [train, val]``); each class's
    items are cut into ``train_per_class`` training, ``val_per_class`` validation and the rest test
    items. The siamese network trains on the training items as the recipe says. The classifier is
    ``cnn`` (a second network of the recipe's encoder trained with a softmax over learned class
    weights, cross-entropy; ``classifier_epochs`` epochs) or ``logistic`` (a logistic regression
    on ``features``: raw pixels or the siamese embeddings, ``C`` from ``c_grid``). The validation
    items set the temperatures, ``C`` and the ensemble weight."""

    splits: list[Literal["train", "val", "test"]] = Field(
        default_factory=lambda: ["train", "val", "test"],
        description="which of the reader's splits give the known classes",
    )
    train_per_class: int = Field(5, ge=1)
    val_per_class: int = Field(2, ge=1)
    classifier: Literal["cnn", "logistic"] = "cnn"
    classifier_epochs: int | None = Field(
        None, ge=1, description="epochs of the cnn classifier (default: the recipe's epochs)"
    )
    features: Literal["pixels", "embedding"] = Field(
        "pixels", description="the logistic classifier's input"
    )
    c_grid: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0], min_length=1)
    weight_steps: int = Field(20, ge=1, description="ensemble weights tried: 0, 1/n, ..., 1")


class SentencePairData(_Strict):
    """``data.params`` of a sentence-pair dataset (``stsb``, ``mrpc``)."""

    extra_train: Literal["stsb", "mrpc"] | None = Field(
        None,
        description="also train on this dataset's training pairs (from the datasets root; "
        "targets rescaled to the main dataset's range) in batches of their own; validation "
        "and test stay on `data`",
    )
    train_pairs: int | None = Field(
        None, ge=2, description="train on a seeded subset of this many pairs (quick runs)"
    )


TUNE_METRICS = {
    "auc": "maximize", "eer_complement": "maximize", "spearman": "maximize",
    "pearson": "maximize", "eer": "minimize", "loss": "minimize",
}  # fmt: skip
"""Per-epoch metrics a ``tune:`` block may optimise (validation metrics, or the training loss),
with the direction each is optimised in unless ``tune.direction`` says otherwise."""


class TuneParameter(_Strict):
    """One searched setting of a ``tune:`` block: a float or int range (``low``..``high``, on a
    log scale with ``log``, in steps of ``step``) or a list of ``choices``."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[str | bool | int | float | None] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TuneParameter:
        if self.type == "categorical":
            if not self.choices or self.low is not None or self.high is not None:
                raise PydanticCustomError(
                    "tune", "categorical takes a non-empty choices list and no low/high"
                )
            return self
        if self.choices is not None or self.low is None or self.high is None:
            raise PydanticCustomError("tune", f"{self.type} takes low and high, not choices")
        if self.low >= self.high:
            raise PydanticCustomError("tune", f"low ({self.low}) must be below high ({self.high})")
        if self.log and (self.low <= 0 or self.step is not None):
            raise PydanticCustomError("tune", "log needs low > 0 and no step")
        if self.type == "int" and not all(
            float(v).is_integer() for v in (self.low, self.high, self.step or 1)
        ):
            raise PydanticCustomError("tune", "int takes whole low, high and step")
        return self


class TuneSettings(_Strict):
    """The search space and rules of ``siamkit tune`` (ignored by ``siamkit train``).

    ``params`` maps a dotted path into the recipe (``training.lr``, ``loss.params.margin``,
    ``augmentation.0.params.degrees``) to its range or choices; ``metric`` (default: the
    recipe's ``evaluation.monitor``) is read from each epoch's validation record, and a trial's
    value is that of its best epoch. TPE samples after ``startup_trials`` random trials; the
    median pruner stops a trial whose epoch is worse than the median of earlier trials at that
    epoch, once ``prune_startup_trials`` trials have finished and after
    ``prune_warmup_epochs`` epochs.
    """

    params: dict[str, TuneParameter] = Field(min_length=1)
    metric: str | None = None
    direction: Literal["maximize", "minimize"] | None = None
    startup_trials: int = Field(10, ge=0)
    pruner: Literal["median", "none"] = "median"
    prune_startup_trials: int = Field(5, ge=0)
    prune_warmup_epochs: int = Field(0, ge=0)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        if value is not None and value not in TUNE_METRICS:
            raise PydanticCustomError(
                "tune", f"unknown metric {value!r}; expected one of {sorted(TUNE_METRICS)}"
            )
        return value


def tune_path_problems(recipe: dict[str, Any], paths: list[str]) -> list[str]:
    """Paths of a ``tune:`` block that do not lead to a setting of ``recipe`` (its dict form).
    Every step must exist, except a new last key under a component's ``params``."""
    problems = []
    for path in paths:
        node: Any = recipe
        keys = path.split(".")
        for depth, key in enumerate(keys):
            last, parent = depth == len(keys) - 1, keys[depth - 1] if depth else ""
            if isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            elif isinstance(node, dict) and key in node and key != "tune":
                node = node[key]
            elif isinstance(node, dict) and last and parent == "params":
                break
            else:
                where = ".".join(keys[:depth]) or "the recipe"
                problems.append(f"tune.params.{path}: {where} has no setting {key!r}")
                break
    return problems


class TrainRecipe(_Strict):
    """Everything ``siamkit train`` needs, as read from a YAML file: one schema for images,
    text and any other input.

    ``data`` names the dataset and its reader's params; a class dataset (digits, omniglot,
    att_faces, signatures...) gives labelled items whose pairs are drawn per batch, a
    sentence-pair dataset (:data:`SENTENCE_PAIR_DATASETS`) gives the pairs and their targets.
    ``encoder``, ``head`` and ``loss`` are registry specs (a bare name stands for
    ``{name: ...}``); ``batches``, ``training`` and ``evaluation`` say how to draw batches, fit
    and choose the threshold. Settings that only make sense for the other kind of dataset are
    refused when they differ from their defaults.
    """

    seed: int = 0
    data: ComponentSpec
    data_dir: str | None = None
    encoder: ComponentSpec
    encoder_b: ComponentSpec | None = Field(
        None,
        description="a second tower: train a two-tower model (siamkit.two_tower) matching each "
        "class's name (tower a: encoder, e.g. text_rnn) with its items (tower b: encoder_b)",
    )
    init_weights: str | None = Field(
        None,
        description="safetensors file of pre-trained encoder weights to start from (e.g. "
        "written by `siamkit convert-face-api`); must match the encoder's pre-trained part "
        "exactly (the whole encoder, or a trunk such as speech_embedding's); in a two-tower "
        "recipe it fills tower b (encoder_b)",
    )
    init_embeddings: str | None = Field(
        None, description="sentence-transformer whose word-piece vectors initialise text_rnn"
    )
    vocabulary: VocabularySettings = Field(default_factory=VocabularySettings)
    head: ComponentSpec = Field(
        default_factory=lambda: ComponentSpec(name="euclidean"),
        description="default euclidean; cosine (the only one) for sentence pairs",
    )
    loss: ComponentSpec = Field(default_factory=lambda: ComponentSpec(name="contrastive"))
    preprocess: ComponentSpec | None = None
    augmentation: list[ComponentSpec] = Field(default_factory=list)
    batches: BatchSettings = Field(default_factory=BatchSettings)
    training: TrainConfig = Field(default_factory=TrainConfig)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    ensemble: EnsembleSettings | None = Field(
        None, description="classify known classes with the network and a classifier together"
    )
    tune: TuneSettings | None = Field(
        None, description="the search space of `siamkit tune` (see docs/tuning.md)"
    )

    @model_validator(mode="before")
    @classmethod
    def _moved_settings(cls, raw: Any) -> Any:
        moved = [key for key in MOVED if isinstance(raw, dict) and key in raw]
        if moved:
            raise PydanticCustomError(
                "recipe", "; ".join(f"{key}: is now {MOVED[key]}" for key in moved)
            )
        return raw

    @field_validator("data", "encoder", "encoder_b", "head", "loss", "preprocess", mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @property
    def sentence_pairs(self) -> bool:
        """Whether ``data`` is a sentence-pair dataset (else a class dataset)."""
        return self.data.name in SENTENCE_PAIR_DATASETS

    @model_validator(mode="after")
    def _fits_the_data(self) -> TrainRecipe:
        if self.sentence_pairs:
            problems = _sentence_pair_problems(self)
            if not problems:
                _sentence_pair_defaults(self)
        else:
            problems = _class_data_problems(self)
        if self.tune is not None:
            problems += tune_path_problems(self.model_dump(mode="json"), list(self.tune.params))
        if problems:
            raise PydanticCustomError("recipe", "; ".join(problems))
        return self


def _changed(settings: BaseModel, names: tuple[str, ...], prefix: str) -> list[str]:
    """``prefix.name`` of each of ``names`` whose value differs from its default."""
    default = type(settings)()
    return [f"{prefix}.{n}" for n in names if getattr(settings, n) != getattr(default, n)]


def _sentence_pair_problems(recipe: TrainRecipe) -> list[str]:
    """Settings of a sentence-pair recipe that do not fit its data."""
    name = recipe.data.name
    try:
        params = SentencePairData.model_validate(recipe.data.params)
    except ValidationError as error:
        return [f"data.params.{_where(e)}: {e['msg']}" for e in error.errors()]
    problems = []
    if params.extra_train == name:
        problems.append(f"data.params.extra_train must name another dataset than {name!r}")
    only_classes = [
        *_changed(recipe.batches, tuple(f for f in BatchSettings.model_fields
                                        if f != "batch_size"), "batches"),
        *_changed(recipe.evaluation, ("val_pairs", "test_pairs", "fewshot", "plots"),
                  "evaluation"),
        *(["init_weights"] if recipe.init_weights else []),
        *(["preprocess"] if recipe.preprocess else []),
        *(["augmentation"] if recipe.augmentation else []),
        *(["ensemble"] if recipe.ensemble else []),
    ]  # fmt: skip
    problems += [
        f"{field}: applies to class datasets, not to the given pairs of {name!r}"
        for field in only_classes
    ]
    if "head" in recipe.model_fields_set and recipe.head.name != "cosine":
        problems.append(f"head: sentence pairs are compared by cosine, got {recipe.head.name!r}")
    fields = recipe.evaluation.model_fields_set
    monitor = _pair_monitor(name)
    if "monitor" in fields and recipe.evaluation.monitor != monitor:
        problems.append(f"evaluation.monitor: {name!r} is monitored by {monitor!r}")
    return problems


def _pair_monitor(name: str) -> str:
    """The validation metric of a sentence-pair dataset: Spearman for graded, AUC for 0/1."""
    return "spearman" if name == "stsb" else "auc"


def _sentence_pair_defaults(recipe: TrainRecipe) -> None:
    """Fill in the sentence-pair defaults of settings the recipe leaves out."""
    evaluation = recipe.evaluation
    if "monitor" not in evaluation.model_fields_set:
        evaluation.monitor = _pair_monitor(recipe.data.name)  # type: ignore[assignment]
    if "threshold_rule" not in evaluation.model_fields_set:
        evaluation.threshold_rule = "accuracy"
    if "head" not in recipe.model_fields_set:
        recipe.head = ComponentSpec(name="cosine")


def _class_data_problems(recipe: TrainRecipe) -> list[str]:
    """Settings of a class-dataset recipe that only sentence-pair data takes."""
    only_pairs = [
        *(["init_embeddings"] if recipe.init_embeddings else []),
        *_changed(recipe.vocabulary, tuple(VocabularySettings.model_fields), "vocabulary"),
        *(["evaluation.monitor: spearman"] if recipe.evaluation.monitor == "spearman" else []),
        *(["evaluation.threshold_rule: f1"] if recipe.evaluation.threshold_rule == "f1" else []),
    ]
    return [
        f"{field}: applies to sentence-pair data ({', '.join(SENTENCE_PAIR_DATASETS)}), not "
        f"to the class dataset {recipe.data.name!r}"
        for field in only_pairs
    ]


def _where(error: Any) -> str:
    """The dotted location of one pydantic error."""
    return ".".join(str(p) for p in error["loc"])


ConfigT = TypeVar("ConfigT", bound=BaseModel)


def read_yaml(path: str | Path) -> Any:
    """The parsed contents of a YAML file; a missing or malformed file raises ConfigError."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: no such recipe file") from error
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error


def parse_config(raw: Any, model: type[ConfigT], source: str) -> ConfigT:
    """Validate ``raw`` as a ``model``; errors name ``source`` and each offending field."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{_where(e)}: {e['msg']}" if e["loc"] else e["msg"] for e in error.errors()
        )
        raise ConfigError(f"{source}: {problems}") from error


def load_recipe(path: str | Path) -> TrainRecipe:
    """Read and validate a recipe YAML; errors name the file and the offending field."""
    return parse_config(read_yaml(path), TrainRecipe, str(path))


def parse_recipe(raw: Any, source: str = "recipe") -> TrainRecipe:
    """Validate a recipe given as a dict."""
    return parse_config(raw, TrainRecipe, source)
