"""A recipe's search space: the ``tune:`` block (:class:`~siamkit.recipe_schema.TuneSettings`)
checked against the recipe, sampled by an Optuna trial, and applied at its dotted paths
(``training.lr``, ``loss.params.margin``, ``augmentation.0.params.degrees``) to give each
trial's recipe. Used by :mod:`siamkit.tuning`."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import yaml

from siamkit.errors import ConfigError
from siamkit.recipe_schema import TUNE_METRICS, TrainRecipe, TuneSettings, parse_recipe

if TYPE_CHECKING:
    import optuna


def tune_settings(recipe: TrainRecipe) -> TuneSettings:
    """The recipe's ``tune:`` block; a recipe without one is a ConfigError."""
    if recipe.tune is None:
        raise ConfigError("the recipe has no tune: block (the search space); see docs/tuning.md")
    return recipe.tune


def objective_metric(recipe: TrainRecipe) -> tuple[str, str]:
    """The metric a search optimises and its direction (``maximize``/``minimize``)."""
    settings = tune_settings(recipe)
    metric = settings.metric or recipe.evaluation.monitor
    return metric, settings.direction or TUNE_METRICS.get(metric, "maximize")


def base_settings(recipe: TrainRecipe) -> dict[str, Any]:
    """The recipe as a dict without its ``tune:`` block, the starting point of every trial."""
    return recipe.model_dump(mode="json", exclude={"tune"}, exclude_defaults=True)


def set_path(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of the recipe dict ``raw`` with ``value`` at the dotted ``path`` (list items by
    index, missing sections created, a bare component name expanded to ``{name: ...}``)."""
    raw = copy.deepcopy(raw)
    node: Any = raw
    *parents, last = path.split(".")
    for key in parents:
        if isinstance(node, list):
            node = node[int(key)]
            continue
        child = node.get(key)
        child = {"name": child} if isinstance(child, str) else ({} if child is None else child)
        node[key] = child
        node = child
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return raw


def apply_params(base: dict[str, Any], params: dict[str, Any], source: str) -> TrainRecipe:
    """The recipe ``base`` with each of ``params`` (path -> value) applied, validated."""
    for path, value in params.items():
        base = set_path(base, path, value)
    return parse_recipe(base, source)


def check_space(recipe: TrainRecipe) -> None:
    """Try each parameter's ends (low, high, every choice) on the recipe, so a value the recipe
    refuses is reported before any trial runs, naming the tune parameter."""
    base = base_settings(recipe)
    for path, spec in tune_settings(recipe).params.items():
        values = spec.choices if spec.type == "categorical" else [spec.low, spec.high]
        for value in values or []:
            value = int(value) if spec.type == "int" else value
            apply_params(base, {path: value}, f"tune.params.{path} = {value!r}")


def suggest(trial: optuna.Trial, settings: TuneSettings) -> dict[str, Any]:
    """One value per searched setting, drawn by the trial's sampler."""
    values: dict[str, Any] = {}
    for path, spec in settings.params.items():
        if spec.type == "categorical":
            values[path] = trial.suggest_categorical(path, spec.choices)
        elif spec.type == "int":
            step = int(spec.step or 1)
            values[path] = trial.suggest_int(path, int(spec.low), int(spec.high), step=step,
                                             log=spec.log)  # fmt: skip
        else:
            values[path] = trial.suggest_float(path, spec.low, spec.high, step=spec.step,
                                               log=spec.log)  # fmt: skip
    return values


def recipe_yaml(recipe: TrainRecipe) -> str:
    """A recipe as YAML without its tune block and without settings left at their defaults."""
    return yaml.safe_dump(base_settings(recipe), sort_keys=False, default_flow_style=None)
