"""Experiment tracking: a run's recipe, per-epoch metrics, final report and plots, logged to
MLflow or to TensorBoard event files (``siamkit train/tune --track mlflow|tensorboard``).

A back-end implements the small :class:`TrackedRun` protocol below; :func:`open_run` picks one
and imports ``mlflow`` or ``torch.utils.tensorboard`` only when it is chosen. Tracking is off by
default and needs no network: MLflow writes to ``sqlite:///OUT/mlflow.db`` (its default
database store; artifacts in ``OUT/mlartifacts``) unless a tracking URI (a server, another
database) is given; TensorBoard writes event files under ``OUT/tensorboard``. A tuning study is
one parent run with a child run per trial.

>>> with tracked_run("mlflow", "runs/digits", name="digits", params=recipe_dict) as run:
...     result = run_recipe(recipe, "runs/digits", callbacks=[run.epoch_callback])
...     run.log_result(result)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from siamkit.errors import ConfigError

TRACKERS = ("mlflow", "tensorboard")


class TrackedRun(Protocol):
    """What a tracker back-end does for one run (a training, a study, or one trial of it)."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record settings (nested dicts are flattened to dotted keys)."""
        ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None) -> None:
        """Record numeric values, at ``step`` (the epoch) when given."""
        ...

    def log_artifact(self, path: Path) -> None:
        """Attach a file (a plot, the report)."""
        ...

    def child(self, name: str) -> TrackedRun:
        """A nested run (one trial of a study)."""
        ...

    def close(self, status: str = "FINISHED") -> None:
        """End the run: FINISHED, FAILED or KILLED (a pruned trial)."""
        ...


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists as one level of dotted keys (``loss.params.margin``); scalars
    kept, empty containers as their JSON text."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, list):
            value = {str(i): v for i, v in enumerate(value)} or "[]"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, Mapping):
            flat[name] = "{}"
        else:
            flat[name] = value
    return flat


def numeric(record: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a record (bools and text left out)."""
    return {
        k: float(v)
        for k, v in record.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


class _Run:
    """Helpers every back-end shares: the epoch callback and the final report."""

    def epoch_callback(self, epoch: int, record: Mapping[str, Any]) -> None:
        """An :data:`~siamkit.training.EpochCallback`: the epoch's loss, lr, validation metrics."""
        self.log_metrics({k: v for k, v in numeric(record).items() if k != "epoch"}, step=epoch)

    def log_result(self, result: Any) -> None:
        """A :class:`~siamkit.recipe.RecipeResult`: test metrics (``test/<name>``), threshold,
        the plots and report.json as artifacts."""
        metrics = {f"test/{k}": v for k, v in numeric(result.test).items()}
        metrics["threshold"] = float(result.threshold)
        for name, fewshot in result.fewshot.items():
            accuracy = getattr(fewshot, "mean", None)
            if isinstance(accuracy, float):
                metrics[f"test/{name.replace(' ', '_')}"] = accuracy
        self.log_metrics(metrics, step=None)
        report = Path(result.model_dir).parent / "report.json"
        for path in [*result.plots, report]:
            if Path(path).is_file():
                self.log_artifact(Path(path))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None) -> None:
        raise NotImplementedError


