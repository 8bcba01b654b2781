"""Variants of the FSDD recipes run on every fold, beside the recipes' own figures
(benchmarks/applications.py --parts speech). A variant is measured here, not chosen here: the
figures are on the held-out speakers, so picking the better one by them would be choosing on
test data (docs/speech.md).

- ``text_wide_tower``: configs/fsdd-text-speech.yaml with the speech tower of
  configs/fsdd-keywords.yaml (channels 32-64-128-128 instead of 16-32-64-64), the change that
  raised the keyword recipe's 6-fold mean; recall@1 both ways per held-out speaker.

Runs are kept in benchmarks/runs/applications_speech/variants/ and resumed.

    .venv/bin/python benchmarks/speech_variants.py            # all 6 folds
    .venv/bin/python benchmarks/speech_variants.py --folds 0 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import siamkit
from applications_speech import RUNS, SPEAKERS, fold_recipe
from benchmarks_common import write_table
from siamkit.data.datasets import build_dataset
from siamkit.recipe import run_recipe
from siamkit.two_tower_recipe import two_tower_report

WIDE = [32, 64, 128, 128]  # configs/fsdd-keywords.yaml's channels
SEED = 0


def text_wide_tower(fold: int) -> dict:
    """Train (or resume) the wide-tower text-to-speech variant on ``fold``; its recall@1."""
    recipe = fold_recipe("fsdd-text-speech", fold, quick=False)
    tower = recipe.encoder_b
    wide = tower.model_copy(update={"params": {**tower.params, "channels": WIDE}})
    recipe = recipe.model_copy(update={"encoder_b": wide})
    out = RUNS / "variants" / f"fsdd-text-speech-wide-fold{fold}"
    started = time.process_time()
    result = run_recipe(recipe, out, resume=(out / "checkpoint").is_dir(), show_progress=False)
    test = build_dataset("fsdd", **recipe.data.params).test
    model = siamkit.load(result.model_dir)
    report = two_tower_report(model.network, test, model.threshold, SEED)
    return {
        "fold": fold, "held-out speaker": SPEAKERS[fold],
        "speech -> text R@1": round(report["b_to_a_recall_at_1"], 4),
        "text -> speech R@1": round(report["a_to_b_recall_at_1"], 4),
        "cpu min (this process)": round((time.process_time() - started) / 60, 2),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, nargs="+", default=list(range(len(SPEAKERS))))
    folds = parser.parse_args().folds
    rows = [text_wide_tower(fold) for fold in folds]
    means = {
        key: round(statistics.mean(r[key] for r in rows), 4)
        for key in ("speech -> text R@1", "text -> speech R@1")
    }
    summary = {"variant": "text_wide_tower", "channels": WIDE, "folds": folds, "seed": SEED,
               "mean": means}  # fmt: skip
    notes = [
        f"Mean over folds {folds}: speech -> text {means['speech -> text R@1']:.2%}, "
        f"text -> speech {means['text -> speech R@1']:.2%} (the recipe's own: "
        "benchmarks/results/applications.md, section speech).",
        "Measured, not chosen: these are held-out speakers' figures.",
    ]
    write_table(
        "speech_variants", "FSDD text-to-speech with the wider speech tower", rows, summary, notes
    )


if __name__ == "__main__":
    main()
