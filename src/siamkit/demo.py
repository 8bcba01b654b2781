"""The demo: a twin network on scikit-learn's digits, tested on digits it never saw.

Trains on classes 0-5 (no download, about a minute on 2 CPU cores), then on the unseen classes 6-9
reports 4-way 1-shot accuracy (mean +- 95% CI over 1,000 episodes) next to a pixel-space
nearest-neighbour baseline on the same episodes, and verification EER / accuracy at the threshold
chosen on validation pairs. Writes a Markdown report, ROC and score-histogram PNGs, the model
folder and a few example images for ``siamkit verify``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from siamkit.checkpoint import atomic_write_text
from siamkit.data.datasets import build_dataset
from siamkit.data.labelled import LabelledData
from siamkit.evaluation.fewshot import FewShotResult, raw_pixel_episodes
from siamkit.recipe import RecipeResult, parse_recipe, run_recipe

EPISODES = 1000
DEMO_RECIPE: dict[str, Any] = {
    "seed": 0,
    "data": {"name": "digits", "params": {"size": 16}},
    # Two conv blocks keep a 4x4 map: with six training digits, a deeper trunk collapses the
    # unseen digits onto the seen ones (measured: 4 blocks 55%, 2 blocks 81% 4-way 1-shot).
    "encoder": {
        "name": "conv4",
        "params": {"in_channels": 1, "input_size": 16, "channels": 32, "blocks": 2},
    },
    "head": {"name": "cosine"},
    "loss": {
        "name": "mined_triplet",
        "params": {"margin": 0.1, "mining": "semi_hard", "distance": "cosine"},
    },
    "batches": {"batch_size": 60, "m_per_class": 10, "batches_per_epoch": 64},
    "training": {"optimizer": "adam", "lr": 0.002, "schedule": "cosine"},
    "evaluation": {"fewshot": [{"n_way": 4, "k_shot": 1, "episodes": EPISODES}]},
}


@dataclass
class DemoSummary:
    """The demo's figures: the model's and the baseline's one-shot accuracy, and verification."""

    siamese: FewShotResult
    baseline: FewShotResult
    result: RecipeResult
    report_path: Path

    def rows(self) -> list[dict[str, str]]:
        """Rows of the printed table."""
        test = self.result.test
        return [
            {"method": "siamese (Conv, mined triplets)", "4-way 1-shot": _pct(self.siamese),
             "EER": f"{100 * test['eer']:.2f}%", "accuracy @ val threshold":
             f"{100 * test['accuracy']:.2f}%", "ROC AUC": f"{test['auc']:.4f}"},
            {"method": "pixel nearest neighbour", "4-way 1-shot": _pct(self.baseline),
             "EER": "-", "accuracy @ val threshold": "-", "ROC AUC": "-"},
        ]  # fmt: skip


def _pct(result: FewShotResult) -> str:
    return f"{100 * result.mean:.2f} ± {100 * result.ci95:.2f}%"


def run_demo(out: str | Path, epochs: int = 4, show_progress: bool = True) -> DemoSummary:
    """Run the demo into ``out`` and return its figures."""
    out = Path(out)
    recipe = parse_recipe(DEMO_RECIPE, "demo recipe")
    recipe.training.epochs = epochs
    result = run_recipe(recipe, out, show_progress=show_progress)
    test = build_dataset("digits", size=16).test
    baseline = raw_pixel_episodes(test, 4, 1, EPISODES, recipe.seed)
    summary = DemoSummary(result.fewshot["4-way 1-shot"], baseline, result, out / "report.md")
    write_examples(test, out / "examples")
    atomic_write_text(summary.report_path, report_markdown(summary))
    return summary


def write_examples(test: LabelledData, folder: Path) -> None:
    """Save two 6s and one 9 from the test digits as PNGs (for trying ``siamkit verify``)."""
    folder.mkdir(parents=True, exist_ok=True)
    assert test.classes is not None
    picks = {"six_a": ("6", 0), "six_b": ("6", 1), "nine": ("9", 0)}
    by_class = test.indices_by_class()
    for name, (digit, nth) in picks.items():
        index = by_class[test.classes.index(digit)][nth]
        pixels = test.items[index][0].numpy()
        Image.fromarray(pixels, mode="L").resize((64, 64), Image.Resampling.NEAREST).save(
            folder / f"{name}.png"
        )


def report_markdown(summary: DemoSummary) -> str:
    """The demo report in Markdown."""
    rows = summary.rows()
    header = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    table = header + "".join("| " + " | ".join(r.values()) + " |\n" for r in rows)
    history = summary.result.history
    return (
        "# siamkit demo: one-shot digits\n\n"
        "Trained on scikit-learn digits 0-5; every figure below is on the unseen digits 6-9 "
        f"({EPISODES} seeded 4-way 1-shot episodes, mean ± 95% CI; verification on balanced "
        "test pairs at the threshold chosen on validation pairs).\n\n"
        f"{table}\n"
        f"Threshold: {summary.result.threshold:.4f} (score = cosine similarity). "
        f"Epochs: {len(history.epochs)}, best epoch {history.best_epoch}, training "
        f"{sum(e['seconds'] for e in history.epochs):.1f} s.\n\n"
        "![ROC](roc.png)\n\n![Scores](scores.png)\n\n"
        f"Model folder: `{summary.result.model_dir}`. Try:\n\n"
        f"    siamkit verify {summary.result.model_dir} "
        f"{summary.report_path.parent}/examples/six_a.png "
        f"{summary.report_path.parent}/examples/six_b.png\n"
    )
