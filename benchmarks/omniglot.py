"""Omniglot one-shot benchmark: pixel nearest neighbour and siamese recipes, on the 20 evaluation
alphabets (never seen in training).

For every method it reports Lake et al.'s official 400 trials (``all_runs.zip``, scored from the
raw PNGs through the saved model folder, exactly as ``siamkit eval MODEL all_runs.zip`` does) and
seeded random episodes within one alphabet and across alphabets (5/20-way, 1/5-shot, 1,000
episodes each; 5-shot classes are represented by their mean embedding), with training time and
training images/s. No test-time augmentation anywhere. It also profiles where a training step's
time goes (batch assembly incl. augmentation, forward, backward + optimizer step).

    .venv/bin/python benchmarks/omniglot.py --quick   # every recipe trained briefly (minutes)
    .venv/bin/python benchmarks/omniglot.py           # the recipes as written in configs/

Writes benchmarks/results/omniglot.md and omniglot.json (headline figures of the best method).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

import siamkit
from benchmarks_common import environment, shown, target_report
from siamkit.data.datasets import build_dataset
from siamkit.data.episodes import sample_episodes
from siamkit.data.labelled import LabelledData
from siamkit.data.omniglot import KOCH_AFFINE
from siamkit.data.paths import dataset_dir
from siamkit.data.transforms import build_preprocessor
from siamkit.evaluation.embedding import embed_all
from siamkit.evaluation.fewshot import episode_accuracy, evaluate_episodes, mean_ci95
from siamkit.evaluation.omniglot_runs import model_similarity, read_runs, score_runs
from siamkit.heads import EuclideanHead, Head
from siamkit.recipe import (
    build_batches,
    build_network,
    build_recipe_loss,
    load_recipe,
    parse_recipe,
    run_recipe,
)
from siamkit.training import (
    autocast,
    batch_loss,
    build_optimizer,
    parameter_groups,
    use_memory_format,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
console = Console()
EPISODES = 1000
EPISODE_SEED = 0
# (key, within one alphabet?, n_way, k_shot)
SETTINGS = [
    (f"{where}_{n}way_{k}shot", where == "within", n, k)
    for where in ("within", "across")
    for n, k in ((20, 1), (5, 1), (20, 5), (5, 5))
]
REFERENCES = [  # published, not measured here
    ("Koch et al. 2015, siamese convnet", {"official_20way_1shot": 0.920}),
    ("people (Lake et al. 2015)", {"official_20way_1shot": 0.955}),
    ("Bayesian Program Learning (Lake et al. 2015)", {"official_20way_1shot": 0.967}),
    (
        "Prototypical nets (Snell et al. 2017), Vinyals split",
        {"across_20way_1shot": 0.960, "across_5way_1shot": 0.988},
    ),
]


PROFILED_OPS = 8


@dataclass
class Method:
    """A recipe in configs/ and how --quick shortens it."""

    name: str
    config: str
    quick: dict[str, Any]


METHODS = [  # the best recipe first
    Method(
        "online-mined triplets, batch-hard",
        "configs/omniglot-batch-hard.yaml",
        {"training": {"epochs": 2}, "batches": {"batches_per_epoch": 100}},
    ),
    Method(
        "siamese pairs, learned |h1-h2| + sigmoid head, BCE (Koch-style)",
        "configs/omniglot-koch-bce.yaml",
        {"training": {"epochs": 2}, "batches": {"examples_per_epoch": 6400}},
    ),
    Method(
        "siamese pairs, contrastive loss",
        "configs/omniglot-contrastive.yaml",
        {"training": {"epochs": 2}, "batches": {"examples_per_epoch": 6400}},
    ),
    Method(
        "siamese pairs, in-batch ranking (N-pair / InfoNCE)",
        "configs/omniglot-npair.yaml",
        {"training": {"epochs": 2}, "batches": {"examples_per_epoch": 6400}},
    ),
]


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update``'s values put in, recursively."""
    out = dict(base)
    for key, value in update.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def episodes(
    head: Head, embeddings: torch.Tensor, data: LabelledData, within: bool, n_way: int, k: int
) -> tuple[float, float]:
    """Mean accuracy and 95% CI over seeded episodes (the same episodes for every method)."""
    groups = data.groups if within else None
    eps = sample_episodes(data.labels, n_way, k, 1, EPISODES, EPISODE_SEED, groups=groups)
    aggregate = "prototype" if k > 1 else "mean"
    return mean_ci95(episode_accuracy(head, embeddings, eps, n_way, aggregate))


