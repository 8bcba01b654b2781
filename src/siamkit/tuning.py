"""Hyperparameter search over a recipe's ``tune:`` block with Optuna (``siamkit tune``).

Each trial is the recipe with the sampled settings put at their paths (``training.lr``,
``loss.params.margin``, ...), trained with :func:`siamkit.training.fit` and scored on the
**validation** split only: the trial's value is its best epoch's ``tune.metric``, reported to the
pruner after every epoch through an epoch callback, and the test split is never read (the test
report of the best recipe is a separate, final ``siamkit train best.yaml``). TPE samples the
settings (seeded by the trial number, so a study is reproducible and two workers never draw the
same startup trials); the median pruner stops trials that fall behind.

The study lives in an RDB storage (a SQLite file by default, any SQLAlchemy URL), so several
``siamkit tune`` processes, on one machine or many, share it and together run ``trials`` trials:
a trial counts once it is running, pruned or complete, and a worker stops when the budget is
spent. Re-running the same command continues the study; trials interrupted by Ctrl-C are marked
failed and replaced.

>>> from siamkit.recipe import load_recipe
>>> result = tune_recipe(load_recipe("configs/digits-tune.yaml"), "runs/tune", trials=12)
... # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from siamkit.checkpoint import atomic_write_text
from siamkit.errors import ConfigError, SiamkitError
from siamkit.recipe_schema import TrainRecipe
from siamkit.training import EpochCallback, History
from siamkit.tune_space import (  # noqa: F401  (the search space is part of this module's API)
    apply_params,
    base_settings,
    check_space,
    objective_metric,
    recipe_yaml,
    set_path,
    suggest,
    tune_settings,
)

if TYPE_CHECKING:
    import optuna

TrainTrial = Callable[[TrainRecipe, Path, Sequence[EpochCallback]], History]
"""What runs one trial: train ``recipe`` in a folder with the epoch callbacks, return its
history (the default is :func:`train_on_validation`; tests pass a stand-in)."""

COUNTED = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")
"""Trial states that use up the trial budget (failed trials are replaced)."""


class _Surplus(Exception):
    """A worker's trial beyond the study's budget (another worker took the last one)."""


@dataclass
class TuneResult:
    """What a search produced: the study's trials (every worker's) and the best recipe."""

    study: str
    storage: str
    metric: str
    direction: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_recipe: Path | None = None

    def count(self, state: str) -> int:
        """How many of the study's trials ended in ``state`` (complete, pruned, fail)."""
        return sum(row["state"] == state for row in self.rows)


def pruning_callback(trial: optuna.Trial, metric: str) -> EpochCallback:
    """An epoch callback that reports ``metric`` to the trial and raises ``TrialPruned`` (which
    stops :func:`~siamkit.training.fit`) when the pruner says the trial falls behind."""
    import optuna

    def report(epoch: int, record: dict[str, float]) -> None:
        value = epoch_value(record, metric)
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch + 1}: {metric} {value:.4f}")

    return report


def epoch_value(record: dict[str, float], metric: str) -> float:
    """``metric`` of one epoch's record; a missing one is a ConfigError naming those present."""
    if metric not in record:
        raise ConfigError(f"tune.metric {metric!r}: the epoch record holds only {sorted(record)}")
    return float(record[metric])


def trial_value(history: History, metric: str, direction: str, keep: str = "best") -> float:
    """A finished trial's value: its best epoch's ``metric`` (its last with ``keep: last``)."""
    if not history.epochs:
        raise ConfigError("the trial ran no epoch")
    values = [epoch_value(record, metric) for record in history.epochs]
    if keep == "last":
        return values[-1]
    return max(values) if direction == "maximize" else min(values)


