"""Lake et al.'s official one-shot protocol: the 20 runs of ``all_runs.zip``, 400 trials.

Each run holds 20 training images (one per character of one evaluation alphabet) and 20 test
images by other drawers; ``class_labels.txt`` pairs each test item with its training image. As in
Lake's ``demo_classification.py``, every test item is matched to the training image the model
scores highest, and a run's accuracy is the fraction of its 20 test items matched correctly.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import Tensor

from siamkit.errors import DataError
from siamkit.evaluation.fewshot import mean_ci95
from siamkit.evaluation.tasks import Report, register_evaluator

if TYPE_CHECKING:
    from siamkit.model import Model

LABELS_FILE = "class_labels.txt"
Similarity = Callable[[Sequence[Any], Sequence[Any]], Tensor]


@dataclass(frozen=True)
class Run:
    """One official run: ``answers[i]`` is the index in ``training`` of ``test[i]``'s character."""

    name: str
    training: list[Image.Image]
    test: list[Image.Image]
    answers: Tensor


@dataclass(frozen=True)
class RunsResult:
    """Per-run accuracies and their mean (= accuracy over all trials) with a 95% CI over runs."""

    run_accuracies: Tensor
    mean: float
    ci95: float
    trials: int


def _image(archive: zipfile.ZipFile, member: str, path: Path) -> Image.Image:
    try:
        with Image.open(io.BytesIO(archive.read(member))) as image:
            return image.convert("L")
    except KeyError as error:
        raise DataError(f"{path}: {member} is listed in a {LABELS_FILE} but missing") from error
    except OSError as error:
        raise DataError(f"{path}:{member}: not a readable image ({error})") from error


def _parse_labels(text: str, where: str) -> list[tuple[str, str]]:
    """``class_labels.txt`` lines ``runNN/test/itemNN.png runNN/training/classNN.png`` -> pairs
    of archive members."""
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DataError(
                f"{where} line {number}: expected '<test image> <training image>', got {line!r}"
            )
        pairs.append((fields[0], fields[1]))
    if not pairs:
        raise DataError(f"{where}: no trials")
    return pairs


TTA_OPTIONS = ("flip_average", "shift_average")  # encoder options that average augmented views


def read_runs(path: Path | str) -> list[Run]:
    """Read every run of Lake's ``all_runs.zip`` (``runNN/class_labels.txt`` + images)."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: expected Lake's all_runs.zip (a zip of runNN/ folders)")
    runs = []
    with zipfile.ZipFile(path) as archive:
        label_files = sorted(m for m in archive.namelist() if m.endswith("/" + LABELS_FILE))
        if not label_files:
            raise DataError(f"{path}: no runNN/{LABELS_FILE} inside; is this all_runs.zip?")
        for member in label_files:
            folder = PurePosixPath(member).parent
            pairs = _parse_labels(archive.read(member).decode(), f"{path}:{member}")
            training = sorted({train for _, train in pairs})
            index = {name: i for i, name in enumerate(training)}
            test = sorted(pairs)  # Lake's demo sorts test items too
            runs.append(
                Run(
                    name=folder.name,
                    training=[_image(archive, t, path) for t in training],
                    test=[_image(archive, q, path) for q, _ in test],
                    answers=torch.tensor([index[t] for _, t in test]),
                )
            )
    return runs


@torch.no_grad()
def score_runs(similarity: Similarity, runs: Sequence[Run]) -> RunsResult:
    """Classify each test item by ``argmax`` of ``similarity(test, training)`` (a (20, 20) score
    matrix, higher = more similar) and score the runs as Lake et al."""
    accuracies = []
    for run in runs:
        scores = similarity(run.test, run.training)
        if scores.shape != (len(run.test), len(run.training)):
            raise DataError(
                f"{run.name}: similarity must return ({len(run.test)}, {len(run.training)}) "
                f"scores, got {tuple(scores.shape)}"
            )
        accuracies.append((scores.argmax(1) == run.answers).double().mean())
    acc = torch.stack(accuracies)
    mean, ci95 = mean_ci95(acc)
    return RunsResult(acc, mean, ci95, sum(len(r.test) for r in runs))


def is_runs_zip(path: Path) -> bool:
    """A zip holding ``runNN/class_labels.txt`` files (Lake's ``all_runs.zip``)."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(PurePosixPath(m).name == LABELS_FILE for m in archive.namelist())


def evaluate_runs(model: Model, path: Path) -> Report:
    """``siamkit eval MODEL all_runs.zip``: the official 400-trial 20-way one-shot accuracy."""
    runs = read_runs(path)
    result = score_runs(model_similarity(model), runs)
    rows = [
        {
            "runs": f"all {len(runs)} (20-way within-alphabet 1-shot)",
            "trials": result.trials,
            "accuracy": f"{result.mean:.4f} ± {result.ci95:.4f}",
        }
    ]
    rows += [
        {"runs": run.name, "trials": len(run.test), "accuracy": f"{float(acc):.2f}"}
        for run, acc in zip(runs, result.run_accuracies, strict=True)
    ]
    notes = [
        "accuracy = mean over runs (each run: fraction of its 20 test items whose highest-scoring "
        f"training image is the right one); ± = 95% CI over runs; {augmentation(model)}",
        "reference (not measured here): Koch et al. 92.0%, people 95.5%, BPL 96.7%",
    ]
    return Report(f"Omniglot one-shot runs in {path.name}", rows, notes)


def augmentation(model: Model) -> str:
    """Whether the model's encoder averages test-time augmented views (and which)."""
    params = model.config.encoder.params
    used = [f"{name} {params[name]}" for name in TTA_OPTIONS if params.get(name)]
    return "test-time augmentation: " + ", ".join(used) if used else "no test-time augmentation"


def model_similarity(model: Model) -> Similarity:
    """A :data:`Similarity` from a loaded model: its own preprocessing, embedding and head."""

    def similarity(queries: Sequence[Any], references: Sequence[Any]) -> Tensor:
        return model.pairwise(model.embed(list(queries)), model.embed(list(references)))

    return similarity


register_evaluator("Omniglot one-shot runs (all_runs.zip)", is_runs_zip, evaluate_runs)