def all_episodes(head: Head, embeddings: torch.Tensor, test: LabelledData) -> dict[str, float]:
    """Every random-episode setting, as ``key`` and ``key_ci95``."""
    out: dict[str, float] = {}
    for key, within, n_way, k in SETTINGS:
        out[key], out[f"{key}_ci95"] = episodes(head, embeddings, test, within, n_way, k)
    return out


def pixel_row(test: LabelledData, runs: list, size: int) -> dict[str, Any]:
    """Nearest neighbour on raw pixels (Euclidean), same episodes and the official runs."""
    pre = build_preprocessor(
        {"name": "image", "params": {"size": [size, size], "mode": "L", "invert": True}}
    )

    def similarity(queries, references):
        return -torch.cdist(pre(list(queries)).flatten(1), pre(list(references)).flatten(1))

    official = score_runs(similarity, runs)
    pixels = test.items.float().div(255).flatten(1)
    row = {"method": f"pixel nearest neighbour ({size}x{size}, Euclidean)", "measured": True}
    row.update(official_20way_1shot=official.mean, official_20way_1shot_ci95=official.ci95)
    row.update(all_episodes(EuclideanHead(), pixels, test))
    return row


def images_per_epoch(recipe: Any, batches: Any, kind: str) -> int:
    """Training images one epoch feeds through the encoder."""
    per_example = {"pair": 2, "triplet": 3}.get(kind)
    if per_example is None:  # class-balanced batches
        return len(batches) * recipe.batches.batch_size
    return per_example * recipe.batches.examples_per_epoch


def training_parts(recipe: Any, train: LabelledData) -> tuple[Any, Any, Any, Any]:
    """Network (in the recipe's memory format), loss, batches (epoch 0) and optimizer."""
    torch.manual_seed(recipe.seed)
    network, _ = build_network(recipe)
    use_memory_format(network, recipe.training)
    loss = build_recipe_loss(recipe, network, train.labels)
    batches = build_batches(recipe, loss, train)
    optimizer = build_optimizer(parameter_groups(network, loss, recipe.training), recipe.training)
    network.train()
    batches.set_epoch(0)
    return network, loss, batches, optimizer


def profile_steps(recipe: Any, train: LabelledData, steps: int) -> dict[str, float]:
    """Milliseconds per training step spent assembling the batch (indexing, augmentation, uint8
    -> float), in the forward pass + loss, and in backward + optimizer step, with the recipe's
    precision settings (``amp``: bfloat16 autocast; ``channels_last``: NHWC weights)."""
    network, loss, batches, optimizer = training_parts(recipe, train)
    times = {"batch_ms": 0.0, "forward_ms": 0.0, "backward_ms": 0.0}
    source = iter(batches)
    next(source)  # warm-up step excluded
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next(source)
        t1 = time.perf_counter()
        with autocast(recipe.training, torch.device("cpu")):
            value = batch_loss(network, loss, batch)
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        t3 = time.perf_counter()
        for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            times[key] += 1000 * dt / steps
    total = sum(times.values())
    images = images_per_epoch(recipe, batches, loss.kind) / len(batches)
    return {**times, "images_per_step": images, "images_per_s": 1000 * images / total}


