"""Offline signature verification on SigComp2011 (Dutch), writers never seen in training.

For each recipe (configs/signatures*.yaml) and each writer-disjoint fold: train on the fold's
training writers with SigNet pairs and contrastive loss, choose per-K, per-aggregate thresholds on
its validation writers (skilled-forgery EER), then score its test writers with K = 1, 3, 5 enrolled
references (mean and max of the K scores), separately against skilled and random forgeries.
Writes benchmarks/results/signatures.{md,json} and ROC/DET and score-histogram PNGs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/signatures.py            # full run
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/signatures.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from scipy.stats import norm  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from benchmarks_common import environment, target_report  # noqa: E402
from siamkit.data.paths import dataset_dir  # noqa: E402
from siamkit.data.signatures import SignatureSet, read_signature_tree, writer_folds  # noqa: E402
from siamkit.encoders import build_encoder  # noqa: E402
from siamkit.evaluation.reference_set import AGGREGATES  # noqa: E402
from siamkit.evaluation.signature_eval import (  # noqa: E402
    evaluate_fold,
    preprocess_of,
    save_signature_model,
    train_fold,
)
from siamkit.evaluation.verification import equal_error_rate  # noqa: E402
from siamkit.losses import build_loss  # noqa: E402
from siamkit.recipe import TrainRecipe, build_network, load_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
METRICS = ("eer", "accuracy", "far", "frr", "auc")
PUBLISHED = [  # SigNet (Dey et al. 2017), writer-independent accuracy; not measured here
    {"dataset": "CEDAR", "accuracy": "100.00%"},
    {"dataset": "GPDS300", "accuracy": "76.83%"},
    {"dataset": "BHSig260-Hindi", "accuracy": "84.64%"},
    {"dataset": "BHSig260-Bengali", "accuracy": "86.11%"},
]
console = Console()


def quick_recipe(recipe: TrainRecipe) -> TrainRecipe:
    """A short smoke-run version of a recipe: 2 epochs of 1024 pairs."""
    batches = recipe.batches.model_copy(update={"examples_per_epoch": 1024})
    training = recipe.training.model_copy(update={"epochs": 2})
    return recipe.model_copy(update={"batches": batches, "training": training})


def run_fold(
    name: str, recipe: TrainRecipe, data: SignatureSet, images: torch.Tensor, fold: int,
    split: Any, out: Path,
) -> dict[str, Any]:  # fmt: skip
    """Train, calibrate and test one fold; rows, validation EERs and K=5 scores for plots."""
    console.print(f"[bold]{name}[/] fold {fold}: {len(split.train)} train, "
                  f"{len(split.val)} val, {len(split.test)} test writers")  # fmt: skip
    trained = train_fold(recipe, data, images, split, out / name / f"fold{fold}")
    rule = recipe.evaluation.threshold_rule
    result = evaluate_fold(trained.network, images, data, split, seed=recipe.seed, rule=rule)
    if fold == 0:
        save_signature_model(out / name / "model", trained, recipe, result.thresholds, split,
                             result.normalisation, result.aggregate, result.support)  # fmt: skip
    trials, scores = result.scored[5]
    return {
        "rows": [{"model": name, "fold": fold, **row} for row in result.rows],
        "val_eer": result.val_eer,
        "normalisation": result.normalisation,
        "val_eer_by_normalisation": result.normalisation_eers,
        "train_seconds": trained.seconds,
        "epochs_run": len(trained.history.epochs),
        "best_epoch": trained.history.best_epoch,
        "k5": {"kinds": trials.kinds, "scores": scores, "thresholds": result.thresholds[5]},
    }


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over folds per (model, K, aggregate, forgery)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["model"], row["k"], row["aggregate"], row["forgery"])
        groups.setdefault(key, []).append(row)
    out = []
    for (model, k, aggregate, forgery), members in groups.items():
        entry: dict[str, Any] = {"model": model, "k": k, "aggregate": aggregate, "forgery": forgery}
        for metric in METRICS:
            values = np.array([m[metric] for m in members])
            entry[metric] = float(values.mean())
            entry[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        entry["folds"] = len(members)
        out.append(entry)
    return out


def measure_full_signet(steps: int, pairs: int, compact_pairs: int) -> dict[str, Any]:
    """Time training steps of the full SigNet (155x220, width 1) to estimate a full run."""
    recipe = load_recipe(ROOT / "configs" / "signatures-full.yaml")
    torch.manual_seed(0)
    network, _ = build_network(recipe)
    loss = build_loss(recipe.loss, network)
    optimizer = torch.optim.RMSprop(network.parameters(), lr=1e-4)
    size = recipe.encoder.params["input_size"]
    x1, x2 = torch.rand(pairs, 1, *size), torch.rand(pairs, 1, *size)
    y = (torch.arange(pairs) % 2).float()
    network.train()
    started_cpu, started = time.process_time(), time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        loss(*network(x1, x2), y).backward()
        optimizer.step()
    cpu = (time.process_time() - started_cpu) / (steps * pairs)
    wall = (time.perf_counter() - started) / (steps * pairs)
    epoch_pairs, epochs = recipe.batches.examples_per_epoch, recipe.training.epochs
    return {
        "parameters": sum(p.numel() for p in network.parameters()),
        "measured_steps": steps,
        "pairs_per_step": pairs,
        "cpu_seconds_per_pair": cpu,
        "wall_seconds_per_pair": wall,
        "recipe_pairs_per_epoch": epoch_pairs,
        "recipe_epochs": epochs,
        "estimated_hours_per_fold_cpu": cpu * epoch_pairs * epochs / 3600,
        "estimated_hours_per_fold_wall": wall * epoch_pairs * epochs / 3600,
        "compact_budget_pairs": compact_pairs,
        "estimated_hours_at_compact_budget_cpu": cpu * compact_pairs / 3600,
    }


def training_pairs_per_epoch(recipe: TrainRecipe) -> int:
    """Pairs per epoch, or for mined batches as many pairs as the epoch's images make."""
    batches = recipe.batches
    if recipe.loss.name == "mined_triplet" and batches.batches_per_epoch:
        return batches.batches_per_epoch * batches.batch_size // 2
    return batches.examples_per_epoch


