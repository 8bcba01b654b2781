"""Part ``tune`` of benchmarks/scale_out.py: real Optuna searches on the digits recipe, each by
two ``siamkit tune`` processes sharing one SQLite study.

1. configs/digits-tune.yaml (the digits recipe shortened to 3 epochs of 8 batches, so validation
   is not saturated) with its ``tune:`` space (learning rate, optimiser, margin, embedding size,
   batch composition), minimising the validation EER. The digits reader validates on 20% of the
   images of the training digits 0-5: classes seen in training.
2. The same recipe and space on the digits written as class folders and split by class
   (``image_folder``: 5 training, 2 validation, 3 test digits), so that the tuned metric is
   measured on digits unseen in training.

Two workers (one thread each, on this 2-core machine) run ``TRIALS`` trials between them. Then
the untuned and the best recipe are each trained once more with ``siamkit train``'s runner:
their validation metric is compared, and their test report on unseen digits is reported, never
used to choose. Re-running continues the studies (nothing is re-run when they hold their
trials) and the final runs (resumed from their checkpoints).

    .venv/bin/python benchmarks/scale_out.py --parts tune
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from benchmark_parts import PartResult
from benchmarks_common import console, markdown_table
from siamkit.recipe import load_recipe, run_recipe
from siamkit.tuning import base_settings, trial_value

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "runs" / "scale_out_tune"
CONFIG = ROOT / "configs" / "digits-tune.yaml"
TRIALS, WORKERS = 16, 2


def tune_command(config: Path, out: Path, trials: int, folder: str) -> list[str]:
    """The ``siamkit tune`` command line of one worker writing to ``out/folder``."""
    storage = f"sqlite:///{out / 'study.db'}"
    siamkit = str(Path(sys.executable).parent / "siamkit")
    return [siamkit, "tune", str(config), "--trials", str(trials), "--storage", storage,
            "--study", "digits", "--out", str(out / folder)]  # fmt: skip


def run_workers(config: Path, out: Path, trials: int) -> list[int]:
    """``WORKERS`` ``siamkit tune`` processes on one SQLite study, then the same command once
    more (it runs nothing: the study holds its trials) to write the whole study's table to
    ``out/study``; how many trials each worker ran (its trial folders)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    workers = [
        subprocess.Popen(tune_command(config, out, trials, f"worker{i}"), env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for i in range(WORKERS)
    ]  # fmt: skip
    outputs = [w.communicate()[0] for w in workers]
    for worker, output in zip(workers, outputs, strict=True):
        if worker.returncode != 0:
            raise RuntimeError(f"a tune worker failed:\n{output}")
    command = tune_command(config, out, trials, "study")
    subprocess.run(command, env=env, check=True, capture_output=True)
    return [len(list((out / f"worker{i}" / "trials").glob("0*"))) for i in range(WORKERS)]


def heldout_recipe(out: Path) -> Path:
    """configs/digits-tune.yaml on the digits written as class folders and split by class
    (``image_folder``: 5 training, 2 validation, 3 test digits), so that validation, and
    therefore the tuning, measures digits unseen in training."""
    from PIL import Image

    from siamkit.data.datasets import load_digits_data

    folder = out / "digit_folders"
    if not folder.is_dir():
        data = load_digits_data(size=16)
        for i, (pixels, label) in enumerate(zip(data.items, data.labels, strict=True)):
            (folder / str(int(label))).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[0].numpy()).save(folder / str(int(label)) / f"{i:04d}.png")
    raw = yaml.safe_load(CONFIG.read_text())
    raw["data"] = {
        "name": "image_folder",
        "params": {"size": [16, 16], "fractions": [0.5, 0.2, 0.3], "seed": 0},
    }
    raw["data_dir"] = str(folder)
    raw["tune"]["params"]["batches.m_per_class"]["choices"] = [12, 15, 20]  # 5 train classes
    raw["batches"]["m_per_class"] = 12
    raw["evaluation"]["fewshot"] = [{"n_way": 3, "k_shot": 1, "episodes": 1000}]  # 3 test digits
    config = out / "digits-heldout-tune.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    return config