def train_on_validation(
    recipe: TrainRecipe,
    out_dir: Path,
    callbacks: Sequence[EpochCallback],
    data_dir: str | Path | None = None,
) -> History:
    """Train a trial's recipe and score each epoch on the validation split; nothing is scored
    on the test split. Recipes of other runners (sentence pairs, two towers, ensembles) run
    through :func:`~siamkit.recipe.run_recipe`, whose end-of-run report the tuner never reads."""
    from siamkit.data.datasets import build_dataset
    from siamkit.evaluation.verification import verification_validator
    from siamkit.recipe import (
        _monitored,
        build_batches,
        build_network,
        build_recipe_loss,
        run_recipe,
    )
    from siamkit.training import fit

    if recipe.sentence_pairs or recipe.encoder_b is not None or recipe.ensemble is not None:
        result = run_recipe(recipe, out_dir, data_dir=data_dir, show_progress=False,
                            callbacks=callbacks)  # fmt: skip
        return result.history
    import torch

    splits = build_dataset(recipe.data.name, data_dir or recipe.data_dir, **recipe.data.params)
    splits.train.require_nonempty("the training split")
    splits.val.require_nonempty("the validation split (tuning scores trials on it)")
    torch.manual_seed(recipe.seed)
    network, _ = build_network(recipe)
    loss = build_recipe_loss(recipe, network, splits.train.labels)
    evaluation = recipe.evaluation
    validate = verification_validator(splits.val, evaluation.val_pairs, recipe.seed)
    training = recipe.training.model_copy(update={"seed": recipe.seed})
    return fit(
        network, loss, build_batches(recipe, loss, splits.train), training, out_dir,
        validate=_monitored(validate, evaluation.monitor), monitor=evaluation.monitor,
        show_progress=False, callbacks=callbacks,
    )  # fmt: skip


def open_study(recipe: TrainRecipe, storage: str, name: str) -> optuna.Study:
    """Create the study ``name`` in ``storage`` or load it (``load_if_exists``); a study
    started from another recipe or search space is refused."""
    import optuna

    settings = tune_settings(recipe)
    metric, direction = objective_metric(recipe)
    pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    if settings.pruner == "median":
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=settings.prune_startup_trials,
            n_warmup_steps=settings.prune_warmup_epochs,
        )
    study = _retry(
        lambda: optuna.create_study(
            storage=rdb_storage(storage),
            sampler=sampler(recipe, 0),
            pruner=pruner,
            study_name=name,
            direction=direction,
            load_if_exists=True,
        )  # fmt: skip
    )
    fingerprint = json.dumps(recipe.model_dump(mode="json", exclude_defaults=True), sort_keys=True)
    known = study.user_attrs.get("siamkit_recipe")
    if known is None:
        study.set_user_attr("siamkit_recipe", fingerprint)
        study.set_user_attr("metric", metric)
    elif known != fingerprint:
        raise ConfigError(
            f"study {name!r} in {masked(storage)} was started from another recipe or search "
            "space; give another --study name (or the same recipe to continue it)"
        )
    return study


def rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for ``url`` with a heartbeat (a killed worker's trial is failed
    after a minute and replaced); SQLite files get their folder and a long lock timeout."""
    import optuna
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except ArgumentError as error:
        raise ConfigError(f"--storage {url!r}: not an SQLAlchemy database URL") from error
    options: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        options = {"connect_args": {"timeout": 120}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=options, heartbeat_interval=20, grace_period=60
            )
        except ImportError as error:
            raise ConfigError(f"--storage {masked(url)}: {error}") from error


def sampler(recipe: TrainRecipe, trial_number: int) -> optuna.samplers.TPESampler:
    """The TPE sampler of one trial, seeded by the recipe's seed and the trial number."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=recipe.seed + trial_number,
            n_startup_trials=tune_settings(recipe).startup_trials,
            constant_liar=True,
        )


def _retry(make: Callable[[], Any], attempts: int = 6) -> Any:
    """``make()``, retried when workers starting together race to create the tables."""
    from sqlalchemy.exc import DBAPIError

    for attempt in range(attempts):
        try:
            return make()
        except DBAPIError:  # "table exists", a duplicate schema version row, a lock
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    return None


