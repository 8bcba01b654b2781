"""Faces on unseen people (AT&T / ORL): verification, closed-set and open-set identification.

For each recipe (default: ``configs/faces.yaml``, a Conv-4 trained from scratch, and
``configs/faces-pretrained.yaml``, dlib's pre-trained face ResNet fine-tuned) and each fold
(people-disjoint: 24 training, 4 validation, 12 test people, seeded) it trains the recipe with that
fold, loads the saved model folder, embeds the test people's raw ``.pgm`` files through the
model's saved preprocessing, and measures (see
``siamkit.evaluation.faces_eval``): verification EER and TAR at FAR = 1% over all pairs;
closed-set rank-1 / rank-5 with one enrolled image per person; open-set DIR at FAR = 1% with half
the test people enrolled and half impostors (identification goes through ``siamkit.gallery``).
Reports mean +- std over folds. A recipe that starts from pre-trained weights is also scored
before any training ("zero-shot"), and its image framing (how much of the top of each photo to
crop) is chosen per fold on that fold's training + validation people with the pre-trained model,
never on the test people. The headline figures are those of the recipe with the best mean
validation AUC (the 4 validation people of each fold), not the best test figures.

    .venv/bin/python benchmarks/faces.py            # 3 folds, the recipes as written
    .venv/bin/python benchmarks/faces.py --quick    # 1 fold, 8 epochs (a smoke run)

Writes benchmarks/results/faces.md and faces.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.table import Table

import siamkit
from benchmarks_common import console, environment, markdown_table, shown, write_results
from siamkit.data import build_dataset
from siamkit.data.labelled import LabelledData
from siamkit.data.paths import dataset_dir
from siamkit.evaluation.embedding import embed_all
from siamkit.evaluation.faces_eval import face_metrics
from siamkit.evaluation.image_folder_eval import class_files
from siamkit.gallery.calibration import calibrate_model
from siamkit.gallery.images import cosine_threshold
from siamkit.recipe import build_network, load_recipe, parse_recipe, run_recipe

ROOT = Path(__file__).resolve().parents[1]
HEADLINE = ["eer", "tar_at_far_1pct", "rank1", "rank5", "dir_at_far_1pct"]
METRICS = [
    *HEADLINE, "dir_at_threshold", "far_at_threshold", "pixels_eer", "pixels_rank1",
    "zeroshot_eer", "zeroshot_rank1", "val_auc",
]  # fmt: skip
CONFIGS = [ROOT / "configs" / "faces.yaml", ROOT / "configs" / "faces-pretrained.yaml"]
CROP_GRID = [0.0, 0.1, 0.15, 0.2, 0.25, 0.3]
PACKAGES = ["numpy", "torch", "torchvision", "pytorch-metric-learning", "faiss-cpu"]


def fold_recipe(config: Path, fold: int, epochs: int | None, **data_params: Any) -> Any:
    """The recipe of ``config`` with the data fold (and optionally the epochs and other data
    parameters) replaced."""
    raw = load_recipe(config).model_dump(mode="json")
    raw["data"]["params"] |= {"fold": fold, **data_params}
    if epochs is not None:
        raw["training"]["epochs"] = epochs
    return parse_recipe(raw, str(config))


def test_files(recipe: Any) -> LabelledData:
    """The raw ``.pgm`` files of the recipe's test people (read through a model's saved
    preprocessing, as a user's images would be), labelled by their folder."""
    files = class_files(dataset_dir("att_faces", recipe.data_dir))
    splits = build_dataset(recipe.data.name, recipe.data_dir, **recipe.data.params)
    names = [splits.test.classes[int(c)] for c in splits.test.class_ids()]
    people = torch.tensor([files.classes.index(c) for c in names], dtype=torch.long)
    return files.subset(torch.isin(files.labels, people).nonzero().squeeze(1))


def zero_shot(recipe: Any, people: LabelledData, trials: int) -> dict[str, float]:
    """Metrics of the pre-trained network (no fine-tuning) on ``people``."""
    network, _ = build_network(recipe)  # with its init_weights
    embeddings = embed_all(network, people.items).numpy()
    return face_metrics(embeddings, people.labels.numpy(), trials, recipe.seed)


def choose_crop(config: Path, fold: int, grid: list[float], trials: int) -> dict[str, Any]:
    """The top-crop fraction of ``grid`` with the lowest zero-shot EER on the fold's training +
    validation people (the test people are not looked at)."""
    scores = {}
    for top in grid:
        recipe = fold_recipe(config, fold, None, crop=[top, 0.0, 0.0, 0.0])
        splits = build_dataset(recipe.data.name, recipe.data_dir, **recipe.data.params)
        seen = LabelledData(
            torch.cat([splits.train.items, splits.val.items]),
            torch.cat([splits.train.labels, splits.val.labels]),
            splits.train.classes,
        )
        scores[top] = zero_shot(recipe, seen, trials)["eer"]
    best = min(scores, key=lambda top: (scores[top], top))
    return {"crop_top": best, "crop_eer_by_top": scores}


