"""Evaluators for ``siamkit eval MODEL DATA``: each recognises the data it can evaluate."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from siamkit.errors import DataError

if TYPE_CHECKING:
    from siamkit.model import Model


@dataclass
class Report:
    """A titled table (list of row dicts) and optional notes, printed by the CLI."""

    title: str
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


@dataclass
class Evaluator:
    """``run(model, path)`` evaluates every ``path`` that ``matches`` (for the models that
    ``accepts``, when given: e.g. a face model on any folder of people)."""

    name: str
    matches: Callable[[Path], bool]
    run: Callable[[Model, Path], Report]
    accepts: Callable[[Model], bool] | None = None


EVALUATORS: list[Evaluator] = []
# Modules that call register_evaluator when imported (one per task).
EVALUATOR_MODULES = (
    "siamkit.evaluation.image_folder_eval",
    "siamkit.evaluation.omniglot_runs",
    "siamkit.evaluation.signature_eval",
    "siamkit.evaluation.faces_eval",
    "siamkit.evaluation.text_eval",
    "siamkit.evaluation.speech_eval",
    "siamkit.evaluation.molecules_eval",
)


def load_evaluators() -> None:
    """Import the evaluator modules of :data:`EVALUATOR_MODULES` present in this installation."""
    for module in EVALUATOR_MODULES:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


def register_evaluator(
    name: str,
    matches: Callable[[Path], bool],
    run: Callable[[Model, Path], Report],
    accepts: Callable[[Model], bool] | None = None,
) -> None:
    """Make ``run(model, path)`` the evaluator of every data path for which ``matches`` holds
    (and, if ``accepts`` is given, of the models it accepts only)."""
    EVALUATORS.append(Evaluator(name, matches, run, accepts))


def evaluate_path(model: Model, path: str | Path) -> Report:
    """Run the first registered evaluator that recognises ``path``."""
    path = Path(path)
    load_evaluators()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    for evaluator in EVALUATORS:
        if evaluator.matches(path) and (evaluator.accepts is None or evaluator.accepts(model)):
            return evaluator.run(model, path)
    names = ", ".join(e.name for e in EVALUATORS)
    raise DataError(f"{path}: no evaluator recognises this data (known: {names})")
