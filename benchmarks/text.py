"""Text benchmark: STS-B, MRPC paraphrase detection and few-shot text classification.

Models: (a) the seeds' Siamese LSTM (both directions, max-pooled) trained from scratch on STS-B
train (configs/stsb-lstm.yaml), and the same recipe with seeds 1 and 2 (stages lstm_seed1/2:
the headline reports the seed-0 model and the mean ± std over the three seeds),
(a') a BiLSTM-max on frozen MiniLM word-piece vectors (configs/stsb-lstm-init.yaml),
(b) all-MiniLM-L6-v2 as shipped (zero-shot), (c) MiniLM fine-tuned by siamkit on STS-B train
(configs/stsb-minilm.yaml), (d) MiniLM fine-tuned on MRPC train (configs/mrpc-minilm.yaml).
For each: STS-B test Spearman/Pearson (x 100), MRPC test accuracy and F1 at thresholds chosen on
MRPC train (one maximising accuracy, one maximising F1 there), few-shot classification of STS-B
test sentences by source corpus (6-way 5-shot, class prototypes), embedding throughput; training
wall and CPU time.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/text.py
    ... benchmarks/text.py --stages lstm zeroshot   # some stages; results of others are kept
    ... benchmarks/text.py --report-only            # rewrite text.md/json from cached stages

Training runs go to --runs (default runs/bench-text/<recipe>) and resume there (a run of the same
recipe whose checkpoint is there continues, or is only re-evaluated when finished); each stage's
results are cached in <runs>/stages.json, so a re-run only redoes what is asked. With
--add-missing-mrpc, cached stages lacking the F1-threshold MRPC figures get them from their saved
model. Writes
benchmarks/results/text.md and text.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from benchmarks_common import environment, target_report
from siamkit.data.text import read_mrpc, read_stsb, read_stsb_sources
from siamkit.encoders import build_encoder
from siamkit.heads import CosineHead
from siamkit.recipe import load_recipe, run_recipe
from siamkit.siamese import SiameseNetwork
from siamkit.text import evaluate_sts, fewshot_text_accuracy
from siamkit.text.paraphrase import choose_pair_threshold, threshold_report
from siamkit.text.similarity import sentences_per_second, similarity

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RECIPES = {
    "lstm": ROOT / "configs" / "stsb-lstm.yaml",
    "lstm_seed1": ROOT / "configs" / "stsb-lstm.yaml",
    "lstm_seed2": ROOT / "configs" / "stsb-lstm.yaml",
    "lstm_init": ROOT / "configs" / "stsb-lstm-init.yaml",
    "minilm": ROOT / "configs" / "stsb-minilm.yaml",
    "mrpc": ROOT / "configs" / "mrpc-minilm.yaml",
}
LABELS = {
    "lstm": "(a) Siamese BiLSTM-max, from scratch on STS-B train",
    "lstm_seed1": "(a) the same recipe, seed 1",
    "lstm_seed2": "(a) the same recipe, seed 2",
    "lstm_init": "(a') Siamese BiLSTM-max on frozen MiniLM word-piece vectors (see recipe)",
    "zeroshot": "(b) all-MiniLM-L6-v2 as shipped (zero-shot)",
    "minilm": "(c) all-MiniLM-L6-v2 fine-tuned on STS-B train",
    "mrpc": "(d) all-MiniLM-L6-v2 fine-tuned on MRPC train",
}
PUBLISHED = [
    {"model": "SBERT-NLI-base + STSb fine-tuning (Reimers & Gurevych 2019)",
     "metric": "STS-B test Spearman 85.35", "note": "published, not measured here"},
    {"model": "MaLSTM (Mueller & Thyagarajan 2016), SICK",
     "metric": "Pearson 0.882", "note": "published, not measured here (other dataset)"},
]  # fmt: skip
# Stages that retrain a recipe with another seed (the LSTM from scratch varies by about a point).
SEEDS = {"lstm_seed1": 1, "lstm_seed2": 2}
LSTM_STAGES = ("lstm", *SEEDS)
FEWSHOT = {"n_way": 6, "k_shot": 5, "episodes": 500, "n_query": 5}
console = Console()
# The command of the first full run, whose cached stages carry no command of their own.
EARLIER = "OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/text.py " + (
    "--stages minilm lstm zeroshot mrpc"
)


def evaluate(network: SiameseNetwork, seed: int) -> dict[str, Any]:
    """Every task on one model: STS-B test, MRPC test at a train-chosen threshold, few-shot,
    throughput."""
    stsb_test = read_stsb("test")
    sts = evaluate_sts(network, stsb_test)
    fewshot = fewshot_text_accuracy(network, read_stsb_sources("test"), seed=seed, **FEWSHOT)
    speed = sentences_per_second(network, stsb_test.a[:1000])
    return {
        "stsb_spearman": sts["spearman"], "stsb_pearson": sts["pearson"], **evaluate_mrpc(network),
        "fewshot_accuracy": fewshot.mean, "fewshot_ci95": fewshot.ci95,
        "sentences_per_second": speed,
    }  # fmt: skip


def evaluate_mrpc(network: SiameseNetwork) -> dict[str, float]:
    """MRPC test accuracy and F1 at the accuracy-maximising threshold on MRPC train, and F1 at
    the F1-maximising threshold on MRPC train (``mrpc_f1_tuned``)."""
    train, test = read_mrpc("train"), read_mrpc("test")
    train_scores = similarity(network, train.a, train.b)
    by_accuracy = choose_pair_threshold(train_scores, train.scores, "accuracy")
    by_f1 = choose_pair_threshold(train_scores, train.scores, "f1")
    test_scores = similarity(network, test.a, test.b)
    at_accuracy = threshold_report(test_scores, test.scores, by_accuracy)
    at_f1 = threshold_report(test_scores, test.scores, by_f1)
    return {
        "mrpc_threshold": by_accuracy, "mrpc_accuracy": at_accuracy["accuracy"],
        "mrpc_f1": at_accuracy["f1"], "mrpc_f1_threshold": by_f1, "mrpc_f1_tuned": at_f1["f1"],
        "mrpc_accuracy_at_f1_threshold": at_f1["accuracy"],
    }  # fmt: skip


def run_stage(name: str, runs: Path) -> dict[str, Any]:
    """Train (or resume) the stage's recipe, or load the shipped model, then evaluate it."""
    torch.manual_seed(0)
    wall, cpu = time.perf_counter(), time.process_time()
    record: dict[str, Any] = {"model": LABELS[name]}
    if name == "zeroshot":
        network, seed = load_network(None), 0
    else:
        recipe = load_recipe(RECIPES[name])
        out = runs / RECIPES[name].stem
        if name in SEEDS:
            recipe = recipe.model_copy(update={"seed": SEEDS[name]})
            out = out.with_name(f"{out.name}-seed{SEEDS[name]}")
        resumed = same_run(recipe, out)
        result = run_recipe(recipe, out, resume=resumed)
        network, seed = SiameseNetwork(result_encoder(result), CosineHead()), recipe.seed
        epochs = result.history.epochs
        record.update(
            recipe=str(RECIPES[name].relative_to(ROOT)), epochs=len(epochs),
            best_epoch=result.history.best_epoch, resumed=resumed,
            train_minutes=sum(e["seconds"] for e in epochs) / 60,
            # CPU time is only known when this process did all the training
            train_cpu_minutes=None if resumed else (time.process_time() - cpu) / 60,
            dev_history=[{k: v for k, v in e.items() if k != "lr"} for e in epochs],
            model_dir=str(result.model_dir),
        )  # fmt: skip
    record.update(evaluate(network.eval(), seed))
    record["stage_wall_minutes"] = (time.perf_counter() - wall) / 60
    return record


