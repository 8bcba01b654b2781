"""A siamese network and a conventional classifier as one classifier of known classes.

The siamese part classifies by similarity to class prototypes (the mean embedding of each
class's training items), turned into class probabilities by a softmax whose temperature is fitted
on validation items; the classifier part is a logistic regression (scikit-learn) on raw pixels or
on the siamese embeddings, its ``C`` chosen on the same validation items. The ensemble averages
the two probability vectors with the weight ``w`` (0 = classifier only, 1 = siamese only) that
gives the lowest validation log-loss. Nothing is chosen on test items.

``siamkit train RECIPE`` runs :func:`run_ensemble_recipe` when the recipe has an ``ensemble:``
block (see :class:`siamkit.recipe_schema.EnsembleSettings`): it trains the network on the known
classes' training items, fits both parts and the weight, reports test accuracy and log-loss of
each part and of the ensemble, and saves a folder that :func:`load_ensemble` and
``siamkit classify`` read (the siamese model folder in ``model/``, the prototypes and the
classifier's coefficients in ``ensemble.safetensors``, the rest in ``ensemble.json``)::

    ensemble = load_ensemble("runs/faces-ensemble")
    ensemble.classify(["s1/1.pgm"], top=3)   # [[("s1", 0.97), ("s17", 0.01), ...]]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from torch import Tensor

from siamkit.checkpoint import atomic_write_text, load_tensors, save_tensors
from siamkit.data.batches import take
from siamkit.data.labelled import LabelledData, Splits
from siamkit.errors import CheckpointError, ConfigError, DataError
from siamkit.evaluation.embedding import embed_all
from siamkit.model import Model, load
from siamkit.siamese import SiameseNetwork

ENSEMBLE_FILE = "ensemble.json"
TENSORS_FILE = "ensemble.safetensors"
FORMAT_VERSION = 1
Features = Literal["pixels", "embedding"]


def known_class_splits(
    data: LabelledData, train_per_class: int, val_per_class: int, seed: int = 0
) -> Splits:
    """Each class's items cut at random into ``train_per_class`` training, ``val_per_class``
    validation and the rest test items; labels renumbered 0..C-1 in the order of ``data``'s
    class ids, class names kept. Every class needs at least one test item."""
    generator = torch.Generator().manual_seed(seed)
    parts: list[list[Tensor]] = [[], [], []]
    by_class = data.indices_by_class()
    names = data.classes or [str(c) for c in range(int(data.labels.max()) + 1)]
    for index in by_class.values():
        if len(index) < train_per_class + val_per_class + 1:
            label = int(data.labels[index[0]])
            raise DataError(
                f"class {names[label]!r} has {len(index)} items; {train_per_class} training + "
                f"{val_per_class} validation + at least 1 test item are needed"
            )
        shuffled = index[torch.randperm(len(index), generator=generator)]
        cut = (train_per_class, train_per_class + val_per_class)
        for part, chunk in zip(parts, np.split(shuffled.numpy(), cut), strict=True):
            part.append(torch.from_numpy(chunk))
    old_ids = list(by_class)
    renumber = torch.full((int(data.labels.max()) + 1,), -1, dtype=torch.long)
    renumber[torch.tensor(old_ids)] = torch.arange(len(old_ids))
    known = LabelledData(data.items, renumber[data.labels], [names[i] for i in old_ids])
    return Splits(*(known.subset(torch.sort(torch.cat(p)).values) for p in parts))


def merge(parts: list[LabelledData]) -> LabelledData:
    """One labelled set from several splits of the same reader (same class names)."""
    if not parts:
        raise ConfigError("ensemble.splits: name at least one of train, val, test")
    items = parts[0].items
    if isinstance(items, Tensor):
        items = torch.cat([p.items for p in parts])
    else:
        items = [x for p in parts for x in p.items]
    return LabelledData(items, torch.cat([p.labels for p in parts]), parts[0].classes)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true class (clipped at 1e-12)."""
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose most probable class is the label."""
    return float((probabilities.argmax(axis=1) == labels).mean())


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The softmax temperature (a scale on the scores) with the lowest log-loss, in 1e-2..1e4."""

    def loss(log_scale: float) -> float:
        return log_loss(softmax(scores * np.exp(log_scale)), labels)

    best = minimize_scalar(loss, bounds=(np.log(1e-2), np.log(1e4)), method="bounded")
    return float(np.exp(best.x))


