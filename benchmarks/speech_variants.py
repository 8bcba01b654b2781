"""Variants of the FSDD recipes run on every fold, beside the recipes' own figures
(benchmarks/applications.py --parts speech). A variant is measured here, not chosen here: the
figures are on the held-out speakers, so picking the better one by them would be choosing on
test data (docs/speech.md).

- ``text_wide_tower``: configs/fsdd-text-speech.yaml (tower b an audio_cnn from scratch) with the
  speech tower of configs/fsdd-keywords.yaml (channels 32-64-128-128 instead of 16-32-64-64);
  recall@1 both ways per held-out speaker.
- ``keywords_tuned_trunk``: configs/fsdd-keywords-pretrained.yaml with the speech embedding's
  last ``TUNED_BLOCKS`` convolutions fine-tuned with the head (``trainable_blocks``), everything
  else unchanged; 10-way 1- and 5-shot accuracy on the benchmark's episodes.

Runs are kept in benchmarks/runs/applications_speech/variants/ and resumed, so a variant already
run is only evaluated again.

    .venv/bin/python benchmarks/speech_variants.py            # every variant, all 6 folds
    .venv/bin/python benchmarks/speech_variants.py --variants keywords_tuned_trunk --folds 0 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import siamkit
from applications_speech import KEYWORDS, RUNS, SPEAKERS, fold_recipe, shot_scores
from benchmarks_common import write_table
from siamkit.data.datasets import build_dataset
from siamkit.evaluation.embedding import embed_all
from siamkit.recipe import run_recipe
from siamkit.two_tower_recipe import two_tower_report

WIDE = [32, 64, 128, 128]  # configs/fsdd-keywords.yaml's channels
TUNED_BLOCKS = 4  # the trunk's last 4 convolutions: its last 96-channel stage and its output
SEED = 0


def train_variant(recipe: Any, name: str, fold: int) -> tuple[Any, Any, float]:
    """Train (or resume) ``recipe`` into ``variants/<name>-fold<fold>``: (model, test, cpu s)."""
    out = RUNS / "variants" / f"{name}-fold{fold}"
    started = time.process_time()
    result = run_recipe(recipe, out, resume=(out / "checkpoint").is_dir(), show_progress=False)
    test = build_dataset("fsdd", **recipe.data.params).test
    return siamkit.load(result.model_dir), test, time.process_time() - started


def text_wide_tower(fold: int) -> dict[str, Any]:
    """The wide-tower text-to-speech variant on ``fold``: its recall@1 both ways."""
    recipe = fold_recipe("fsdd-text-speech", fold, quick=False)
    tower = recipe.encoder_b
    wide = tower.model_copy(update={"params": {**tower.params, "channels": WIDE}})
    model, test, cpu = train_variant(
        recipe.model_copy(update={"encoder_b": wide}), "fsdd-text-speech-wide", fold
    )
    report = two_tower_report(model.network, test, model.threshold, SEED)
    return {
        "speech -> text R@1": round(report["b_to_a_recall_at_1"], 4),
        "text -> speech R@1": round(report["a_to_b_recall_at_1"], 4),
        "cpu min (this process)": round(cpu / 60, 2),
    }


def keywords_tuned_trunk(fold: int) -> dict[str, Any]:
    """The pre-trained keyword recipe with the trunk's last blocks fine-tuned, on ``fold``."""
    recipe = fold_recipe(KEYWORDS, fold, quick=False)
    encoder = recipe.encoder.model_copy(
        update={"params": {**recipe.encoder.params, "trainable_blocks": TUNED_BLOCKS}}
    )
    model, test, cpu = train_variant(
        recipe.model_copy(update={"encoder": encoder}), f"{KEYWORDS}-tuned{TUNED_BLOCKS}", fold
    )
    emb = embed_all(model.network, test.items)
    scores = shot_scores(model.network, test, emb)
    row: dict[str, Any] = {f"{k}-shot": round(score.mean, 4) for k, score in scores.items()}
    return row | {"cpu min (this process)": round(cpu / 60, 2)}


VARIANTS: dict[str, Callable[[int], dict[str, Any]]] = {
    "text_wide_tower": text_wide_tower,
    "keywords_tuned_trunk": keywords_tuned_trunk,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--folds", type=int, nargs="+", default=list(range(len(SPEAKERS))))
    args = parser.parse_args()
    rows, means = [], {}
    for variant in args.variants:
        runs = [
            {"variant": variant, "fold": fold, "held-out speaker": SPEAKERS[fold]}
            | VARIANTS[variant](fold)
            for fold in args.folds
        ]
        figures = [key for key in runs[0] if key.endswith(("R@1", "-shot"))]
        means[variant] = {key: round(statistics.mean(r[key] for r in runs), 4) for key in figures}
        rows += runs
    summary = {"variants": args.variants, "folds": args.folds, "seed": SEED, "mean": means,
               "wide_channels": WIDE, "tuned_blocks": TUNED_BLOCKS}  # fmt: skip
    notes = [
        f"Means over folds {args.folds}: "
        + "; ".join(
            f"{variant}: " + ", ".join(f"{key} {value:.2%}" for key, value in figures.items())
            for variant, figures in means.items()
        )
        + " (the recipes' own: benchmarks/results/applications.md, section speech).",
        "Measured, not chosen: these are held-out speakers' figures.",
    ]
    write_table("speech_variants", "FSDD speech recipe variants", rows, summary, notes)


if __name__ == "__main__":
    main()