def top_ops(recipe: Any, train: LabelledData, steps: int = 3) -> list[dict[str, Any]]:
    """torch.profiler: the operators taking the most CPU time over a few training steps."""
    from torch.profiler import ProfilerActivity, profile

    network, loss, batches, optimizer = training_parts(recipe, train)
    source = iter(batches)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            with autocast(recipe.training, torch.device("cpu")):
                value = batch_loss(network, loss, next(source))
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [
        {"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count}
        for e in events[:PROFILED_OPS]
    ]


def profile_all(methods: list[Method], steps: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Step timings of every method (and the best one with per-item affine augmentation), and
    the top operators of the batch-hard recipe."""
    timings, ops = {}, []
    for method in methods:
        recipe = load_recipe(ROOT / method.config)
        train = build_dataset(recipe.data.name, None, **recipe.data.params).train
        stem = Path(method.config).stem
        timings[stem] = profile_steps(recipe, train, steps)
        console.print(f"profile {stem}: {timings[stem]}")
        if stem == "omniglot-batch-hard":
            raw = recipe.model_dump(mode="json")
            augmented = parse_recipe({**raw, "augmentation": [KOCH_AFFINE]}, "augmented")
            timings[stem + " + Koch affine"] = profile_steps(augmented, train, steps)
            fp32 = {**raw["training"], "amp": False, "channels_last": False}
            plain = parse_recipe({**raw, "training": fp32}, "fp32")
            timings[stem + " in float32, NCHW"] = profile_steps(plain, train, steps)
            ops = top_ops(recipe, train)
    return timings, ops


def train_method(method: Method, quick: bool, out_root: Path) -> tuple[Any, dict[str, Any]]:
    """Run the method's recipe; return the recipe and its timing record."""
    recipe = load_recipe(ROOT / method.config)
    if quick:
        recipe = parse_recipe(merge(recipe.model_dump(mode="json"), method.quick), method.config)
    out = out_root / Path(method.config).stem
    started = time.perf_counter()
    result = run_recipe(recipe, out)
    wall = time.perf_counter() - started
    train_s = sum(e["seconds"] for e in result.history.epochs)
    network, _ = build_network(recipe)
    splits = build_dataset(recipe.data.name, None, **recipe.data.params)
    loss = build_recipe_loss(recipe, network, splits.train.labels)
    per_epoch = images_per_epoch(recipe, build_batches(recipe, loss, splits.train), loss.kind)
    images = per_epoch * len(result.history.epochs)
    return recipe, {
        "config": method.config,
        "model_dir": str(shown(result.model_dir)),
        "epochs": len(result.history.epochs),
        "best_epoch": result.history.best_epoch,
        "train_images": images,
        "train_minutes": train_s / 60,
        "train_images_per_s": images / train_s,
        "recipe_wall_minutes": wall / 60,
        "val_auc": max(e.get("auc", 0.0) for e in result.history.epochs),
        "test_auc": result.test["auc"],
    }


def evaluate_model(model_dir: Path, test: LabelledData, runs: list) -> dict[str, float]:
    """Official runs from the raw PNGs via the saved model, and the random episodes."""
    model = siamkit.load(model_dir)
    official = score_runs(model_similarity(model), runs)
    embeddings = embed_all(model.network, test.items)
    out = {"official_20way_1shot": official.mean, "official_20way_1shot_ci95": official.ci95}
    out.update(all_episodes(model.network.head, embeddings, test))
    return out


SHIFTS = [0, 1, 2, 3]  # shift_average candidates (pixels; 0 = no test-time augmentation)


def choose_shift(model_dir: Path, recipe: Any) -> dict[int, float]:
    """Validation accuracy (20-way 1-shot within-alphabet episodes on the held-out background
    alphabets) of the model with each ``shift_average`` of :data:`SHIFTS`."""
    model = siamkit.load(model_dir)
    val = build_dataset(recipe.data.name, None, **recipe.data.params).val
    scores = {}
    for shift in SHIFTS:
        model.network.encoder.shift_average = shift
        result = evaluate_episodes(model.network, val, 20, 1, EPISODES, EPISODE_SEED, True)
        scores[shift] = result.mean
    return scores


def with_shift(model_dir: Path, shift: int) -> Path:
    """A copy of the model folder whose encoder averages over ``shift``-pixel shifted copies."""
    folder = model_dir.with_name(f"{model_dir.name}-shift{shift}")
    shutil.copytree(model_dir, folder, dirs_exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    config["encoder"]["params"]["shift_average"] = shift
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def tta_row(row: dict[str, Any], test: LabelledData, runs: list) -> dict[str, Any] | None:
    """``row``'s model with shift test-time augmentation, the shift chosen on validation; None
    when the encoder has no such option or no shift beats none on validation."""
    recipe = load_recipe(ROOT / row["config"])
    if recipe.encoder.name != "conv4":
        return None
    scores = choose_shift(ROOT / row["model_dir"], recipe)
    console.print(f"shift test-time augmentation, validation 20w1s by shift: {scores}")
    shift = max(scores, key=lambda s: (scores[s], -s))
    if shift == 0:
        return None
    folder = with_shift(ROOT / row["model_dir"], shift)
    keep = ["config", "epochs", "best_epoch", "train_images", "train_minutes",
            "train_images_per_s", "recipe_wall_minutes", "val_auc"]  # fmt: skip
    return {
        **{key: row[key] for key in keep if key in row},
        "method": f"{row['method']} + shift TTA (±{shift} px, 5 views)",
        "measured": True,
        "model_dir": str(shown(folder)),
        "test_time_augmentation": f"shift_average {shift}",
        "tta_validation_20way_1shot": {str(k): v for k, v in scores.items()},
        **evaluate_model(folder, test, runs),
    }


def run_environment(args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    """The common environment record plus this benchmark's mode, episodes and wall time."""
    return {
        **environment(EPISODE_SEED, ["torch", "siamkit"]),
        "mode": "quick" if args.quick else "full",
        "episodes_per_setting": EPISODES,
        "episode_seed": EPISODE_SEED,
        "wall_minutes": seconds / 60,
    }


def pct(row: dict[str, Any], key: str) -> str:
    if key not in row:
        return "-"
    ci = row.get(f"{key}_ci95")
    return f"{100 * row[key]:.1f}" + ("" if ci is None else f" ± {100 * ci:.1f}")


COLUMNS = [
    ("official 20w1s", "official_20way_1shot"),
    ("within 20w1s", "within_20way_1shot"),
    ("within 5w1s", "within_5way_1shot"),
    ("within 20w5s", "within_20way_5shot"),
    ("within 5w5s", "within_5way_5shot"),
    ("across 20w1s", "across_20way_1shot"),
    ("across 5w1s", "across_5way_1shot"),
    ("across 20w5s", "across_20way_5shot"),
    ("across 5w5s", "across_5way_5shot"),
]


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for row in rows:
        cells = [row["method"] + ("" if row.get("measured") else " (published, not measured)")]
        cells += [pct(row, key) for _, key in COLUMNS]
        images = row.get("train_images")
        cells.append("-" if images is None else f"{images / 1000:.0f}k")
        minutes = row.get("train_minutes")
        cells.append("-" if minutes is None else f"{minutes:.1f}")
        speed = row.get("train_images_per_s")
        cells.append("-" if speed is None else f"{speed:.0f}")
        out.append(cells)
    return out


HEADER = ["method", *(c for c, _ in COLUMNS), "train images", "train min", "train img/s"]


def print_table(rows: list[dict[str, Any]]) -> None:
    table = Table(title="Omniglot one-shot accuracy (%) on the 20 evaluation alphabets")
    for name in HEADER:
        table.add_column(name)
    for cells in table_rows(rows):
        table.add_row(*cells)
    console.print(table)


def targets(head: dict[str, Any]) -> str:
    """The issue's targets for the headline (best) recipe: met, or missed and by how much."""
    return target_report(
        [
            ("official 20-way 1-shot", head["official_20way_1shot"], 0.955, ">="),
            ("within 20-way 1-shot", head["within_20way_1shot"], 0.95, ">="),
            ("within 5-way 1-shot", head["within_5way_1shot"], 0.99, ">="),
            ("within 20-way 5-shot", head["within_20way_5shot"], 0.985, ">="),
            ("across 20-way 1-shot", head["across_20way_1shot"], 0.97, ">="),
            ("train minutes", head["train_minutes"], 30.0, "<="),
        ]
    )


def markdown(rows, profile, ops, best, tta, env, verdict: str) -> str:
    lines = [
        "# Omniglot one-shot learning",
        "",
        f"Mode: **{env['mode']}**. Commands (each row records the one that measured it; rows of "
        "methods a run did not train are kept from the previous results file):",
        *sorted({f"- `{r['command']}`" for r in rows if r.get("command")}),
        "",
        f"Machine: {env['machine']}; versions {env['versions']}; {env['threads']} thread(s). "
        f"Wall time {env['wall_minutes']:.1f} min; methods finished: {env['methods_finished']}; "
        f"load average at the end {env['load_average']} (above the core count: the machine was "
        "shared and times are pessimistic).",
        "",
        "Accuracy (%) ± 95% CI on the 20 evaluation alphabets. *official*: Lake et al.'s 20 runs "
        "(400 trials of 20-way within-alphabet 1-shot), from the raw PNGs through the saved model "
        "folder (CI over the 20 runs). *within*/*across*: "
        f"{env['episodes_per_setting']} seeded episodes per setting (seed "
        f"{env['episode_seed']}), classes from one alphabet or from all; 1 query per class; "
        "5-shot classes are represented by their mean embedding. No test-time augmentation, "
        "except in rows marked *shift TTA*: the best method's embeddings averaged over the image "
        "and 4 copies shifted by ±s pixels, s chosen on the validation alphabets (20-way 1-shot "
        "within-alphabet episodes) among 0-3.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    for cells in table_rows(rows):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    command = f"siamkit eval {best['model_dir']} ../shared/datasets/omniglot/all_runs.zip"
    lines += [
        "",
        f"Best method (highest validation AUC, held-out background alphabets): "
        f"**{best['method']}** (`{best['config']}`), model folder "
        f"`{best['model_dir']}`; its official figure comes back with `{command}`.",
        "",
    ]
    if tta:
        command = f"siamkit eval {tta['model_dir']} ../shared/datasets/omniglot/all_runs.zip"
        scores = ", ".join(
            f"±{k} px {100 * v:.1f}%" for k, v in tta["tta_validation_20way_1shot"].items()
        )
        lines += [
            f"With shift test-time augmentation (validation 20w1s by shift: {scores}): "
            f"**{tta['method']}**, model folder `{tta['model_dir']}` (the same weights; its "
            f"config sets `shift_average`): `{command}`.",
            "",
        ]
    lines += [f"Targets (headline recipe, as in the results JSON): {verdict}.", ""]
    lines += [
        "## Where a training step's time goes",
        "",
        "Mean over profiled steps (ms); batch = indexing + per-item augmentation + uint8->float; "
        "each recipe in its own precision (bfloat16 autocast and NHWC weights where its training "
        "sets amp and channels_last).",
        "",
        "| recipe | images/step | batch ms | forward ms | backward+step ms | images/s |",
        "|---|---|---|---|---|---|",
    ]
    for name, p in profile.items():
        lines.append(
            f"| {name} | {p['images_per_step']:.0f} | {p['batch_ms']:.1f} | "
            f"{p['forward_ms']:.1f} | {p['backward_ms']:.1f} | {p['images_per_s']:.0f} |"
        )
    if ops:
        lines += [
            "",
            "Operators with the most CPU time in 3 batch-hard training steps (torch.profiler):",
            "",
            "| operator | share of CPU time | calls |",
            "|---|---|---|",
        ]
        lines += [f"| {o['op']} | {100 * o['share']:.1f}% | {o['calls']} |" for o in ops]
    return "\n".join(lines) + "\n"


def headline(best: dict[str, Any], tta: dict[str, Any] | None) -> dict[str, Any]:
    """The best method's figures (with its validation-chosen TTA when it has one, and then also
    without, as ``*_without_tta``)."""
    keys = ["official_20way_1shot", "within_20way_1shot", "within_5way_1shot",
            "within_20way_5shot", "across_20way_1shot"]  # fmt: skip
    shown_row = tta or best
    out: dict[str, Any] = {"method": shown_row["method"], "config": best["config"]}
    for key in keys:
        out[key], out[f"{key}_ci95"] = shown_row[key], shown_row[f"{key}_ci95"]
        if tta:
            out[f"{key}_without_tta"] = best[key]
    out["train_minutes"] = best["train_minutes"]
    out["model_dir"] = shown_row["model_dir"]
    out["test_time_augmentation"] = shown_row.get("test_time_augmentation", False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="train every recipe briefly")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "omniglot-bench")
    parser.add_argument("--profile-steps", type=int, default=10)
    parser.add_argument("--methods", nargs="*", help="config stems to run (default: all)")
    parser.add_argument(
        "--tta-only", action="store_true",
        help="train nothing: keep every row of the last results and redo the best method's "
        "test-time augmentation row",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    started = time.perf_counter()
    folder = dataset_dir("omniglot")
    runs = read_runs(folder / "all_runs.zip")
    methods = [m for m in METHODS if not args.methods or Path(m.config).stem in args.methods]
    if args.tta_only:
        methods = []
    profile, ops = profile_all(methods, args.profile_steps)
    rows = []
    size = int(load_recipe(ROOT / METHODS[0].config).data.params.get("size", 28))
    test = build_dataset("omniglot", None, size=size).test
    command = environment()["command"]
    rows.append(pixel_row(test, runs, size) | {"command": command})
    earlier = previous_results(args)
    if earlier is not None:
        rows += kept_rows(earlier, {(m.config, False) for m in methods})
        profile, ops = {**earlier["profile"], **profile}, ops or earlier["profile_top_ops"]
    for done, method in enumerate(methods, 1):
        console.rule(method.name)
        recipe, record = train_method(method, args.quick, args.runs)
        row = {"method": method.name, "measured": True, "command": command, **record}
        row.update(evaluate_model(ROOT / record["model_dir"], test, runs))
        rows.append(row)
        rows.sort(key=table_position)
        console.print({k: v for k, v in row.items() if not k.endswith("_ci95")})
        rows = refreshed(args, rows, command)
        write_results(args, rows, profile, ops, started, f"{done} of {len(methods)}")
    best, _ = best_rows(rows)
    rows = [
        r for r in rows if not (r.get("test_time_augmentation") and r["config"] == best["config"])
    ]
    augmented = tta_row(best, test, runs)
    if augmented:
        rows = sorted([*rows, augmented | {"command": command}], key=table_position)
    rows = refreshed(args, rows, command)
    write_results(args, rows, profile, ops, started, f"{len(methods)} of {len(methods)} + TTA")
    print_table(with_references(rows))


def previous_results(args: argparse.Namespace) -> dict[str, Any] | None:
    """The last results of the same mode, when ``--methods`` re-runs only some methods."""
    path = args.out / "omniglot.json"
    if not (args.methods or args.tta_only) or not path.is_file():
        return None
    earlier = json.loads(path.read_text())
    return (
        earlier if earlier["environment"]["mode"] == ("quick" if args.quick else "full") else None
    )


def table_position(row: dict[str, Any]) -> tuple[int, bool]:
    """Pixel baseline first, then the methods in METHODS order (each before its TTA row)."""
    configs = [m.config for m in METHODS]
    index = configs.index(row["config"]) if "config" in row else -1
    return index, bool(row.get("test_time_augmentation"))


def row_key(row: dict[str, Any]) -> tuple[str | None, bool]:
    """A results row's identity: its recipe, with or without test-time augmentation."""
    return row.get("config"), bool(row.get("test_time_augmentation"))


def kept_rows(earlier: dict[str, Any], skip: set[tuple[str | None, bool]]) -> list[dict[str, Any]]:
    """The measured rows of the previous results except those keyed in ``skip`` (each keeps the
    command that measured it), so that ``--methods`` re-runs some without losing the rest."""
    rows = []
    for row in earlier["methods"]:
        if not row.get("measured") or "config" not in row or row_key(row) in skip:
            continue
        row.setdefault("command", earlier["environment"]["command"])
        if "val_auc" not in row:  # older files: the best validation AUC from the run's history
            history = json.loads(
                (ROOT / row["model_dir"]).parent.joinpath("history.json").read_text()
            )
            row["val_auc"] = max(e.get("auc", 0.0) for e in history["epochs"])
        rows.append(row)
    return rows


def refreshed(args: argparse.Namespace, rows: list[dict], command: str) -> list[dict]:
    """This run's own rows plus every other row as the results file holds it now, so that two
    ``--methods`` runs at the same time keep each other's new rows."""
    latest = previous_results(args)
    if latest is None:
        return rows
    own = [r for r in rows if r.get("command") == command]
    keys = {row_key(r) for r in own}
    return sorted(own + kept_rows(latest, keys), key=table_position)


def with_references(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return rows + [{"method": name, "measured": False, **values} for name, values in REFERENCES]


def best_rows(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The method with the highest validation AUC (chosen on validation, not on test) and its
    test-time-augmented row, if any."""
    plain = [r for r in rows[1:] if not r.get("test_time_augmentation")]
    best = max(plain, key=lambda r: r["val_auc"])
    augmented = [r for r in rows if r.get("test_time_augmentation")]
    return best, next((r for r in augmented if r["config"] == best["config"]), None)


def write_results(args, rows, profile, ops, started: float, finished: str) -> None:
    """Write the md and json for the methods finished so far (after each one, so a long run
    that is stopped still leaves its finished rows)."""
    best, tta = best_rows(rows)
    env = run_environment(args, time.perf_counter() - started)
    env["methods_finished"] = finished
    args.out.mkdir(parents=True, exist_ok=True)
    head = headline(best, tta)
    head["targets"] = targets(head)
    page = markdown(with_references(rows), profile, ops, best, tta, env, head["targets"])
    (args.out / "omniglot.md").write_text(page)
    result = {
        **head,
        "environment": env,
        "methods": with_references(rows),
        "profile": profile,
        "profile_top_ops": ops,
    }
    (args.out / "omniglot.json").write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out / 'omniglot.md'} and {args.out / 'omniglot.json'}")


if __name__ == "__main__":
    main()