@dataclass
class LinearClassifier:
    """Standardised features -> softmax(x @ coef.T + intercept); the arrays of a fitted
    scikit-learn ``LogisticRegression`` (a binary one has a single row: logits [0, z])."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    c: float

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, c: float, seed: int = 0) -> LinearClassifier:
        """A logistic regression with inverse regularisation ``c`` on standardised ``x``."""
        from sklearn.linear_model import LogisticRegression

        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        model = LogisticRegression(C=c, max_iter=2000, random_state=seed)
        model.fit((x - mean) / scale, y)
        if not np.array_equal(model.classes_, np.arange(int(y.max()) + 1)):
            raise DataError("every class needs training items for the classifier")
        return cls(mean, scale, model.coef_, model.intercept_, c)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C)."""
        z = ((x - self.mean) / self.scale) @ self.coef.T + self.intercept
        if z.shape[1] == 1:
            z = np.concatenate([np.zeros_like(z), z], axis=1)
        return softmax(z)


class Part(Protocol):
    """One member of the ensemble: class probabilities (N, C) of a prepared batch."""

    def probabilities(self, batch: Tensor) -> np.ndarray: ...


@dataclass
class SimilarityPart:
    """``softmax(temperature * head(embedding, class_vectors))``: the siamese part (class
    vectors = the mean training embedding of each class) or a softmax classifier (class vectors
    = its learned class weights, compared by cosine)."""

    network: SiameseNetwork
    vectors: Tensor
    temperature: float = 1.0

    def scores(self, batch: Tensor) -> np.ndarray:
        """Similarity (N, C) of each item to each class vector (higher = more alike)."""
        return self.network.head.pairwise(embed_all(self.network, batch), self.vectors).numpy()

    def probabilities(self, batch: Tensor) -> np.ndarray:  # noqa: D102
        return softmax(self.scores(batch) * self.temperature)

    def calibrate(self, val_batch: Tensor, labels: np.ndarray) -> None:
        """Set the temperature of lowest log-loss on validation items."""
        self.temperature = fit_temperature(self.scores(val_batch), labels)


@dataclass
class LogisticPart:
    """A logistic regression on raw pixels or on ``network``'s embeddings."""

    classifier: LinearClassifier
    features: Features
    network: SiameseNetwork

    def probabilities(self, batch: Tensor) -> np.ndarray:  # noqa: D102
        return self.classifier.probabilities(feature_matrix(batch, self.network, self.features))


@dataclass
class EnsembleClassifier:
    """The fitted ensemble: ``weight * siamese + (1 - weight) * classifier`` probabilities."""

    siamese: SimilarityPart
    classifier: SimilarityPart | LogisticPart
    weight: float
    classes: list[str]
    model: Model | None = None

    def parts(self, batch: Tensor) -> dict[str, np.ndarray]:
        """Class probabilities of a prepared batch (the network's input) by each part and by
        the ensemble: keys ``siamese``, ``classifier``, ``ensemble``, each (N, C)."""
        siamese = self.siamese.probabilities(batch)
        classifier = self.classifier.probabilities(batch)
        ensemble = self.weight * siamese + (1 - self.weight) * classifier
        return {"siamese": siamese, "classifier": classifier, "ensemble": ensemble}

    def probabilities(self, inputs: Any) -> np.ndarray:
        """Ensemble class probabilities (N, C) of raw inputs (image paths, PIL images...)."""
        if self.model is None:
            raise CheckpointError("this ensemble has no saved model folder to prepare raw inputs")
        return self.parts(self.model.prepare(inputs))["ensemble"]

    def classify(self, inputs: Any, top: int = 3) -> list[list[tuple[str, float]]]:
        """The ``top`` most probable classes of each raw input, with their probabilities."""
        out = []
        for row in self.probabilities(inputs):
            best = np.argsort(-row)[:top]
            out.append([(self.classes[i], float(row[i])) for i in best])
        return out

    def save(self, folder: str | Path) -> Path:
        """Write the ensemble's own parts; the networks' model folders (``model/`` and, for a
        cnn classifier, ``classifier/``) are written separately with ``save_model``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"prototypes": self.siamese.vectors}
        part = self.classifier
        if isinstance(part, SimilarityPart):
            tensors["classifier_vectors"] = part.vectors
            described = {"kind": "cnn", "temperature": part.temperature}
        else:
            c = part.classifier
            arrays = {"mean": c.mean, "scale": c.scale, "coef": c.coef, "intercept": c.intercept}
            tensors |= {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
            described = {"kind": "logistic", "features": part.features, "c": c.c}
        tensors = {k: v.detach().float().contiguous() for k, v in tensors.items()}
        save_tensors(folder / TENSORS_FILE, tensors, {"format": "siamkit-ensemble"})
        config = {
            "format_version": FORMAT_VERSION,
            "weight": self.weight,
            "classes": self.classes,
            "siamese": {"temperature": self.siamese.temperature},
            "classifier": described,
        }
        atomic_write_text(folder / ENSEMBLE_FILE, json.dumps(config, indent=2))
        return folder


def feature_matrix(batch: Tensor, network: SiameseNetwork, features: Features) -> np.ndarray:
    """The logistic classifier's input: flattened pixels of a prepared batch, or embeddings."""
    if features == "embedding":
        return embed_all(network, batch).numpy()
    return batch.float().reshape(len(batch), -1).numpy()