def compact_cost(recipe: TrainRecipe) -> dict[str, Any]:
    """Parameters of a recipe's encoder."""
    encoder = build_encoder(recipe.encoder)
    return {"parameters": sum(p.numel() for p in encoder.parameters())}


def plot_curves(k5: dict[str, list[dict[str, Any]]], aggregate: str, folder: Path) -> list[Path]:
    """ROC and DET (K = 5, pooled over folds) and a histogram of score minus fold threshold."""
    fig_roc, ax_roc = plt.subplots(figsize=(5, 4.5))
    fig_det, ax_det = plt.subplots(figsize=(5, 4.5))
    for model, folds in k5.items():
        kinds = np.concatenate([f["kinds"] for f in folds])
        scores = np.concatenate([f["scores"][aggregate] for f in folds])
        for kind, style in (("skilled", "-"), ("random", "--")):
            mask = (kinds == "genuine") | (kinds == kind)
            labels = (kinds[mask] == "genuine").astype(int)
            fpr, tpr, _ = roc_curve(labels, scores[mask])
            eer = equal_error_rate(scores[mask], labels)[0]
            label = f"{model}, {kind} (pooled EER {100 * eer:.1f}%)"
            ax_roc.plot(fpr, tpr, style, label=label)
            far, frr = np.clip(fpr, 1e-3, 1 - 1e-3), np.clip(1 - tpr, 1e-3, 1 - 1e-3)
            ax_det.plot(norm.ppf(far), norm.ppf(frr), style, label=label)
    ax_roc.plot([0, 1], [1, 0], ":", color="grey")
    ax_roc.set(xlabel="false accept rate", ylabel="true accept rate", xlim=(0, 1), ylim=(0, 1),
               title=f"ROC, K = 5 references ({aggregate}), unseen writers")  # fmt: skip
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.999])
    ax_det.set_xticks(norm.ppf(ticks), [f"{100 * t:g}%" for t in ticks])
    ax_det.set_yticks(norm.ppf(ticks), [f"{100 * t:g}%" for t in ticks])
    ax_det.plot([-3.1, 3.1], [-3.1, 3.1], ":", color="grey")
    ax_det.set(xlim=(-3.2, 3.2), ylim=(-3.2, 3.2))
    ax_det.set(xlabel="false accept rate (FAR)", ylabel="false reject rate (FRR)",
               title=f"DET, K = 5 references ({aggregate})")  # fmt: skip
    for ax in (ax_roc, ax_det):
        ax.legend(fontsize=7, loc="upper right" if ax is ax_det else "lower right")
    paths = [
        _save(fig_roc, folder / "signatures_roc.png"),
        _save(fig_det, folder / "signatures_det.png"),
    ]
    model, folds = next(iter(k5.items()))
    kinds = np.concatenate([f["kinds"] for f in folds])
    shifted = np.concatenate([f["scores"][aggregate] - f["thresholds"][aggregate] for f in folds])
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    bins = np.linspace(shifted.min(), shifted.max(), 50)
    for kind in ("genuine", "skilled", "random"):
        ax.hist(shifted[kinds == kind], bins, alpha=0.55, density=True, label=kind)
    ax.axvline(0, color="black", linestyle="--", label="validation threshold")
    ax.set(xlabel="score - fold threshold (accept when >= 0)", ylabel="density",
           title=f"{model}: K = 5 ({aggregate}) scores, unseen writers, all folds")  # fmt: skip
    ax.legend(fontsize=8)
    paths.append(_save(fig, folder / "signatures_scores.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pct(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def markdown(report: dict[str, Any]) -> str:
    """The results file: settings, per-model tables, headline, full SigNet cost, references."""
    m = report["machine"]
    lines = [
        "# Offline signature verification (SigComp2011 Dutch), unseen writers",
        "",
        f"Written by `benchmarks/signatures.py` ({report['mode']} run). Command: `{m['command']}`",
        f"on {m['machine']} (load average {m['load_average']} at start; above the core count "
        f"the machine was shared), versions {m['versions']}, {m['threads']} thread(s), "
        f"{m['date']}.",
        "",
        f"Protocol: {report['protocol']}",
        "",
        "## Headline (best recipe, K = 5 references, mean over folds)",
        "",
    ]
    h = report["headline"]
    lines += [
        "| recipe | aggregate | skilled EER | skilled accuracy | random EER | random accuracy | "
        "train minutes / fold |",
        "|---|---|---|---|---|---|---|",
        f"| {h['model']} | {h['aggregate']} | {100 * h['skilled_eer']:.2f}% | "
        f"{100 * h['skilled_accuracy']:.2f}% | {100 * h['random_eer']:.2f}% | "
        f"{100 * h['random_accuracy']:.2f}% | {h['train_minutes']:.1f} |",
        "",
        f"The aggregate (mean or max of the K scores, or the score against the references' mean "
        "embedding: centroid) was chosen by validation-writer EER. "
        f"Targets: skilled EER ≤ 5%, accuracy ≥ 95%, random EER ≤ 1%, training ≤ 30 min: "
        f"{report['targets']}.",
        "",
        "## All results (mean ± std over folds, %; accuracy/FAR/FRR at the validation threshold)",
        "",
        "| model | K | aggregate | forgery | EER | accuracy | FAR | FRR | ROC AUC |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["summary"]:
        lines.append(
            f"| {r['model']} | {r['k']} | {r['aggregate']} | {r['forgery']} | "
            + " | ".join(pct(r[x], r[f"{x}_std"]) for x in METRICS)
            + " |"
        )
    lines += ["", "## Training", "", "Score normalisation (`none`, or `spread`: divided by the "
              "mean distance between the K references) is chosen per fold by the validation "
              "writers' K = 5 skilled EER (in brackets).", "",
              "| model | parameters | fold | epochs run | best epoch | train seconds | "
              "normalisation |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, info in report["models"].items():
        for f in info["folds"]:
            eers = ", ".join(
                f"{n} {100 * e:.1f}%" for n, e in f["val_eer_by_normalisation"].items()
            )
            lines.append(f"| {name} | {info['parameters']:,} | {f['fold']} | {f['epochs_run']} | "
                         f"{f['best_epoch']} | {f['train_seconds']:.0f} | "
                         f"{f['normalisation']} ({eers}) |")  # fmt: skip
    full = report.get("full_signet")
    if full:
        lines += [
            "", "## Full SigNet (155x220, width 1): measured cost only", "",
            f"{full['parameters']:,} parameters. {full['measured_steps']} training step(s) of "
            f"{full['pairs_per_step']} pairs took {full['cpu_seconds_per_pair']:.2f} CPU s and "
            f"{full['wall_seconds_per_pair']:.2f} wall s per pair here; the full recipe "
            f"(configs/signatures-full.yaml: {full['recipe_epochs']} epochs x "
            f"{full['recipe_pairs_per_epoch']} pairs) would take about "
            f"{full['estimated_hours_per_fold_cpu']:.1f} CPU hours "
            f"({full['estimated_hours_per_fold_wall']:.1f} h wall at this load) per fold; even "
            f"the default recipe's budget (as many images as {full['compact_budget_pairs']} "
            f"pairs) would take {full['estimated_hours_at_compact_budget_cpu']:.1f} CPU hours per "
            "fold. So it was not trained here.",
        ]  # fmt: skip
    lines += ["", "## Published figures (not measured here)", "",
              "SigNet (Dey et al. 2017), writer-independent accuracy on other datasets:", "",
              "| dataset | accuracy |", "|---|---|"]  # fmt: skip
    lines += [f"| {p['dataset']} | {p['accuracy']} |" for p in PUBLISHED]
    lines += ["", "Plots: `signatures_roc.png`, `signatures_det.png`, `signatures_scores.png`.", ""]
    return "\n".join(lines)


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """Best recipe by mean validation EER (K = 5), with its K = 5 test figures."""
    best = None
    for name, info in report["models"].items():
        for aggregate in AGGREGATES:
            val = float(np.mean([f["val_eer"][aggregate] for f in info["folds"]]))
            if best is None or val < best[0]:
                best = (val, name, aggregate)
    _, name, aggregate = best
    pick = {(r["k"], r["aggregate"], r["forgery"]): r for r in report["summary"]
            if r["model"] == name}  # fmt: skip
    skilled, random = pick[(5, aggregate, "skilled")], pick[(5, aggregate, "random")]
    minutes = np.mean([f["train_seconds"] for f in report["models"][name]["folds"]]) / 60
    return {
        "model": name, "aggregate": aggregate, "k": 5, "folds": skilled["folds"],
        "skilled_eer": skilled["eer"], "skilled_accuracy": skilled["accuracy"],
        "random_eer": random["eer"], "random_accuracy": random["accuracy"],
        "train_minutes": float(minutes), "validation_eer": best[0],
    }  # fmt: skip


def targets(h: dict[str, Any]) -> str:
    return target_report(
        [
            ("skilled EER", h["skilled_eer"], 0.05, "<="),
            ("skilled accuracy", h["skilled_accuracy"], 0.95, ">="),
            ("random EER", h["random_eer"], 0.01, "<="),
            ("train minutes", h["train_minutes"], 30.0, "<="),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", type=Path,
                        help="recipe(s) to compare (default configs/signatures.yaml)")  # fmt: skip
    parser.add_argument("--folds", type=int, default=5, help="folds to run (of n_folds)")
    parser.add_argument("--quick", action="store_true", help="2 short epochs per fold")
    parser.add_argument("--measure-full", type=int, default=1, metavar="STEPS",
                        help="time STEPS training steps of the full SigNet (0: skip)")  # fmt: skip
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "signatures",
                        help="checkpoints and the fold-0 model of each recipe go here")  # fmt: skip
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    configs = args.config or [ROOT / "configs" / "signatures.yaml"]
    report: dict[str, Any] = {"machine": environment(0), "mode": "quick" if args.quick else "full",
                              "models": {}, "rows": []}  # fmt: skip
    data = read_signature_tree(dataset_dir("signatures"))
    k5: dict[str, list[dict[str, Any]]] = {}
    started = time.perf_counter()
    for config in configs:
        recipe = load_recipe(config)
        recipe = quick_recipe(recipe) if args.quick else recipe
        name = config.stem
        params = recipe.data.params
        folds = writer_folds(data.writer_ids(), params.get("n_folds", 5), params.get("n_val", 8),
                             params.get("seed", 0))[: args.folds]  # fmt: skip
        report["protocol"] = (
            f"{len(data.writer_ids())} writers, {params.get('n_folds', 5)} writer-disjoint folds "
            f"(seed {params.get('seed', 0)}; {args.folds} run), {params.get('n_val', 8)} "
            "validation writers per fold (threshold and best epoch), the rest train; test "
            "trials per writer: K references drawn 5 times (seeded), the writer's other genuine "
            "signatures, all its skilled forgeries, 10 random forgeries (other test writers)."
        )
        prep = time.perf_counter()
        images = preprocess_of(recipe)(data.paths)
        info: dict[str, Any] = {"config": str(config), "recipe_seed": recipe.seed,
                                "preprocess_seconds": time.perf_counter() - prep,
                                **compact_cost(recipe), "folds": []}  # fmt: skip
        for i, split in enumerate(folds):
            result = run_fold(name, recipe, data, images, i, split, args.runs)
            report["rows"] += result.pop("rows")
            k5.setdefault(name, []).append(result.pop("k5"))
            info["folds"].append({"fold": i, **result})
        report["models"][name] = info
    report["summary"] = summarise(report["rows"])
    report["headline"] = headline(report)
    report["targets"] = targets(report["headline"])
    report["wall_seconds_total"] = time.perf_counter() - started
    aggregate = report["headline"]["aggregate"]
    args.results.mkdir(parents=True, exist_ok=True)
    report["plots"] = [p.name for p in plot_curves(k5, aggregate, args.results)]
    if args.measure_full:
        first = load_recipe(configs[0])
        budget = first.training.epochs * training_pairs_per_epoch(first)
        report["full_signet"] = measure_full_signet(args.measure_full, 16, budget)
    show(report)
    (args.results / "signatures.md").write_text(markdown(report))
    h = report["headline"]
    headline_json = {key: h[key] for key in ("skilled_eer", "skilled_accuracy", "random_eer",
                                              "train_minutes")}  # fmt: skip
    full = {**headline_json, "headline": h, **{k: v for k, v in report.items() if k != "rows"},
            "per_fold_rows": report["rows"]}  # fmt: skip
    (args.results / "signatures.json").write_text(json.dumps(full, indent=1, default=float))
    console.print(f"wrote {args.results / 'signatures.md'} and signatures.json")


def show(report: dict[str, Any]) -> None:
    table = Table(title="unseen writers, mean ± std over folds (%)")
    for column in ("model", "K", "agg", "forgery", *METRICS):
        table.add_column(column)
    for r in report["summary"]:
        table.add_row(r["model"], str(r["k"]), r["aggregate"], r["forgery"],
                      *(pct(r[m], r[f"{m}_std"]) for m in METRICS))  # fmt: skip
    console.print(table)
    console.print(f"headline: {report['headline']}")
    console.print(f"targets: {report['targets']}")


if __name__ == "__main__":
    main()