def same_run(recipe: Any, out: Path) -> bool:
    """Whether ``out`` holds a checkpoint of this very recipe (then training resumes there)."""
    saved = out / "recipe.json"
    return (
        (out / "checkpoint" / "state.json").is_file()
        and saved.is_file()
        and (json.loads(saved.read_text()) == recipe.model_dump(mode="json"))
    )


def result_encoder(result: Any) -> torch.nn.Module:
    """The trained encoder, reloaded from the saved model folder (what users get)."""
    return load_network(result.model_dir).encoder


def load_network(model_dir: str | Path | None) -> SiameseNetwork:
    """A saved model's network, or all-MiniLM-L6-v2 as shipped when ``model_dir`` is None."""
    import siamkit

    if model_dir is None:
        return SiameseNetwork(build_encoder({"name": "sentence_transformer"}), CosineHead())
    return siamkit.load(model_dir).network


def add_missing_mrpc(stages: dict[str, dict[str, Any]], command: str) -> None:
    """Cached stages from before the F1-threshold figures: evaluate their saved model on MRPC."""
    for name, record in stages.items():
        folder = record.get("model_dir")
        if "mrpc_f1_tuned" in record or (folder and not Path(folder).is_dir()):
            continue  # already there, or the model is gone (its run folder is being redone)
        console.print(f"MRPC F1-threshold figures for cached stage {name}")
        record.update(evaluate_mrpc(load_network(record.get("model_dir")).eval()))
        record["mrpc_f1_tuned_added_by"] = command


