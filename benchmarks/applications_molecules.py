"""Part ``molecules`` of benchmarks/applications.py: one-shot drug discovery on Tox21, SIDER and
MUV with the protocol of Altae-Tran et al. 2017 (docs/molecules.md).

For each data set: train ``configs/<name>.yaml`` (the first assays; runs kept in
``benchmarks/runs/applications_molecules/<full|quick>/<name>``, resumed when interrupted), then
on the held-out assays draw ``EPISODES`` support sets per assay and setting (1+/1-, 5+/10-,
10+/10-) and score the remaining molecules of the assay with every method on the same episodes:
the trained siamese network (scorers ``mean``, ``prototype``, ``attention``), the same network
untrained (``mean``), and the fingerprint baselines (``tanimoto`` 1-NN, ``random_forest`` on the
support set). Figures ``<name>_auc_10shot`` are the trained network's ``mean`` scorer at
10+/10- (the scorer was fixed before the runs; the others are recorded beside it).

    .venv/bin/python benchmarks/applications.py --parts molecules [--quick]

Each data set's episode table is kept as ``episodes.json`` in its run folder, so an interrupted
run redoes only the missing data sets. ``SIAMKIT_MOLECULE_SETS=tox21,sider`` limits a run to
some data sets (the part then holds those only).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import torch

from benchmark_parts import PartResult
from benchmarks_common import REPOSITORY, markdown_table
from siamkit.data.molecules import assay_split, molecules_path, read_molecules
from siamkit.encoders import build_encoder
from siamkit.evaluation.molecules_eval import (
    SETTINGS,
    embed_molecules,
    embedding_scorers,
    episode_aucs,
    fingerprint_scorers,
    held_out_rows,
    summarise,
)
from siamkit.recipe import load_recipe, run_recipe

DATASETS = ("tox21", "sider", "muv")
# Episodes per held-out assay and setting. The paper's code draws 20 (n_trials = 20); this run
# draws 10 (3 for MUV, whose episodes score ~14,700 molecules each) to fit the time of a loaded
# 2-core machine.
EPISODES = {"tox21": 10, "sider": 10, "muv": 3}
SEED = 0
RUNS = REPOSITORY / "benchmarks" / "runs" / "applications_molecules"
HEADLINE = "mean"
PAPER = (
    'Altae-Tran, Ramsundar, Pappu, Pande, "Low Data Drug Discovery with One-Shot Learning", '
    "ACS Central Science 3(4):283-293, 2017"
)
PUBLISHED_NOTE = (
    f"Published figures ({PAPER}; random forest, graph convolution, Siamese, attention LSTM, "
    "IterRefLSTM): **not found** in the reference material searchable from this machine (the "
    "paper's text is reachable only up to its introduction), so no published figure is shown; "
    "they are to be copied from the paper's tables, marked published, not measured here."
)


def _train(name: str, quick: bool) -> Any:
    recipe = load_recipe(REPOSITORY / "configs" / f"{name}.yaml")
    if quick:
        training = recipe.training.model_copy(update={"epochs": 2})
        recipe = recipe.model_copy(update={"training": training})
    out = RUNS / ("quick" if quick else "full") / name
    resume = (out / "checkpoint").is_dir()
    started = time.perf_counter()
    result = run_recipe(recipe, out, resume=resume, show_progress=False)
    return recipe, result, time.perf_counter() - started


def _dataset(name: str, quick: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    saved = RUNS / ("quick" if quick else "full") / name / "episodes.json"
    if saved.is_file():
        record = json.loads(saved.read_text())
        return record["table"], record["details"]
    table, details = _measure(name, quick)
    saved.write_text(json.dumps({"table": table, "details": details}, indent=2) + "\n")
    return table, details


def _measure(name: str, quick: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    recipe, result, seconds = _train(name, quick)
    data = read_molecules(molecules_path(name))
    _, test_tasks = assay_split(len(data.tasks))
    rows_needed = held_out_rows(data, test_tasks)
    import siamkit

    model = siamkit.load(result.model_dir)
    model.network.eval()
    trained = embed_molecules(model.network.embed, data, rows_needed)
    torch.manual_seed(recipe.seed)
    untrained_net = build_encoder(recipe.encoder).eval()
    untrained = embed_molecules(untrained_net, data, rows_needed)
    scorers = {
        **{f"siamese ({m})": s for m, s in embedding_scorers(trained).items()},
        "untrained network (mean)": embedding_scorers(untrained, ["mean"])["mean"],
        **{
            {"tanimoto": "Tanimoto 1-NN", "random_forest": "random forest"}[m]: s
            for m, s in fingerprint_scorers(data, SEED).items()
        },
    }
    episodes = 3 if quick else EPISODES[name]
    table, per_assay = [], {}
    for n_pos, n_neg in SETTINGS:
        aucs = episode_aucs(data, test_tasks, scorers, n_pos, n_neg, episodes, SEED)
        for method, by_assay in aucs.items():
            s = summarise(by_assay)
            table.append({
                "data": name, "support": f"{n_pos}+/{n_neg}-", "method": method,
                "ROC-AUC (measured)": f"{s['mean']:.3f} ± {s['std']:.3f}",
                "mean": round(s["mean"], 4), "std": round(s["std"], 4),
            })  # fmt: skip
            per_assay[f"{n_pos}+/{n_neg}- {method}"] = {
                a: round(float(np.mean(v)), 4) for a, v in by_assay.items()
            }
    details = {
        "held_out_assays": [data.tasks[t] for t in test_tasks],
        "training_assays": len(data.tasks) - len(test_tasks),
        "molecules": len(data.smiles),
        "skipped_smiles": data.skipped,
        "episodes_per_assay_and_setting": episodes,
        "train_seconds": round(seconds, 1),
        "per_assay_mean_auc": per_assay,
        "recipe": f"configs/{name}.yaml",
    }
    return table, details


def _figure(table: list[dict[str, Any]], name: str, method: str) -> float:
    row = next(r for r in table if r["data"] == name and r["support"] == "10+/10-"
               and r["method"] == method)  # fmt: skip
    return row["mean"]


def run(quick: bool = False) -> PartResult:
    """Train and evaluate the three data sets; the figures are the 10+/10- ROC-AUCs."""
    tables, details = [], {}
    chosen = os.environ.get("SIAMKIT_MOLECULE_SETS", ",".join(DATASETS)).split(",")
    sets = [n for n in DATASETS if n in chosen]
    for name in sets:
        table, info = _dataset(name, quick)
        tables += table
        details[name] = info
    figures = {f"{n}_auc_10shot": _figure(tables, n, f"siamese ({HEADLINE})") for n in sets}
    rf = {n: _figure(tables, n, "random forest") for n in sets}
    shown = [{k: v for k, v in r.items() if k not in ("mean", "std")} for r in tables]
    skipped = ", ".join(f"{n} {details[n]['skipped_smiles']}" for n in sets)
    missing = [n for n in DATASETS if n not in sets]
    tox = figures.get("tox21_auc_10shot")
    verdict = "not measured" if tox is None else "above" if tox > rf["tox21"] else "NOT above"
    markdown = "\n".join([
        "## molecules: one-shot drug discovery (Tox21, SIDER, MUV)\n",
        f"Protocol of {PAPER}: train on the first assays, test on the held-out ones (Tox21 the "
        "last 3 of 12, SIDER the last 6 of 27, MUV the last 5 of 17); each episode draws a "
        "support set from one held-out assay and scores its other molecules; ROC-AUC mean ± std "
        "over the episodes (per held-out assay and setting: "
        + ", ".join(f"{n} {details[n]['episodes_per_assay_and_setting']}" for n in sets)
        + "; the paper's code draws 20), pooled "
        "over the assays. Morgan fingerprints, radius 2, 2048 bits (RDKit). SMILES RDKit could "
        f"not parse, skipped: {skipped}.\n",
        f"Figures: siamese ({HEADLINE} scorer) at 10+/10-: "
        + ", ".join(f"{k} = {v:.3f}" for k, v in figures.items())
        + f". Tox21 target vs our random forest on the same episodes: {verdict}"
        + (f" ({tox:.3f} vs {rf['tox21']:.3f})" if tox is not None else "")
        + "; vs the paper's Siamese "
        "figure: not checked (published table not found, see below).\n",
        markdown_table(shown),
        PUBLISHED_NOTE + "\n",
        *([f"Not measured in this run: {', '.join(missing)}.\n"] if missing else []),
    ])  # fmt: skip
    return PartResult(figures=figures, markdown=markdown, details=details, seed=SEED)


if __name__ == "__main__":
    import sys

    print(run(quick="--quick" in sys.argv).markdown)