class MlflowRun(_Run):
    """A run in an MLflow tracking store, written through ``MlflowClient`` (no global state,
    so runs nest: a child carries the ``mlflow.parentRunId`` tag)."""

    def __init__(self, client: Any, experiment_id: str, name: str, parent: str | None = None):
        tags = {"mlflow.parentRunId": parent} if parent else {}
        self.client, self.experiment_id = client, experiment_id
        self.run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[start : start + 1000])

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def child(self, name: str) -> MlflowRun:
        return MlflowRun(self.client, self.experiment_id, name, parent=self.run_id)

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def mlflow_run(out_dir: Path, uri: str | None, experiment: str, name: str) -> MlflowRun:
    """A new MLflow run in ``experiment`` (created when missing) of the store at ``uri``, or of
    ``sqlite:///OUT_DIR/mlflow.db`` with artifacts in ``OUT_DIR/mlartifacts``."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as error:
        raise ConfigError("--track mlflow needs mlflow: pip install 'siamkit[track]'") from error
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "creating tables"
    artifacts = None
    if uri is None:
        out_dir.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{out_dir.resolve() / 'mlflow.db'}"
        artifacts = (out_dir.resolve() / "mlartifacts").as_uri()
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        experiment_id = client.create_experiment(experiment, artifact_location=artifacts)
    return MlflowRun(client, experiment_id, name)


class TensorBoardRun(_Run):
    """TensorBoard event files in one folder per run (children in sub-folders): metrics as
    scalars, params as a text table, PNG plots as images."""

    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = folder
        self.writer = SummaryWriter(log_dir=str(folder))

    def log_params(self, params: Mapping[str, Any]) -> None:
        rows = "\n".join(f"| {k} | {v} |" for k, v in flatten(params).items())
        self.writer.add_text("params", "| setting | value |\n| --- | --- |\n" + rows)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, float(value), step or 0)
        self.writer.flush()

    def log_artifact(self, path: Path) -> None:
        if path.suffix.lower() == ".png":
            import numpy as np
            from PIL import Image

            pixels = np.asarray(Image.open(path).convert("RGB"))
            self.writer.add_image(path.stem, pixels, 0, dataformats="HWC")
        else:
            self.writer.add_text(path.name, path.read_text(encoding="utf-8")[:100_000])

    def child(self, name: str) -> TensorBoardRun:
        return TensorBoardRun(self.folder / name.replace(" ", "-"))

    def close(self, status: str = "FINISHED") -> None:
        self.writer.add_text("status", status)
        self.writer.close()


def open_run(
    kind: str, out_dir: str | Path, uri: str | None, name: str, experiment: str | None = None
) -> TrackedRun:
    """A new tracked run ``name`` of back-end ``kind`` (``mlflow`` or ``tensorboard``) for a run
    whose outputs go to ``out_dir``; ``uri`` is MLflow's tracking URI (the run goes to
    ``experiment``, default ``name``) or TensorBoard's log folder."""
    out_dir = Path(out_dir)
    if kind == "mlflow":
        return mlflow_run(out_dir, uri, experiment=experiment or name, name=name)
    if kind == "tensorboard":
        if uri is not None and "://" in uri:
            raise ConfigError(f"--track-uri for tensorboard is a folder, got {uri!r}")
        folder = Path(uri) if uri else out_dir / "tensorboard"
        return TensorBoardRun(folder / name.replace(" ", "-"))
    raise ConfigError(f"--track: expected one of {', '.join(TRACKERS)}, got {kind!r}")


@contextlib.contextmanager
def tracked_run(
    kind: str | None,
    out_dir: str | Path,
    uri: str | None = None,
    name: str = "siamkit",
    params: Mapping[str, Any] | None = None,
    experiment: str | None = None,
) -> Iterator[Any]:
    """A tracked run for the block (``None`` when ``kind`` is None: tracking off), with
    ``params`` logged; it ends FINISHED, or FAILED when the block raises. See
    :func:`open_run` for the arguments."""
    if kind is None:
        if uri is not None:
            raise ConfigError("--track-uri needs --track mlflow or --track tensorboard")
        yield None
        return
    run = open_run(kind, out_dir, uri, name, experiment)
    if params:
        run.log_params(params)
    try:
        yield run
    except BaseException:
        run.close("FAILED")
        raise
    run.close("FINISHED")


def recipe_params(recipe: Any) -> dict[str, Any]:
    """A recipe's settings as params to log (its ``tune:`` block as one JSON value)."""
    params = recipe.model_dump(mode="json", exclude={"tune"})
    if getattr(recipe, "tune", None) is not None:
        params["tune"] = json.dumps(recipe.tune.model_dump(mode="json"))
    return params
