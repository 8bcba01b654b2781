"""Text benchmark: STS-B, MRPC paraphrase detection and few-shot text classification.

Models: (a) the seeds' Siamese LSTM trained from scratch on STS-B train (configs/stsb-lstm.yaml),
(b) all-MiniLM-L6-v2 as shipped (zero-shot), (c) MiniLM fine-tuned by siamkit on STS-B train
(configs/stsb-minilm.yaml), (d) MiniLM fine-tuned on MRPC train (configs/mrpc-minilm.yaml).
For each: STS-B test Spearman/Pearson (x 100), MRPC test accuracy/F1 at a threshold chosen on
MRPC train, few-shot classification of STS-B test sentences by source corpus (6-way 5-shot,
class prototypes), embedding throughput; training wall and CPU time.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/text.py
    ... benchmarks/text.py --stages lstm zeroshot   # some stages; results of others are kept
    ... benchmarks/text.py --report-only            # rewrite text.md/json from cached stages

Training runs go to --runs (default runs/bench-text/<recipe>) and resume there; each stage's
results are cached in <runs>/stages.json, so a re-run only redoes what is asked. Writes
benchmarks/results/text.md and text.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from siamkit.data.text import read_mrpc, read_stsb, read_stsb_sources
from siamkit.encoders import build_encoder
from siamkit.heads import CosineHead
from siamkit.siamese import SiameseNetwork
from siamkit.text import evaluate_sts, fewshot_text_accuracy, paraphrase_report
from siamkit.text.paraphrase import paraphrase_threshold
from siamkit.text.similarity import sentences_per_second
from siamkit.text.training import load_text_recipe, run_text_recipe

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RECIPES = {
    "lstm": ROOT / "configs" / "stsb-lstm.yaml",
    "lstm_init": ROOT / "configs" / "stsb-lstm-init.yaml",
    "minilm": ROOT / "configs" / "stsb-minilm.yaml",
    "mrpc": ROOT / "configs" / "mrpc-minilm.yaml",
}
LABELS = {
    "lstm": "(a) Siamese LSTM, from scratch on STS-B train",
    "lstm_init": "(a') Siamese LSTM, MiniLM word-piece vectors as initial embeddings",
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
    threshold = paraphrase_threshold(network, read_mrpc("train"))
    mrpc = paraphrase_report(network, read_mrpc("test"), threshold)
    fewshot = fewshot_text_accuracy(network, read_stsb_sources("test"), seed=seed, **FEWSHOT)
    speed = sentences_per_second(network, stsb_test.a[:1000])
    return {
        "stsb_spearman": sts["spearman"], "stsb_pearson": sts["pearson"],
        "mrpc_threshold": mrpc["threshold"], "mrpc_accuracy": mrpc["accuracy"],
        "mrpc_f1": mrpc["f1"], "fewshot_accuracy": fewshot.mean, "fewshot_ci95": fewshot.ci95,
        "sentences_per_second": speed,
    }  # fmt: skip


def run_stage(name: str, runs: Path) -> dict[str, Any]:
    """Train (or resume) the stage's recipe, or load the shipped model, then evaluate it."""
    torch.manual_seed(0)
    wall, cpu = time.perf_counter(), time.process_time()
    record: dict[str, Any] = {"model": LABELS[name]}
    if name == "zeroshot":
        network = SiameseNetwork(build_encoder({"name": "sentence_transformer"}), CosineHead())
        seed = 0
    else:
        recipe = load_text_recipe(RECIPES[name])
        result = run_text_recipe(recipe, runs / RECIPES[name].stem)
        network, seed = SiameseNetwork(result_encoder(result), CosineHead()), recipe.seed
        epochs = result.history.epochs
        record.update(
            recipe=str(RECIPES[name].relative_to(ROOT)), epochs=len(epochs),
            best_epoch=result.history.best_epoch,
            train_minutes=sum(e["seconds"] for e in epochs) / 60,
            train_cpu_minutes=(time.process_time() - cpu) / 60,
            dev_history=[{k: v for k, v in e.items() if k != "lr"} for e in epochs],
            model_dir=str(result.model_dir),
        )  # fmt: skip
    record.update(evaluate(network.eval(), seed))
    record["stage_wall_minutes"] = (time.perf_counter() - wall) / 60
    return record


def result_encoder(result: Any) -> torch.nn.Module:
    """The trained encoder, reloaded from the saved model folder (what users get)."""
    import siamkit

    return siamkit.load(result.model_dir).network.encoder