def prepared(data: LabelledData) -> Tensor:
    """A labelled set's items as one network-input batch (uint8 images scaled to [0, 1])."""
    if not isinstance(data.items, Tensor):
        raise DataError("the ensemble classifies tensor items (images, vectors)")
    return take(data.items, torch.arange(len(data)))


def siamese_part(network: SiameseNetwork, train: LabelledData) -> SimilarityPart:
    """The siamese part: the mean embedding of each class's training items, (C, D) in label
    order, as class vectors (temperature 1 until calibrated)."""
    embeddings = embed_all(network, prepared(train))
    n_classes = int(train.labels.max()) + 1
    prototypes = torch.stack([embeddings[train.labels == c].mean(0) for c in range(n_classes)])
    return SimilarityPart(network, prototypes)


def logistic_part(
    network: SiameseNetwork, splits: Splits, features: Features = "pixels",
    c_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0), seed: int = 0,
) -> tuple[LogisticPart, dict[str, float]]:  # fmt: skip
    """A logistic regression on the training items, its ``C`` of lowest validation log-loss;
    also returns the validation log-loss of each ``C``."""
    train = feature_matrix(prepared(splits.train), network, features)
    val = feature_matrix(prepared(splits.val), network, features)
    y_train, y_val = splits.train.labels.numpy(), splits.val.labels.numpy()
    fitted = {c: LinearClassifier.fit(train, y_train, c, seed) for c in c_grid}
    losses = {c: log_loss(model.probabilities(val), y_val) for c, model in fitted.items()}
    best = min(losses, key=losses.__getitem__)
    return LogisticPart(fitted[best], features, network), {str(c): v for c, v in losses.items()}


def fit_ensemble(
    siamese: SimilarityPart,
    classifier: SimilarityPart | LogisticPart,
    val: LabelledData,
    classes: list[str],
    weight_steps: int = 20,
) -> tuple[EnsembleClassifier, dict[str, Any]]:
    """Fit the temperatures of the similarity parts and the ensemble weight on the validation
    items ``val``; return the ensemble and the validation log-loss of each weight tried."""
    batch, labels = prepared(val), val.labels.numpy()
    for part in (siamese, classifier):
        if isinstance(part, SimilarityPart):
            part.calibrate(batch, labels)
    p_siamese, p_classifier = siamese.probabilities(batch), classifier.probabilities(batch)
    weights = np.linspace(0.0, 1.0, weight_steps + 1)
    losses = [log_loss(w * p_siamese + (1 - w) * p_classifier, labels) for w in weights]
    weight = float(weights[int(np.argmin(losses))])
    record = {
        "weight": weight,
        "siamese_temperature": siamese.temperature,
        "val_log_loss_by_weight": {f"{w:.3f}": v for w, v in zip(weights, losses, strict=True)},
    }
    if isinstance(classifier, SimilarityPart):
        record["classifier_temperature"] = classifier.temperature
    return EnsembleClassifier(siamese, classifier, weight, list(classes)), record


def evaluate_ensemble(ensemble: EnsembleClassifier, data: LabelledData) -> dict[str, Any]:
    """Accuracy and log-loss of each part and of the ensemble on labelled items."""
    parts = ensemble.parts(prepared(data))
    labels = data.labels.numpy()
    return {
        f"{name}_{metric}": fn(p, labels)
        for name, p in parts.items()
        for metric, fn in (("accuracy", accuracy), ("log_loss", log_loss))
    } | {"items": len(labels), "classes": len(ensemble.classes)}


def load_ensemble(folder: str | Path, device: str = "cpu") -> EnsembleClassifier:
    """Read a folder written by :func:`siamkit.ensemble_recipe.run_ensemble_recipe` (nothing is
    unpickled)."""
    folder = Path(folder)
    path = folder / ENSEMBLE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; is {folder} a siamkit ensemble folder?")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from error
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version is newer than this siamkit; upgrade")
    tensors = load_tensors(folder / TENSORS_FILE)
    model = load(folder / "model", device)
    siamese = SimilarityPart(model.network, tensors["prototypes"], config["siamese"]["temperature"])
    described = config["classifier"]
    if described["kind"] == "cnn":
        network = load(folder / "classifier", device).network
        classifier: SimilarityPart | LogisticPart = SimilarityPart(
            network, tensors["classifier_vectors"], described["temperature"]
        )
    else:
        arrays = {k: tensors[k].double().numpy() for k in ("mean", "scale", "coef", "intercept")}
        linear = LinearClassifier(**arrays, c=described["c"])
        classifier = LogisticPart(linear, described["features"], model.network)
    if len(siamese.vectors) != len(config["classes"]):
        raise CheckpointError(
            f"{folder}: {len(siamese.vectors)} class prototypes but {len(config['classes'])} "
            "class names"
        )
    return EnsembleClassifier(siamese, classifier, config["weight"], config["classes"], model)
