"""Part ``ensemble`` of benchmarks/applications.py: does the siamese + classifier ensemble beat
each of its parts on known classes with few images each?

AT&T faces (configs/faces-ensemble.yaml: 40 people, few training images each) over several seeds
(each seed re-cuts the images and retrains), and, with ``SIAMKIT_ENSEMBLE_OMNIGLOT=1``, Omniglot's
964 background characters (configs/omniglot-ensemble.yaml, 5 training drawings each) once. Every
run is ``run_ensemble_recipe`` (what ``siamkit train`` runs) into runs/bench/ensemble/, reused when
its report exists (resume by running again).

    .venv/bin/python benchmarks/applications.py --parts ensemble [--quick]
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

from benchmark_parts import PartResult
from benchmarks_common import REPOSITORY, markdown_table
from siamkit.ensemble_recipe import run_ensemble_recipe
from siamkit.recipe import load_recipe

RUNS = REPOSITORY / "runs" / "bench" / "ensemble"
PARTS = ("siamese", "classifier", "ensemble")


def run_one(config: str, seed: int, out: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """One recipe run's test report and validation choices (read back if already run)."""
    report = out / "report.json"
    if not report.is_file():
        recipe = load_recipe(REPOSITORY / config)
        update: dict[str, Any] = {"seed": seed}
        if overrides:
            update["ensemble"] = recipe.ensemble.model_copy(update=overrides)
        run_ensemble_recipe(recipe.model_copy(update=update), out, show_progress=False)
    return json.loads(report.read_text())


def summary(task: str, reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over runs of each part's test accuracy, and how often the ensemble won."""
    row: dict[str, Any] = {"task": task, "runs": len(reports)}
    for part in PARTS:
        values = [r["test"][f"{part}_accuracy"] for r in reports]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        row[part] = f"{statistics.mean(values):.4f} ± {std:.4f}"
    beats = sum(
        r["test"]["ensemble_accuracy"] > max(r["test"]["siamese_accuracy"],
                                             r["test"]["classifier_accuracy"])
        for r in reports
    )  # fmt: skip
    row["ensemble beats both"] = f"{beats}/{len(reports)}"
    row["weights chosen"] = ", ".join(f"{r['validation_choices']['weight']:.2f}" for r in reports)
    return row


def mean_accuracy(reports: list[dict[str, Any]], part: str) -> float:
    return statistics.mean(r["test"][f"{part}_accuracy"] for r in reports)


def run(quick: bool) -> PartResult:
    seeds = [0, 1] if quick else [0, 1, 2]
    faces = [run_one("configs/faces-ensemble.yaml", s, RUNS / f"faces-s{s}", {}) for s in seeds]
    rows = [summary("AT&T faces, 40 people", faces)]
    omniglot = []
    if not quick and os.environ.get("SIAMKIT_ENSEMBLE_OMNIGLOT") == "1":
        omniglot = [run_one("configs/omniglot-ensemble.yaml", 0, RUNS / "omniglot-s0", {})]
        rows.append(summary("Omniglot background, 964 characters", omniglot))
    first = faces[0]["test"]
    notes = [
        *(
            []
            if omniglot
            else [
                "Omniglot (configs/omniglot-ensemble.yaml) was not run: "
                "`SIAMKIT_ENSEMBLE_OMNIGLOT=1` adds it."
            ]
        ),
        f"Test items per faces run: {first['items']} ({first['classes']} people); "
        "accuracy = share of test images whose most probable class is right. The weight is the "
        "siamese share (1 = siamese only), chosen by validation log-loss.",
        "Each seed re-cuts every class's images into training / validation / test and retrains "
        "both networks; the classifier is the recipe's (configs/faces-ensemble.yaml: a second "
        "Conv-4 trained as a softmax classifier), its temperature fitted on the validation images.",
    ]
    markdown = markdown_table(rows) + "\n" + "\n\n".join(notes) + "\n"
    figures = {f"{part}_accuracy": mean_accuracy(faces, part) for part in PARTS}
    details = {"faces": faces, "omniglot": omniglot, "seeds": seeds}
    return PartResult(figures=figures, markdown=markdown, details=details, seed=seeds[0])