def environment() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__,
        "sentence_transformers": version("sentence-transformers"),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "load_average_at_end": os.getloadavg(),
    }  # fmt: skip


def headline(stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's headline figures (correlations and accuracies as fractions)."""

    def get(stage: str, key: str, scale: float = 1.0) -> float | None:
        value = stages.get(stage, {}).get(key)
        return None if value is None else value * scale

    best_paraphrase = max(
        (s for s in ("mrpc", "minilm", "zeroshot") if s in stages),
        key=lambda s: stages[s]["mrpc_f1"], default=None,
    )  # fmt: skip
    return {
        "stsb_spearman_lstm": get("lstm", "stsb_spearman", 0.01),
        "stsb_spearman_zeroshot": get("zeroshot", "stsb_spearman", 0.01),
        "stsb_spearman_finetuned": get("minilm", "stsb_spearman", 0.01),
        "finetune_minutes": get("minilm", "train_minutes"),
        "finetune_cpu_minutes": get("minilm", "train_cpu_minutes"),
        "paraphrase_f1": get(best_paraphrase, "mrpc_f1") if best_paraphrase else None,
        "paraphrase_accuracy": get(best_paraphrase, "mrpc_accuracy") if best_paraphrase else None,
        "paraphrase_model": LABELS.get(best_paraphrase or ""),
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
            fmt(100 * s["mrpc_accuracy"], 1), fmt(s["mrpc_f1"], 3),
            f"{100 * s['fewshot_accuracy']:.1f} ± {100 * s['fewshot_ci95']:.1f}",
            fmt(s.get("train_minutes"), 1), fmt(s.get("train_cpu_minutes"), 1),
            fmt(s["sentences_per_second"], 0),
        ])  # fmt: skip
    return rows


COLUMNS = [
    "model", "STS-B test Spearman", "STS-B test Pearson", "MRPC test acc %", "MRPC test F1",
    "6-way 5-shot acc %", "train min (wall)", "train min (CPU)", "sentences/s",
]  # fmt: skip


def write_results(stages: dict[str, dict[str, Any]], command: str) -> None:
    env = environment()
    head = headline(stages)
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
        f"Machine: {env['cpu_count']} CPUs, {env['platform']}, torch {env['torch']}, "
        f"sentence-transformers {env['sentence_transformers']}, torch threads "
        f"{env['torch_threads']} (OMP_NUM_THREADS={env['OMP_NUM_THREADS']}). The machine was "
        "shared with other jobs (load average at end "
        f"{', '.join(f'{x:.1f}' for x in env['load_average_at_end'])}): wall times are inflated; "
        "CPU minutes are this process's CPU time on one thread.", "",
        "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(row) + " |" for row in rows), "",
        "STS-B: Spearman/Pearson x 100 of cosine vs gold on sts-test (1,379 pairs). MRPC: "
        "cosine >= threshold chosen for accuracy on MRPC train, accuracy and F1 of the "
        "paraphrase class on MRPC test (1,725 pairs). Few-shot: distinct STS-B test sentences "
        "labelled by source corpus (6 classes), "
        f"{FEWSHOT['n_way']}-way {FEWSHOT['k_shot']}-shot, {FEWSHOT['n_query']} queries per "
        f"class, {FEWSHOT['episodes']} seeded episodes, class prototypes, mean ± 95% CI. "
        "Sentences/s: embedding 1,000 STS-B test sentences, batch 64.", "",
        "Published references (not measured here):", "",
        *(f"- {p['model']}: {p['metric']} ({p['note']})" for p in PUBLISHED), "",
        "Headline figures (fractions): " + ", ".join(f"`{k}` = {fmt(v, 4)}"
                                                     for k, v in head.items()), "",
    ]  # fmt: skip
    for s in stages.values():
        if "dev_history" in s:
            lines.append(f"Validation per epoch, {s['model']} ({s['recipe']}):")
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
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.runs.mkdir(parents=True, exist_ok=True)
    cache = args.runs / "stages.json"
    stages = json.loads(cache.read_text()) if cache.is_file() else {}
    for record in stages.values():  # stages cached by an earlier run of this script
        record.setdefault("command", EARLIER)
    command = "OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python " + shlex.join(sys.argv)
    for name in [] if args.report_only else args.stages:
        console.rule(LABELS[name])
        stages[name] = {**run_stage(name, args.runs), "command": command}
        cache.write_text(json.dumps(stages, indent=2))
    write_results(stages, command)


if __name__ == "__main__":
    main()