def run_fold(
    config: Path, fold: int, epochs: int | None, out: Path, trials: int, crop_grid: list[float]
) -> dict:
    """Train on one fold and evaluate the saved model on that fold's test people."""
    recipe = fold_recipe(config, fold, epochs)
    framing: dict[str, Any] = {}
    if recipe.init_weights and crop_grid and "crop" in recipe.data.params:
        framing = choose_crop(config, fold, crop_grid, trials)
        top = framing["crop_top"]
        recipe = fold_recipe(config, fold, epochs, crop=[top, 0.0, 0.0, 0.0])
    start = time.perf_counter()
    result = run_recipe(recipe, out / Path(config).stem / f"fold{fold}")
    train_s = time.perf_counter() - start
    calibrated = calibrate_model(result.model_dir, far=0.01)  # on the validation people
    model = siamkit.load(result.model_dir)
    splits = build_dataset(recipe.data.name, recipe.data_dir, **recipe.data.params)
    test = test_files(recipe)
    test_people = test.class_ids()
    start = time.perf_counter()
    embeddings = model.embed(test.items).numpy()  # raw .pgm files, saved preprocessing
    threshold = cosine_threshold(model)
    metrics = face_metrics(embeddings, test.labels.numpy(), trials, recipe.seed, threshold)
    pixels = splits.test.items.float().flatten(1).numpy()  # reference: raw-pixel matching
    pixels -= pixels.mean(axis=1, keepdims=True)
    baseline = face_metrics(pixels, splits.test.labels.numpy(), trials, recipe.seed)
    before = zero_shot(recipe, splits.test, trials) if recipe.init_weights else {}
    kept = result.history.epochs[-1] if recipe.evaluation.keep == "last" else None
    return {
        "config": str(shown(config)),
        "fold": fold,
        **metrics,
        "pixels_eer": baseline["eer"],
        "pixels_rank1": baseline["rank1"],
        **{f"zeroshot_{k}": before[k] for k in ("eer", "rank1") if k in before},
        **framing,
        "val_auc": kept["auc"] if kept else result.history.best_metric,
        "threshold": threshold,
        "pair_eer_threshold": result.threshold,
        "calibration_pairs": calibrated["pairs"],
        "test_people": len(test_people),
        "test_images": len(test),
        "best_epoch": result.history.best_epoch,
        "epochs_run": len(result.history.epochs),
        "train_s": round(train_s, 1),
        "eval_s": round(time.perf_counter() - start, 1),
    }


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean and (population) std over folds of every numeric metric."""
    keys = [k for k in METRICS if k in rows[0]]
    return {
        k: {
            "mean": float(np.mean([r[k] for r in rows])),
            "std": float(np.std([r[k] for r in rows])),
        }
        for k in keys
    }


def describe(recipe: dict) -> str:
    """One line: encoder, input size, loss and epochs of a recipe."""
    enc, loss = recipe["encoder"], recipe["loss"]
    size = "x".join(str(v) for v in recipe["data"]["params"].get("size", []))
    flip = (
        "; test-time flip averaging: every embedding averages a face's features with its mirror "
        "image's, inside the encoder, so `siamkit verify`/`identify`/`search` do the same"
        if enc["params"].get("flip_average")
        else ""
    )
    return (
        f"{enc['name']} {enc['params']} on {size} grey faces, {loss['name']} {loss['params']}, "
        f"{recipe['training']['epochs']} epochs, weights kept: {recipe['evaluation']['keep']}{flip}"
    )


def pct(summary: dict[str, dict[str, float]], key: str) -> str:
    return f"{100 * summary[key]['mean']:.2f} ± {100 * summary[key]['std']:.2f}%"


def rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def report(rows: list[dict], args: argparse.Namespace, env: dict, wall: float) -> None:
    """Print the table and write the results files."""
    by_method: dict[str, list[dict]] = {}
    for row in rows:
        by_method.setdefault(row["config"], []).append(row)
    summaries = {config: summarise(method_rows) for config, method_rows in by_method.items()}
    best = max(summaries, key=lambda config: summaries[config]["val_auc"]["mean"])
    summary = summaries[best]
    keys = [k for k in METRICS if any(k in s for s in summaries.values())]
    table_rows = [
        {"metric": k, **{c: pct(s, k) if k in s else "-" for c, s in summaries.items()}}
        for k in keys
    ]
    table = Table(title=f"AT&T faces, unseen people: mean ± std over {len(args.folds)} fold(s)")
    for column in table_rows[0]:
        table.add_column(column)
    for row in table_rows:
        table.add_row(*row.values())
    console.print(table)
    targets = {
        "eer <= 3%": summary["eer"]["mean"] <= 0.03,
        "rank1 >= 97%": summary["rank1"]["mean"] >= 0.97,
    }
    recipes = {
        config: fold_recipe(ROOT / config, args.folds[0], args.epochs).model_dump(mode="json")
        for config in summaries
    }
    payload = {
        **{k: summary[k]["mean"] for k in HEADLINE},
        "std": {k: summary[k]["std"] for k in HEADLINE},
        "method": best,
        "targets_met": targets,
        "methods": {c: {"summary": summaries[c], "recipe": recipes[c]} for c in summaries},
        "folds": rows,
        "settings": {**{k: str(v) for k, v in vars(args).items()}},
        "environment": env,
        "wall_s": round(wall, 1),
    }
    fold_keys = ["config", "fold", *keys, "crop_top", "threshold", "best_epoch", "train_s"]
    fold_rows = [{k: rounded(r.get(k, "-")) for k in fold_keys} for r in rows]
    described = "".join(f"- `{c}`: {describe(recipes[c])}\n" for c in summaries)
    markdown = (
        "# Faces: AT&T / ORL, people never seen in training\n\n"
        f"Command: `{env['command']}`  \n"
        f"Machine: {env['machine']}; torch threads {env['threads']}; versions {env['versions']}; "
        f"recipe seed {recipes[best]['seed']}, evaluation seed = recipe seed.  \n"
        f"Wall time {wall / 60:.1f} min for {len(rows)} training run(s) (training + "
        f"evaluation); load average at the end {env['load_average']}.\n\n"
        f"Recipes ({'quick mode' if args.quick else 'as written'}):\n\n{described}\n"
        "How each recipe's settings were chosen is in the comment at the top of its file (never "
        "on these test people). Each fold: 24 training, 4 validation (threshold), 12 test "
        "people. Verification over all pairs of the test people's images; identification "
        f"through `siamkit.gallery` (FAISS), {args.trials} random trials per fold: closed-set "
        "with 1 enrolled image per person, open-set with 6 people enrolled (1 image each) and 6 "
        "impostors. DIR at FAR=1%: the threshold accepts at most 1% of the impostor probes (60 "
        "per trial, so none). `dir_at_threshold`/`far_at_threshold`: the same open-set protocol "
        "at the threshold `siamkit gallery-threshold` stores in the model folder (cosine "
        "accepting 1% of the impostor pairs of the 4 validation people), i.e. what `siamkit "
        "identify` uses. `pixels_*`: matching raw mean-centred pixels of the same test people, "
        "for reference. `zeroshot_*`: the pre-trained weights before fine-tuning. `crop_top`: "
        "the fraction of each photo's top cut off, chosen per fold by the pre-trained model's "
        "EER on the fold's 28 training + validation people. `val_auc`: validation pairs AUC of "
        f"the kept weights; the headline is the recipe with the best mean `val_auc`: "
        f"**`{best}`**.\n\n"
        "## Mean ± std over folds\n\n"
        + markdown_table(table_rows)
        + "\n## Per fold\n\n"
        + markdown_table(fold_rows)
        + f"\nTargets (headline recipe): {json.dumps(targets)}\n"
    )
    write_results("faces", payload, markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=Path, nargs="+", default=CONFIGS)
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="override the recipes' epochs")
    parser.add_argument("--trials", type=int, default=10, help="identification trials per fold")
    parser.add_argument(
        "--crop-grid", type=float, nargs="*", default=CROP_GRID,
        help="top-crop fractions tried for pre-trained recipes (none: keep the recipe's)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_faces")
    parser.add_argument("--quick", action="store_true", help="1 fold, 8 epochs")
    args = parser.parse_args()
    if args.quick:
        args.folds, args.epochs = args.folds[:1], args.epochs or 8
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = []
    for config in args.configs:
        for fold in args.folds:
            console.rule(f"{shown(config)}, fold {fold}")
            row = run_fold(config, fold, args.epochs, args.out, args.trials, args.crop_grid)
            console.print({k: rounded(v) for k, v in row.items()})
            rows.append(row)
            (args.out / "rows.json").write_text(json.dumps(rows, indent=1))  # kept if report fails
    seed = load_recipe(args.configs[0]).seed
    env = environment(seed, PACKAGES)
    report(rows, args, env, time.perf_counter() - start)


if __name__ == "__main__":
    main()