def final_run(recipe: Any, out: Path, metric: str, direction: str) -> dict[str, Any]:
    """Train ``recipe`` as ``siamkit train`` does (resuming a finished run re-reads it)."""
    resume = (out / "checkpoint" / "state.json").is_file()
    result = run_recipe(recipe, out, resume=resume, show_progress=False)
    return {
        f"val {metric}": trial_value(result.history, metric, direction, recipe.evaluation.keep),
        "test auc": result.test["auc"],
        "test eer": result.test["eer"],
        **{k: round(v.mean, 4) for k, v in result.fewshot.items()},
    }


def study(config: Path, out: Path, trials: int, prefix: str) -> tuple[dict, str, dict]:
    """Tune ``config`` with the workers, retrain the untuned and the best recipe; figures
    (named ``prefix``...), a Markdown section and details."""
    per_worker = run_workers(config, out, trials)
    saved = json.loads((out / "study" / "trials.json").read_text())
    rows, metric, direction = saved["rows"], saved["metric"], saved["direction"]
    base = load_recipe(config).model_copy(update={"tune": None})
    best = load_recipe(out / "study" / "best.yaml")
    console.print(f"{config.name}: training the untuned and the best recipe once more ...")
    untuned = final_run(base, out / "untuned", metric, direction)
    tuned = final_run(best, out / "best", metric, direction)
    figures = {
        f"{prefix}trials": sum(r["state"] in ("complete", "pruned") for r in rows),
        f"{prefix}pruned": sum(r["state"] == "pruned" for r in rows),
        f"{prefix}failed": sum(r["state"] == "fail" for r in rows),
        f"{prefix}untuned_val_{metric}": untuned[f"val {metric}"],
        f"{prefix}best_val_{metric}": tuned[f"val {metric}"],
        f"{prefix}untuned_test_eer": untuned["test eer"],
        f"{prefix}best_test_eer": tuned["test eer"],
        f"{prefix}untuned_test_auc": untuned["test auc"],
        f"{prefix}best_test_auc": tuned["test auc"],
    }
    compare = [
        {"recipe": "untuned", **_rounded(untuned)},
        {"recipe": f"best (trial {_best_trial(rows, saved)})", **_rounded(tuned)},
    ]
    markdown = (
        f"{WORKERS} `siamkit tune` processes sharing one SQLite study ran {per_worker} trials; "
        f"{figures[prefix + 'trials']} trials, {figures[prefix + 'pruned']} pruned by the "
        f"median rule, {figures[prefix + 'failed']} failed.\n\n"
        f"{(out / 'study' / 'trials.md').read_text()}\n"
        f"Best settings: `{json.dumps(saved['best_params'])}`. The untuned and the best recipe "
        "trained once more (same seed); the test columns are reported, never used to "
        f"choose:\n\n{markdown_table(compare)}"
    )
    details = {"trials": rows, "best_params": saved["best_params"], "untuned": untuned,
               "best": tuned, "per_worker": per_worker, "recipe": base_settings(base)}  # fmt: skip
    return figures, markdown, details


def run(quick: bool) -> PartResult:
    trials = 4 if quick else TRIALS
    out = RUNS / ("quick" if quick else "full")
    out.mkdir(parents=True, exist_ok=True)
    seen, seen_md, seen_details = study(CONFIG, out, trials, "tune_")
    heldout_out = out / "heldout"
    heldout_out.mkdir(exist_ok=True)
    config = heldout_recipe(heldout_out)
    held, held_md, held_details = study(config, heldout_out, trials, "tune_heldout_")
    markdown = (
        "### configs/digits-tune.yaml: validation on the training digits\n\n"
        "The digits reader validates on 20% of the images of the training digits 0-5 (classes "
        "seen in training); the test digits 6-9 are unseen.\n\n"
        f"{seen_md}\n"
        "### The same search with validation on unseen digits\n\n"
        "The digits written as class folders and split by class (`image_folder`, seed 0: "
        "5 training, 2 validation, 3 test digits), the same tune block.\n\n"
        f"{held_md}"
    )
    figures = {**seen, "tune_workers": WORKERS, **held}
    details = {"seen_classes_validation": seen_details, "heldout_validation": held_details}
    return PartResult(figures=figures, markdown=markdown, details=details, seed=0)


def _best_trial(rows: list[dict[str, Any]], saved: dict[str, Any]) -> Any:
    return next((r["trial"] for r in rows if r["value"] == saved["best_value"]), "?")


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}