def masked(url: str) -> str:
    """A storage URL with its password hidden, for tables and logs."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def budget_left(study: optuna.Study, trials: int) -> int:
    """Trials still to start so that the study holds ``trials`` running or finished ones
    (waiting ones, enqueued by hand, are started first)."""
    from optuna.trial import TrialState

    states = tuple(TrialState[s] for s in COUNTED if s != "WAITING")
    return trials - len(study.get_trials(deepcopy=False, states=states))


def within_budget(study: optuna.Study, number: int, trials: int) -> bool:
    """Whether trial ``number`` is among the study's first ``trials`` that count."""
    from optuna.trial import TrialState

    states = tuple(TrialState[s] for s in COUNTED)
    earlier = [t for t in study.get_trials(deepcopy=False, states=states) if t.number < number]
    return len(earlier) < trials


class _Worker:
    """One process's share of a search: runs trials until the study's budget is spent."""

    def __init__(self, recipe, study, out_dir: Path, trials: int, train: TrainTrial, tracker,
                 say: Callable[[str], None]) -> None:  # fmt: skip
        self.recipe, self.study, self.out_dir, self.trials = recipe, study, out_dir, trials
        self.train, self.tracker, self.say = train, tracker, say
        self.current: int | None = None

    def run(self) -> None:
        """Run trials (one ``optimize`` call each, with Optuna's heartbeat) while the budget
        lasts; a trial beyond it (another worker took the last one) ends the loop."""
        while budget_left(self.study, self.trials) > 0:
            self.current = None
            self.study.optimize(self.objective, n_trials=1, catch=(SiamkitError, _Surplus))
            if self.current is None:
                continue
            trial = next(t for t in self.study.get_trials(deepcopy=False)
                         if t.number == self.current)  # fmt: skip
            if trial.user_attrs.get("surplus"):
                return
            self.say(trial_line(trial))

    def objective(self, trial: optuna.Trial) -> float:
        """Train one sampled recipe; its value is its best validation epoch's metric."""
        self.current = trial.number
        if not within_budget(self.study, trial.number, self.trials):
            trial.set_user_attr("surplus", True)
            raise _Surplus(f"trial {trial.number} is beyond the budget of {self.trials}")
        self.study.sampler = sampler(self.recipe, trial.number)
        params = suggest(trial, tune_settings(self.recipe))
        metric, direction = objective_metric(self.recipe)
        folder = self.out_dir / "trials" / f"{trial.number:04d}"
        child = self.tracker.child(f"trial {trial.number}") if self.tracker else None
        status = "FAILED"
        try:
            recipe = apply_params(base_settings(self.recipe), params, f"trial {trial.number}")
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(folder / "recipe.yaml", recipe_yaml(recipe))
            callbacks = [pruning_callback(trial, metric)]
            if child is not None:
                child.log_params({"trial": trial.number, **params})
                callbacks.insert(0, child.epoch_callback)
            history = self.train(recipe, folder, callbacks)
            if history.interrupted:
                raise KeyboardInterrupt
            value = trial_value(history, metric, direction, recipe.evaluation.keep)
            status = "FINISHED"
            if child is not None:
                child.log_metrics({f"trial/{metric}": value}, step=None)
            return value
        except SiamkitError as error:
            trial.set_user_attr("error", str(error))
            raise
        except Exception as error:
            if type(error).__name__ == "TrialPruned":
                status = "KILLED"
            raise
        finally:
            shutil.rmtree(folder / "checkpoint", ignore_errors=True)
            if child is not None:
                child.close(status)


