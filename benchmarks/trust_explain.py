"""Part ``explain`` of benchmarks/trust.py: are the attribution maps faithful?

For each task, genuine test pairs (same person / writer's genuine signatures / character, classes
never seen in training) are explained with every method of :mod:`siamkit.explain` (A with B
fixed, then B with A fixed), and each map goes through the deletion test
(:func:`siamkit.explain.pair_deletion`): the image is cut into an 8x8 grid of patches, the patches
are replaced by the baseline in 16 steps, most attributed first, and the pair is scored after each
step; the same deletions in random order (2 orders per image, shared by the methods) give the
reference. ``ratio = mean AUC(attributed) / mean AUC(random)`` over every image of every pair
(areas above the lowest score either curve reaches); a ratio below 1 means the map finds the
evidence, 0.7 = 30% less area than chance. A map of uniform noise (``random``) is the control.

Models (recipes of configs/, trained by this script if their folder is missing, resuming from
checkpoints):

- faces: configs/faces.yaml into runs/faces (the recipe's own command), 32 epochs
- omniglot: configs/omniglot-batch-hard.yaml into runs/explain/omniglot, cut to 7 of 84 epochs
- signatures: configs/signatures-conv4.yaml (78x110, contrastive) into runs/explain/signatures,
  cut to 1 of 4 epochs (the default 155x220 recipe did not finish one epoch in 37 min here,
  this one took 13 min per epoch at load 35 on 2 cores)

(cut to fit a shared 2-core machine; the figure measured is faithfulness to the model, which
needs a trained model, not the best one). Per-pair results are cached in
``runs/explain/bench/<task>.json`` so an interrupted run resumes; ``TRUST_EXPLAIN_TASKS=faces``
measures only those tasks and reuses the others' caches.

    .venv/bin/python benchmarks/trust.py --parts explain
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress

from benchmark_parts import PartResult
from benchmarks_common import console, markdown_table

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "runs" / "explain" / "bench"
TASKS: dict[str, dict[str, Any]] = {
    "faces": {"config": "faces.yaml", "run": "runs/faces", "epochs": None},
    "omniglot": {"config": "omniglot-batch-hard.yaml", "run": "runs/explain/omniglot", "epochs": 7},
    "signatures": {
        "config": "signatures-conv4.yaml",
        "run": "runs/explain/signatures",
        "epochs": 1,
    },
}
METHODS = ["occlusion", "integrated_gradients", "saliency", "gradient_shap", "random"]
IG_STEPS = 16
OPTIONS = {"integrated_gradients": {"steps": IG_STEPS}, "gradient_shap": {"steps": IG_STEPS}}
BASELINE = "blur"
PAIRS, QUICK_PAIRS, SEED = 100, 8, 0
STEPS, RANDOM_ORDERS = 16, 2
TARGET_RATIO, TARGET_TASKS = 0.7, ("faces", "signatures")


def ensure_model(task: str) -> Path:
    """The task's model folder, trained with its recipe (epochs cut as TASKS says) if missing."""
    spec = TASKS[task]
    run = ROOT / spec["run"]
    if (run / "model" / "config.json").is_file():
        return run / "model"
    from siamkit.recipe import load_recipe, run_recipe

    recipe = load_recipe(ROOT / "configs" / spec["config"])
    if spec["epochs"] is not None:
        training = recipe.training.model_copy(update={"epochs": spec["epochs"]})
        recipe = recipe.model_copy(update={"training": training})
    console.print(f"training {task} into {run}")
    resume = (run / "checkpoint" / "state.json").is_file()
    return run_recipe(recipe, run, resume=resume).model_dir


def genuine_pairs(model: Any, n: int, seed: int) -> tuple[Any, list[tuple[int, int]]]:
    """The test split and ``n`` genuine pairs of it (signatures: genuine-genuine only)."""
    from siamkit.data.datasets import build_dataset
    from siamkit.data.pairs import make_pairs

    recipe = model.config.extra["recipe"]
    test = build_dataset(
        recipe["data"]["name"], recipe.get("data_dir"), **recipe["data"]["params"]
    ).test
    if test.classes is not None:
        keep = [
            i for i, y in enumerate(test.labels.tolist()) if not test.classes[y].endswith("/forged")
        ]
        test = test.subset(keep)
    a, b, _ = make_pairs(test.labels, n, seed, positive_fraction=1.0)
    return test, list(zip(a.tolist(), b.tolist(), strict=True))