def run_environment() -> dict[str, Any]:
    """The common environment record plus the OMP_NUM_THREADS setting."""
    env = environment(0, ["torch", "sentence-transformers"])
    return {**env, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def headline(stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's headline figures (correlations and accuracies as fractions)."""

    def get(stage: str, key: str, scale: float = 1.0) -> float | None:
        value = stages.get(stage, {}).get(key)
        return None if value is None else value * scale

    # the designated paraphrase model: the MRPC recipe (the STS-B one until it has run); the
    # others are in the table, never picked by their test figures
    paraphrase = next((s for s in ("mrpc", "minilm") if s in stages), None)
    lstm_seeds = [stages[s]["stsb_spearman"] / 100 for s in LSTM_STAGES if s in stages]
    all_seeds = len(lstm_seeds) == len(LSTM_STAGES)  # mean and std only over every seed
    return {
        "stsb_spearman_lstm": get("lstm", "stsb_spearman", 0.01),
        "stsb_spearman_lstm_seeds": lstm_seeds,
        "stsb_spearman_lstm_seed_mean": float(np.mean(lstm_seeds)) if all_seeds else None,
        "stsb_spearman_lstm_seed_std": float(np.std(lstm_seeds, ddof=1)) if all_seeds else None,
        "stsb_spearman_lstm_init": get("lstm_init", "stsb_spearman", 0.01),
        "stsb_spearman_zeroshot": get("zeroshot", "stsb_spearman", 0.01),
        "stsb_spearman_finetuned": get("minilm", "stsb_spearman", 0.01),
        "finetune_minutes": get("minilm", "train_minutes"),
        "finetune_cpu_minutes": get("minilm", "train_cpu_minutes"),
        "paraphrase_f1": get(paraphrase, "mrpc_f1_tuned") if paraphrase else None,
        "paraphrase_accuracy": get(paraphrase, "mrpc_accuracy") if paraphrase else None,
        "paraphrase_model": LABELS.get(paraphrase or ""),
        "fewshot_text_accuracy": get("minilm", "fewshot_accuracy"),
    }


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table_rows(stages: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for name in LABELS:
        s = stages.get(name)
        if s is None:
            continue
        rows.append([
            s["model"], fmt(s["stsb_spearman"]), fmt(s["stsb_pearson"]),
            fmt(100 * s["mrpc_accuracy"], 1), fmt(s["mrpc_f1"], 3), fmt(s.get("mrpc_f1_tuned"), 3),
            f"{100 * s['fewshot_accuracy']:.1f} ± {100 * s['fewshot_ci95']:.1f}",
            fmt(s.get("train_minutes"), 1), fmt(s.get("train_cpu_minutes"), 1),
            fmt(s["sentences_per_second"], 0),
        ])  # fmt: skip
    return rows


COLUMNS = [
    "model", "STS-B test Spearman", "STS-B test Pearson", "MRPC test acc %", "MRPC test F1",
    "MRPC test F1 (F1 thr.)",
    "6-way 5-shot acc %", "train min (wall)", "train min (CPU)", "sentences/s",
]  # fmt: skip


def targets(head: dict[str, Any]) -> str:
    """The issue's targets: met, or missed and by how much."""
    return target_report(
        [
            ("fine-tuned MiniLM STS-B Spearman", head["stsb_spearman_finetuned"], 0.86, ">="),
            ("fine-tuning minutes", head["finetune_minutes"], 30.0, "<="),
            ("seed LSTM from scratch STS-B Spearman", head["stsb_spearman_lstm"], 0.72, ">="),
            (
                f"the same, mean over seeds {[0, *SEEDS.values()]}",
                head["stsb_spearman_lstm_seed_mean"],
                0.72,
                ">=",
            ),
            ("paraphrase F1", head["paraphrase_f1"], 0.85, ">="),
        ]
    )


def lstm_seed_line(head: dict[str, Any]) -> str:
    """The LSTM recipe's test Spearman over its seeds, as a sentence (empty if not run)."""
    seeds = head["stsb_spearman_lstm_seeds"]
    if head["stsb_spearman_lstm_seed_mean"] is None:
        return ""
    return (
        f"Seed LSTM recipe over {len(seeds)} seeds (rows (a)): STS-B test Spearman "
        + " / ".join(f"{100 * v:.2f}" for v in seeds)
        + f", mean {100 * head['stsb_spearman_lstm_seed_mean']:.2f} ± "
        f"{100 * head['stsb_spearman_lstm_seed_std']:.2f} (std). The headline "
        "`stsb_spearman_lstm` is the seed-0 model, the saved and served one.\n"
    )


def write_results(stages: dict[str, dict[str, Any]], command: str) -> None:
    env = run_environment()
    head = headline(stages)
    head["targets"] = targets(head)
    rows = table_rows(stages)
    table = Table(title="siamkit text benchmark")
    for column in COLUMNS:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        **head,
        "stages": stages,
        "published": PUBLISHED,
        "fewshot": FEWSHOT,
        "environment": env,
        "command": command,
        "seeds": {"recipes": 0, "episodes": 0},
    }
    (RESULTS / "text.json").write_text(json.dumps(payload, indent=2))
    lines = [
        "# Text benchmark (STS-B, MRPC, few-shot text classification)", "",
        "Commands (each stage ran in one of them; the tables are written from their cached "
        f"stage results by the last one, `{command}`):", "",
        *sorted({f"- `{s.get('command', command)}`" for s in stages.values()}), "",
        f"Machine: {env['machine']}; versions {env['versions']}; torch threads {env['threads']} "
        f"(OMP_NUM_THREADS={env['OMP_NUM_THREADS']}); load average {env['load_average']} when "
        "this report was written. Wall times of stages run while other jobs shared the 2 cores are "
        "inflated; CPU minutes are the training process's CPU time summed over its threads (see "
        "each stage's command for OMP_NUM_THREADS).", "",
        "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(row) + " |" for row in rows), "",
        "STS-B: Spearman/Pearson x 100 of cosine vs gold on sts-test (1,379 pairs). MRPC: "
        "cosine >= threshold chosen for accuracy on MRPC train, accuracy and F1 of the "
        "paraphrase class on MRPC test (1,725 pairs); F1 (F1 thr.): the threshold chosen for F1 "
        "on MRPC train instead (the headline `paraphrase_f1`, of the designated paraphrase "
        "model). Train minutes are the sum of the epochs' wall times; CPU minutes are missing "
        "when the stage resumed a run trained before it. Few-shot: distinct STS-B test sentences "
        "labelled by source corpus (6 classes), "
        f"{FEWSHOT['n_way']}-way {FEWSHOT['k_shot']}-shot, {FEWSHOT['n_query']} queries per "
        f"class, {FEWSHOT['episodes']} seeded episodes, class prototypes, mean ± 95% CI. "
        "Sentences/s: embedding 1,000 STS-B test sentences, batch 64.", "",
        "Published references (not measured here):", "",
        *(f"- {p['model']}: {p['metric']} ({p['note']})" for p in PUBLISHED), "",
        lstm_seed_line(head),
        "Headline figures (fractions): " + ", ".join(f"`{k}` = {fmt(v, 4)}"
                                                     for k, v in head.items()), "",
    ]  # fmt: skip
    for s in stages.values():
        if "dev_history" in s:
            lines.append(f"Validation per epoch, {s['model']} ({s['recipe']}):")
            if s.get("resumed"):
                lines.append(
                    f"(trained before this stage by the same recipe into {s['model_dir']}'s "
                    "parent, e.g. `siamkit train RECIPE --out THAT_FOLDER`; the stage found "
                    "the finished checkpoint, resumed it and evaluated the model)"
                )
            lines += [
                f"- epoch {e['epoch']}: "
                + ", ".join(f"{k} {v:.4f}" for k, v in e.items() if k != "epoch")
                for e in s["dev_history"]
            ]
            lines.append("")
    (RESULTS / "text.md").write_text("\n".join(lines))
    console.print(f"wrote {RESULTS / 'text.md'} and text.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="+", choices=list(LABELS), default=list(LABELS))
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-text")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the results from cached stages"
    )
    parser.add_argument(
        "--add-missing-mrpc", action="store_true",
        help="evaluate cached stages' saved models for the F1-threshold MRPC figures they lack",
    )  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.runs.mkdir(parents=True, exist_ok=True)
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    command = f"OMP_NUM_THREADS={threads} HF_HUB_OFFLINE=1 python " + shlex.join(sys.argv)
    for name in [] if args.report_only else args.stages:
        console.rule(LABELS[name])
        record = {**run_stage(name, args.runs), "command": command, "finished_at": time.time()}
        save_stage(args.runs, name, record)
    stages = load_stages(args.runs)
    if args.add_missing_mrpc:
        add_missing_mrpc(stages, command)
        for name, record in stages.items():
            save_stage(args.runs, name, record)
    write_results(stages, command)


def save_stage(runs: Path, name: str, record: dict[str, Any]) -> None:
    """Cache one stage's results, in <runs>/stages/<name>.json and in <runs>/stages.json (read
    again just before, so stages another run of this script wrote meanwhile are kept)."""
    (runs / "stages").mkdir(exist_ok=True)
    (runs / "stages" / f"{name}.json").write_text(json.dumps(record, indent=2))
    stages = load_stages(runs)
    stages[name] = record
    (runs / "stages.json").write_text(json.dumps(stages, indent=2))


def load_stages(runs: Path) -> dict[str, dict[str, Any]]:
    """The cached stages: <runs>/stages.json and the per-stage files, the newer record of a stage
    winning (a concurrent run may have rewritten stages.json without a stage another one added)."""
    cache = runs / "stages.json"
    stages = json.loads(cache.read_text()) if cache.is_file() else {}
    for path in sorted((runs / "stages").glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("finished_at", 0) >= stages.get(path.stem, {}).get("finished_at", 0):
            stages[path.stem] = record
    for record in stages.values():  # stages cached by an earlier run of this script
        record.setdefault("command", EARLIER)
    return {name: stages[name] for name in LABELS if name in stages}


if __name__ == "__main__":
    main()