def trial_line(trial: Any) -> str:
    """One line about a finished trial: its settings and how it ended."""
    settings = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in trial.params.items())
    state = trial.state.name.lower()
    if state == "complete":
        end = f"value {trial.value:.4f}"
    elif state == "pruned":
        end = f"pruned after {len(trial.intermediate_values)} epoch(s)"
    else:
        end = f"failed: {trial.user_attrs.get('error', 'see the log')}"
    return f"trial {trial.number}: {settings} -> {end}"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def tune_recipe(
    recipe: TrainRecipe,
    out_dir: str | Path,
    trials: int,
    storage: str | None = None,
    study_name: str = "siamkit",
    data_dir: str | Path | None = None,
    tracker: Any = None,
    say: Callable[[str], None] = print,
    train: TrainTrial | None = None,
) -> TuneResult:
    """Search the recipe's ``tune:`` space until the study holds ``trials`` trials (counting
    every worker's), then write ``best.yaml``, ``trials.json`` and ``trials.md`` in ``out_dir``.

    ``storage`` is an SQLAlchemy URL (default ``sqlite:///OUT_DIR/study.db``); workers on the
    same ``storage`` and ``study_name`` share the study. ``tracker`` (a run of
    :mod:`siamkit.tracking`) gets one child run per trial; ``say`` prints one line per trial.
    """
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{out_dir / 'study.db'}"
    check_space(recipe)
    _quiet_optuna()
    study = open_study(recipe, storage, study_name)
    if train is None:
        train = lambda r, folder, callbacks: train_on_validation(r, folder, callbacks, data_dir)  # noqa: E731
    _Worker(recipe, study, out_dir, trials, train, tracker, say).run()
    return write_results(recipe, study, out_dir, masked(storage))


def _quiet_optuna() -> None:
    """Optuna's own per-trial log lines off: the worker prints one line per trial itself."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)


def study_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial of the study (every worker's; surplus trials left out): number,
    state, value, the sampled settings, epochs run and seconds."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("surplus"):
            continue
        seconds = trial.duration.total_seconds() if trial.duration else None
        rows.append({
            "trial": trial.number, "state": trial.state.name.lower(), "value": trial.value,
            **trial.params, "epochs": len(trial.intermediate_values), "seconds": seconds,
        })  # fmt: skip
    return rows


def write_results(recipe: TrainRecipe, study: optuna.Study, out_dir: Path, storage: str):
    """``best.yaml`` (the recipe with the best trial's settings, no tune block), ``trials.json``
    and ``trials.md``; returns the :class:`TuneResult`."""
    metric, direction = objective_metric(recipe)
    result = TuneResult(study.study_name, storage, metric, direction, study_rows(study))
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if complete:
        best = study.best_trial
        result.best_value, result.best_params = best.value, dict(best.params)
        best_recipe = apply_params(base_settings(recipe), best.params, "the best trial")
        header = (
            f"# The best of study {study.study_name!r} ({storage}): trial {best.number}, "
            f"validation {metric} {best.value:.4f} ({direction}).\n"
            "# Its test report: siamkit train best.yaml (never used to choose).\n"
        )
        result.best_recipe = out_dir / "best.yaml"
        atomic_write_text(result.best_recipe, header + recipe_yaml(best_recipe))
    payload = {k: v for k, v in vars(result).items() if k != "best_recipe"}
    payload["best_recipe"] = str(result.best_recipe) if result.best_recipe else None
    atomic_write_text(out_dir / "trials.json", json.dumps(payload, indent=1, default=str))
    atomic_write_text(out_dir / "trials.md", trials_markdown(result))
    return result


def trials_markdown(result: TuneResult) -> str:
    """The trials as a Markdown table, best value first among the complete ones."""
    rows = sorted(result.rows, key=lambda r: _rank(r, result.direction))
    if not rows:
        return "No trials yet.\n"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    summary = (
        f"Study `{result.study}` ({result.storage}): {len(rows)} trials, "
        f"{result.count('complete')} complete, {result.count('pruned')} pruned, "
        f"{result.count('fail')} failed; validation {result.metric} ({result.direction}).\n\n"
    )
    return summary + "\n".join(lines) + "\n"


def _rank(row: dict[str, Any], direction: str) -> tuple[int, float, int]:
    value = row["value"]
    if row["state"] != "complete" or value is None:
        return (1, 0.0, row["trial"])
    return (0, -value if direction == "maximize" else value, row["trial"])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