def measure(task: str, n: int) -> list[dict[str, Any]]:
    """Per pair: the attributed and random areas of each method (both sides), cached."""
    import siamkit
    from siamkit.explain import pair_deletion

    model = siamkit.load(ensure_model(task))
    test, pairs = genuine_pairs(model, n, SEED)
    cache = CACHE / f"{task}.json"
    done: list[dict[str, Any]] = json.loads(cache.read_text()) if cache.is_file() else []
    done = [r for r in done if r["methods"] == METHODS and r["baseline"] == BASELINE]
    seen = {(r["a"], r["b"]) for r in done}
    with Progress(console=console) as progress:
        bar = progress.add_task(f"{task}: deletion tests", total=len(pairs), completed=len(seen))
        for a, b in pairs:
            if (a, b) in seen:
                continue
            tested = pair_deletion(model.network, test.items[a], test.items[b], METHODS, BASELINE,
                                   steps=STEPS, random_orders=RANDOM_ORDERS, seed=SEED,
                                   options=OPTIONS)  # fmt: skip
            done.append({"a": a, "b": b, "methods": METHODS, "baseline": BASELINE,
                         "score": float(tested[METHODS[0]][0].attributed[0]),
                         "areas": {m: [[r.auc_attributed, r.auc_random] for r in rs]
                                   for m, rs in tested.items()}})  # fmt: skip
            CACHE.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(done))
            progress.advance(bar)
    wanted = set(pairs)
    return [r for r in done if (r["a"], r["b"]) in wanted]


def ratio(records: list[dict[str, Any]], method: str) -> float:
    """Mean attributed area / mean random area over every image of ``records``."""
    areas = [side for r in records for side in r["areas"][method]]
    attributed = sum(a for a, _ in areas) / len(areas)
    chance = sum(c for _, c in areas) / len(areas)
    return attributed / chance if chance > 0 else float("nan")


def interval(records: list[dict[str, Any]], method: str, draws: int = 1000) -> tuple[float, float]:
    """95% bootstrap interval of :func:`ratio` over pairs."""
    rng = random.Random(SEED)
    values = sorted(ratio(rng.choices(records, k=len(records)), method) for _ in range(draws))
    return values[int(0.025 * draws)], values[int(0.975 * draws) - 1]


def run(quick: bool) -> PartResult:
    """Measure every task (or those in ``TRUST_EXPLAIN_TASKS``; the others from their cache)."""
    torch.set_num_threads(int(os.environ.get("TRUST_EXPLAIN_THREADS", "1")))
    chosen = os.environ.get("TRUST_EXPLAIN_TASKS", ",".join(TASKS)).split(",")
    n = QUICK_PAIRS if quick else PAIRS
    by_method: dict[str, dict[str, float]] = {}
    details: dict[str, Any] = {}
    rows = []
    for task in TASKS:
        if task in chosen:
            records = measure(task, n)
        else:
            cache = CACHE / f"{task}.json"
            if not cache.is_file():
                continue
            records = json.loads(cache.read_text())[:n]
        if not records:
            continue
        ratios = {m: ratio(records, m) for m in METHODS}
        by_method[task] = {m: round(v, 4) for m, v in ratios.items() if m != "random"}
        spans = {m: interval(records, m) for m in METHODS}
        details[task] = {
            "pairs": len(records),
            "random_control": round(ratios["random"], 4),
            "interval95": {m: [round(lo, 4), round(hi, 4)] for m, (lo, hi) in spans.items()},
            "mean_genuine_score": sum(r["score"] for r in records) / len(records),
        }
        for m in METHODS:
            lo, hi = spans[m]
            verdict = "control" if m == "random" else ("faithful" if hi < 1 else "NOT faithful")
            rows.append({"task": task, "method": m, "pairs": len(records),
                         "AUC ratio": f"{ratios[m]:.3f}", "95% interval": f"{lo:.3f}-{hi:.3f}",
                         "verdict": verdict})  # fmt: skip
    best = {t: min(v.values()) for t, v in by_method.items()}
    best_method = {t: min(v, key=v.get) for t, v in by_method.items()}
    checks = [f"{t}: best {best_method[t]} {best[t]:.3f} "
              f"({'met' if best[t] <= TARGET_RATIO else 'missed'}, target <= {TARGET_RATIO})"
              for t in TARGET_TASKS if t in best]  # fmt: skip
    markdown = (
        "## explain\n\nDeletion test of the attribution maps (lower = more faithful; 1 = no "
        f"better than random deletion), genuine test pairs, both sides of each pair, baseline "
        f"`{BASELINE}`, 8x8 patches deleted in {STEPS} steps, {RANDOM_ORDERS} random orders per "
        f"image. Integrated gradients and gradient SHAP with {IG_STEPS} steps/samples, "
        "occlusion with a 1/7-side window at half-window stride. 'random' is a map of noise "
        "(the control). 'NOT faithful': the 95% bootstrap interval over pairs reaches 1.\n\n"
        + markdown_table(rows) + "\nTargets: " + "; ".join(checks) + "\n"
    )  # fmt: skip
    figures = {"deletion_auc_ratio": {t: round(v, 4) for t, v in best.items()},
               "deletion_auc_by_method": by_method}  # fmt: skip
    return PartResult(figures=figures, markdown=markdown, details=details, seed=SEED)
