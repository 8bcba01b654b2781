"""``siamkit tune``: an Optuna search over a recipe's ``tune:`` block (optuna, torch and the
tracker are imported only when the command runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from siamkit.cli.app import app, console, print_table

TRACK_HELP = "Log to mlflow or tensorboard (off by default; no network needed)."
TRACK_URI_HELP = (
    "MLflow tracking URI (a server or database; default sqlite:///OUT/mlflow.db) or "
    "TensorBoard log folder (default OUT/tensorboard)."
)


@app.command("tune")
def tune(
    config: Annotated[Path, typer.Argument(help="Recipe YAML with a tune: block.")],
    trials: Annotated[int, typer.Option(help="Trials in the study, all workers together.")] = 20,
    storage: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy URL of the study (default sqlite:///OUT/study.db)."),
    ] = None,
    study: Annotated[str | None, typer.Option(help="Study name (default: the recipe's).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/<name>-tune).")] = (
        None
    ),
    data_dir: Annotated[Path | None, typer.Option(help="Override the recipe's data_dir.")] = None,
    track: Annotated[str | None, typer.Option(help=TRACK_HELP)] = None,
    track_uri: Annotated[str | None, typer.Option(help=TRACK_URI_HELP)] = None,
) -> None:
    """Search the recipe's tune: space with Optuna (TPE, median pruning on the validation
    metric); several processes on one --storage share the study, and re-running the command
    continues it. Writes OUT/best.yaml, trials.json and trials.md; the test report of the best
    recipe is `siamkit train OUT/best.yaml`."""
    from siamkit.recipe import load_recipe
    from siamkit.tracking import recipe_params, tracked_run
    from siamkit.tuning import tune_recipe

    recipe = load_recipe(config)
    out = out or Path("runs") / f"{config.stem}-tune"
    name = study or config.stem
    params = recipe_params(recipe)
    with tracked_run(track, out, track_uri, f"tune {name}", params, experiment=name) as run:
        result = tune_recipe(
            recipe, out, trials, storage, name, data_dir, tracker=run, say=console.print
        )
        if run is not None and result.best_value is not None:
            run.log_metrics({f"best/{result.metric}": result.best_value}, step=None)
            run.log_artifact(out / "trials.md")
    title = f"study {result.study}: validation {result.metric} ({result.direction})"
    print_table(title, short_columns(result.rows))
    console.print(
        f"{len(result.rows)} trials: {result.count('complete')} complete, "
        f"{result.count('pruned')} pruned, {result.count('fail')} failed"
    )
    if result.best_recipe is not None:
        console.print(
            f"best: trial value {result.best_value:.4f}, recipe {result.best_recipe}; its test "
            f"report: siamkit train {result.best_recipe}"
        )


def short_columns(rows: list[dict]) -> list[dict]:
    """Rows with each setting's path shortened to its last name where that stays unique
    (``training.lr`` -> ``lr``), so the table fits a terminal; trials.md keeps the paths."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    last = [k.rsplit(".", 1)[-1] for k in keys]
    names = {k: s if last.count(s) == 1 else k for k, s in zip(keys, last, strict=True)}
    return [{names[k]: row.get(k) for k in keys} for row in rows]
