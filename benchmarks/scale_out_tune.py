"""Part ``tune`` of benchmarks/scale_out.py: a real Optuna search on the digits recipe by two
``siamkit tune`` processes sharing one SQLite study.

configs/digits-tune.yaml (the digits recipe shortened to 3 epochs of 8 batches, so validation
is not saturated) with its ``tune:`` space (learning rate, optimiser, margin, embedding size,
batch composition), minimising the validation EER (20% of the images of the training digits
0-5). Two workers (one thread each, on this 2-core machine) run ``TRIALS`` trials between them.
Then the untuned recipe and the best recipe are each trained once more with ``siamkit train``'s
runner: their validation EER is compared, and their test report on the unseen digits 6-9 is
reported, never used to choose. Re-running continues the study (nothing is re-run when it holds
its trials) and the two final runs.

    .venv/bin/python benchmarks/scale_out.py --parts tune
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmark_parts import PartResult
from benchmarks_common import console, markdown_table
from siamkit.recipe import load_recipe, run_recipe
from siamkit.tuning import base_settings, objective_metric, trial_value

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "runs" / "scale_out_tune"
CONFIG = ROOT / "configs" / "digits-tune.yaml"
TRIALS, WORKERS = 16, 2


def tune_command(out: Path, trials: int, folder: str) -> list[str]:
    """The ``siamkit tune`` command line of one worker writing to ``out/folder``."""
    storage = f"sqlite:///{out / 'study.db'}"
    siamkit = str(Path(sys.executable).parent / "siamkit")
    return [siamkit, "tune", str(CONFIG), "--trials", str(trials), "--storage", storage,
            "--study", "digits", "--out", str(out / folder)]  # fmt: skip


def run_workers(out: Path, trials: int) -> list[str]:
    """``WORKERS`` ``siamkit tune`` processes on one SQLite study, then the same command once
    more (it runs nothing: the study holds its trials) to write the whole study's table to
    ``out/study``; the workers' printed lines."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    workers = [
        subprocess.Popen(
            tune_command(out, trials, f"worker{i}"),
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for i in range(WORKERS)
    ]
    outputs = [w.communicate()[0] for w in workers]
    for worker, output in zip(workers, outputs, strict=True):
        if worker.returncode != 0:
            raise RuntimeError(f"a tune worker failed:\n{output}")
    subprocess.run(tune_command(out, trials, "study"), env=env, check=True, capture_output=True)
    return outputs


def final_run(recipe: Any, out: Path) -> dict[str, Any]:
    """Train ``recipe`` as ``siamkit train`` does (resuming a finished run re-reads it)."""
    resume = (out / "checkpoint" / "state.json").is_file()
    result = run_recipe(recipe, out, resume=resume, show_progress=False)
    metric, direction = objective_metric(load_recipe(CONFIG))
    return {
        f"val {metric}": trial_value(result.history, metric, direction, recipe.evaluation.keep),
        "test auc": result.test["auc"],
        "test eer": result.test["eer"],
        **{k: round(v.mean, 4) for k, v in result.fewshot.items()},
    }


def run(quick: bool) -> PartResult:
    trials = 4 if quick else TRIALS
    out = RUNS / ("quick" if quick else "full")
    out.mkdir(parents=True, exist_ok=True)
    outputs = run_workers(out, trials)
    per_worker = [sum(line.startswith("trial ") for line in o.splitlines()) for o in outputs]
    saved = json.loads((out / "study" / "trials.json").read_text())
    rows = saved["rows"]
    finished = [r for r in rows if r["state"] in ("complete", "pruned")]
    base = load_recipe(CONFIG).model_copy(update={"tune": None})
    best = load_recipe(out / "study" / "best.yaml")
    console.print("training the untuned and the best recipe once more ...")
    untuned, tuned = final_run(base, out / "untuned"), final_run(best, out / "best")
    metric = saved["metric"]
    figures = {
        "tune_trials": len(finished),
        "tune_pruned": sum(r["state"] == "pruned" for r in rows),
        "tune_failed": sum(r["state"] == "fail" for r in rows),
        "tune_workers": WORKERS,
        f"tune_best_trial_val_{metric}": saved["best_value"],
        f"tune_untuned_val_{metric}": untuned[f"val {metric}"],
        f"tune_best_val_{metric}": tuned[f"val {metric}"],
        "tune_untuned_test_auc": untuned["test auc"],
        "tune_best_test_auc": tuned["test auc"],
        "tune_untuned_test_eer": untuned["test eer"],
        "tune_best_test_eer": tuned["test eer"],
    }
    changed = {k: v for k, v in saved["best_params"].items()}
    compare = [
        {"recipe": "untuned (configs/digits-tune.yaml)", **_rounded(untuned)},
        {"recipe": f"best (trial {_best_trial(rows, saved)})", **_rounded(tuned)},
    ]
    markdown = (
        f"Optuna search on configs/digits-tune.yaml by {WORKERS} `siamkit tune` processes "
        f"sharing one SQLite study (trials run per worker: {per_worker}), minimising the "
        f"validation {metric} (held-out images of the training digits 0-5): "
        f"{len(finished)} trials, {figures['tune_pruned']} pruned by the median rule, "
        f"{figures['tune_failed']} failed.\n\n"
        f"{(out / 'study' / 'trials.md').read_text()}\n"
        f"Best settings: `{json.dumps(changed)}`. Both recipes trained once more (same seed); "
        "the test columns (unseen digits 6-9) are reported, never used to choose:\n\n"
        f"{markdown_table(compare)}"
    )
    details = {"trials": rows, "best_params": changed, "untuned": untuned, "best": tuned,
               "per_worker": per_worker, "base_recipe": base_settings(base)}  # fmt: skip
    return PartResult(figures=figures, markdown=markdown, details=details, seed=base.seed)


def _best_trial(rows: list[dict[str, Any]], saved: dict[str, Any]) -> Any:
    return next((r["trial"] for r in rows if r["value"] == saved["best_value"]), "?")


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}
