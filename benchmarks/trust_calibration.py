"""Part ``calibration`` of benchmarks/trust.py: calibrated match probabilities on test classes.

For each task, train with the repository's recipe, fit the score -> P(same) map on the
validation classes (:func:`siamkit.calibration.fit_calibrator`: Platt or isotonic, chosen by
cross-validated log-loss) and report ECE (15 bins), Brier score and log-loss on the test classes,
before (the score read naively as a probability, see ``naive_probability``) and after.

- faces: configs/faces-pretrained.yaml (AT&T, fold 0: 4 validation people calibrate, 12 test
  people); faces_conv4: the same split with configs/faces.yaml (the Conv-4 trained from scratch)
- omniglot: configs/omniglot-contrastive.yaml (validation alphabets calibrate, evaluation
  alphabets test); epochs shortened (see ``EPOCHS``)
- signatures: configs/signatures.yaml, fold 0 (one map per K and aggregate on the 8 validation
  writers, tested on the test writers with K = 5 and the aggregate chosen on validation)
- stsb, mrpc: configs/stsb-minilm.yaml, mrpc-minilm.yaml (dev pairs calibrate, test pairs test;
  STS-B binarised at its label threshold); epochs shortened (see ``EPOCHS``)

Runs are kept in ``benchmarks/runs/trust_calibration/full/<task>`` (recipe runs resume from
their checkpoints) with each task's report; ``TRUST_CALIBRATION_TASKS=faces,omniglot`` measures
only those tasks and takes the others' reports from their earlier runs (so tasks can run side by
side in separate processes). ``TRUST_CALIBRATION_MODELS=faces=runs/x/model`` calibrates a copy
of a model folder already trained with the task's recipe instead of training one (its source is
recorded in the task's ``trained_by``).

    .venv/bin/python benchmarks/trust.py --parts calibration
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from benchmark_parts import PartResult
from benchmarks_common import RESULTS, console, markdown_table
from siamkit.calibration import (
    calibration_report,
    fit_reference_calibrators,
    naive_probability,
    reliability_diagram,
    store_calibration,
)
from trust_calibration_studies import (
    TARGET_ECE,
    pair_mix_study,
    signature_study,
    signature_study_markdown,
    study_markdown,
)

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "runs" / "trust_calibration"
CONFIGS = {
    "faces": "faces-pretrained.yaml",
    "faces_conv4": "faces.yaml",
    "omniglot": "omniglot-contrastive.yaml",
    "signatures": "signatures.yaml",
    "stsb": "stsb-minilm.yaml",
    "mrpc": "mrpc-minilm.yaml",
}
# recipe epochs cut to fit this machine's budget (None: the recipe's own); the figure measured is
# calibration, which needs a trained model, not the best one
EPOCHS: dict[str, int | None] = {
    "faces": None,
    "faces_conv4": None,
    "omniglot": 4,
    "signatures": 2,
    "stsb": 1,
    "mrpc": 1,
}
SIGNATURE_BATCHES = 24  # batches per epoch of the signature recipe here (the recipe: 48)
TEXT_TRAIN_PAIRS = 1600  # the sentence-pair recipes fine-tune MiniLM on this many pairs here
TARGET_TASKS = ("faces", "signatures", "omniglot")
SIGNATURE_FAR_RULES = ("far<=0.05", "far<=0.01")  # signature thresholds per K set by a target


def recipe_for(task: str, quick: bool) -> Any:
    """The task's recipe, epochs shortened as :data:`EPOCHS` says (1 epoch when ``quick``)."""
    from siamkit.recipe import load_recipe

    recipe = load_recipe(ROOT / "configs" / CONFIGS[task])
    epochs = 1 if quick else EPOCHS[task]
    update: dict[str, Any] = {}
    if recipe.init_weights:  # relative to the repository root, not to benchmarks/
        update["init_weights"] = str(ROOT / recipe.init_weights)
    if epochs is not None:
        update["training"] = recipe.training.model_copy(update={"epochs": epochs})
    if task == "signatures":
        update["batches"] = recipe.batches.model_copy(
            update={"batches_per_epoch": SIGNATURE_BATCHES}
        )
    if recipe.sentence_pairs:
        params = {**recipe.data.params, "train_pairs": TEXT_TRAIN_PAIRS}
        update["data"] = recipe.data.model_copy(update={"params": params})
    if not recipe.sentence_pairs and recipe.evaluation.fewshot:
        update["evaluation"] = recipe.evaluation.model_copy(update={"fewshot": []})
    return recipe.model_copy(update=update)


def _resumable(out: Path) -> bool:
    return (out / "checkpoint" / "state.json").is_file()


def recipe_task(task: str, quick: bool) -> dict[str, Any]:
    """Train (or resume) the recipe; its run already fits and reports the calibration."""
    from siamkit.recipe import run_recipe

    recipe = recipe_for(task, quick)
    out = RUNS / ("quick" if quick else "full") / task
    result = run_recipe(recipe, out, resume=_resumable(out), show_progress=False)
    report = dict(result.calibration)
    plot = RESULTS / f"trust_calibration_{task}.png"
    Path(report.pop("plot")).replace(plot)
    report["plot"] = str(plot.relative_to(ROOT))
    report["epochs"] = recipe.training.epochs
    return report


def folder_task(task: str, source: Path) -> dict[str, Any]:
    """Calibrate a copy of an existing model folder trained with a repository recipe
    (``siamkit calibrate``: the recipe's own validation and test pairs)."""
    import shutil

    from siamkit.calibrate_model import calibrate_folder

    folder = RUNS / "full" / task / "model_from_folder"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(source, folder)
    report = calibrate_folder(folder)
    plot = RESULTS / f"trust_calibration_{task}.png"
    Path(report.pop("plot")).replace(plot)
    recipe = json.loads((source / "config.json").read_text())["extra"]["recipe"]
    report.update(plot=str(plot.relative_to(ROOT)), epochs=recipe["training"]["epochs"],
                  trained_by=str(source), loss=recipe["loss"]["name"])  # fmt: skip
    return report


def signature_task(quick: bool) -> dict[str, Any]:
    """Train fold 0, calibrate one map per K and aggregate on its validation writers
    (``CALIBRATION_DRAWS`` reference draws, as ``siamkit calibrate``), report on its test
    writers (K = 5, the aggregate chosen on validation; every K in ``by_k``)."""
    from siamkit.calibrate_model import CALIBRATION_DRAWS
    from siamkit.data.paths import dataset_dir
    from siamkit.data.signatures import read_signature_tree, writer_folds
    from siamkit.evaluation.signature_eval import (
        EmbeddedSignatures,
        evaluate_fold,
        preprocess_of,
        save_signature_model,
        train_fold,
    )

    recipe = recipe_for("signatures", quick)
    data = read_signature_tree(dataset_dir("signatures"))
    split = writer_folds(data.writer_ids(), n_folds=5, n_val=8, seed=0)[0]
    images = preprocess_of(recipe)(data.paths)
    out = RUNS / ("quick" if quick else "full") / "signatures"
    fold = train_fold(recipe, data, images, split, out, show_progress=False, resume=_resumable(out))
    rule = recipe.evaluation.threshold_rule
    result = evaluate_fold(fold.network, images, data, split, seed=recipe.seed, rule=rule)
    embedded = EmbeddedSignatures.of(fold.network, images, data, split.val)
    val = embedded.scores(split.val, (1, 3, 5), recipe.seed, normalisation=result.normalisation)
    calibration_trials = embedded.scores(split.val, (1, 3, 5), recipe.seed,
                                         draws=CALIBRATION_DRAWS,
                                         normalisation=result.normalisation)  # fmt: skip
    maps = fit_reference_calibrators(calibration_trials, seed=recipe.seed)
    folder = save_signature_model(out / "model", fold, recipe, result.thresholds, split,
                                  result.normalisation, result.aggregate,
                                  result.support)  # fmt: skip
    store_calibration(folder, by_k=maps)
    head = fold.head_spec.name
    by_k = {}
    for k, (trials, scores) in result.scored.items():
        by_k[k] = {a: calibration_report(maps[k][a], s, trials.labels, head)
                   for a, s in scores.items()}  # fmt: skip
    trials, scores = result.scored[5]
    s, y = scores[result.aggregate], trials.labels
    calibrator = maps[5][result.aggregate]
    plot = reliability_diagram(
        RESULTS / "trust_calibration_signatures.png", y,
        {"before": naive_probability(s, head), "after": calibrator.predict(s)},
        f"Signatures, unseen writers, K=5 {result.aggregate}",
    )  # fmt: skip
    report = dict(by_k[5][result.aggregate])  # a copy: it also holds by_k
    report.update(plot=str(plot.relative_to(ROOT)), aggregate=result.aggregate,
                  normalisation=result.normalisation, epochs=recipe.training.epochs,
                  by_k={str(k): v for k, v in by_k.items()},
                  far_targets=signature_far_targets(val, result.scored))  # fmt: skip
    return report


def signature_far_targets(
    val: dict[int, Any], test: dict[int, Any], rules: tuple[str, ...] = SIGNATURE_FAR_RULES
) -> dict[str, list[dict[str, Any]]]:
    """Per rule, K and aggregate: the threshold chosen on the validation writers' scores
    (``val``), the FAR interval they support and the FAR measured at it on the test writers
    (``test``; both as :meth:`EmbeddedSignatures.scores` returns): does the promise hold?"""
    from siamkit.evaluation.reference_set import far_promise
    from siamkit.evaluation.signature_eval import thresholds_by_rule

    out = {}
    for rule in rules:
        _, support = thresholds_by_rule(val, rule)
        out[rule] = [
            far_promise(support[k][a], values, test[k][0])
            for k in sorted(test) for a, values in test[k][1].items()
        ]  # fmt: skip
    return out


def signature_far_markdown(targets: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The signature rows of :func:`signature_far_targets` as a Markdown section."""
    if not targets:  # a report from before the FAR targets
        return []
    rows = [
        {"rule": r["rule"], "K": r["k"], "aggregate": r["aggregate"],
         "validation forgeries": r["trials"], "accepted": r["accepted"],
         "validation FAR": f"{r['far_measured']:.2%}",
         "95% interval": f"{r['far_low']:.2%}-{r['far_high']:.2%}",
         "supported": "yes" if r["supported"] else "no",
         "test FAR": f"{r['test_far']:.2%} ({r['test_trials']} forgeries)",
         "test FRR": f"{r['test_frr']:.2%}",
         "test FAR <= asked": "yes" if r["within_asked"] else "no",
         "within interval": "yes" if r["within_interval"] else "no"}
        for rows in targets.values() for r in rows
    ]  # fmt: skip
    return [
        "", "Signature thresholds per K set by a FAR target on the validation writers (fold 0, "
        "the same trained model), the Clopper-Pearson 95% interval they support (each skilled "
        "forgery counted once, its acceptance averaged over its 5 reference draws and the sum "
        "rounded) and the FAR measured on the test writers:", "",
        markdown_table(rows),
    ]  # fmt: skip


def run(quick: bool) -> PartResult:
    """Every task's calibration figures (the ``calibration`` part of benchmarks/trust.py)."""
    chosen = os.environ.get("TRUST_CALIBRATION_TASKS", ",".join(CONFIGS)).split(",")
    models = [item for item in os.environ.get("TRUST_CALIBRATION_MODELS", "").split(",") if item]
    # task=model folder: calibrate that trained model instead of training one
    folders = {task: ROOT / path for task, path in (item.split("=", 1) for item in models)}
    reports: dict[str, dict[str, Any]] = {}
    for task in CONFIGS:
        saved = RUNS / ("quick" if quick else "full") / task / "calibration_report.json"
        if task not in chosen:  # measured by an earlier run of this script (tasks side by side)
            if saved.is_file():
                reports[task] = json.loads(saved.read_text())
            continue
        console.print(f"[bold]calibration[/]: {task}")
        if task in folders:
            reports[task] = folder_task(task, folders[task])
            if task == "omniglot" and not quick:
                reports[task]["pair_mix_study"] = pair_mix_study(folders[task])
        elif task == "signatures":
            reports[task] = signature_task(quick)
        else:
            reports[task] = recipe_task(task, quick)
        saved.write_text(json.dumps(reports[task], indent=2))
        console.print(reports[task]["before"], reports[task]["after"])
    if "signatures" in os.environ.get("TRUST_CALIBRATION_STUDY", "") and "signatures" in reports:
        # the signature study alone, on the saved model of an earlier run (no training)
        model = RUNS / ("quick" if quick else "full") / "signatures" / "model"
        reports["signatures"]["study"] = signature_study(model)
        saved = RUNS / ("quick" if quick else "full") / "signatures" / "calibration_report.json"
        saved.write_text(json.dumps(reports["signatures"], indent=2))
    figures = {
        f"{metric}_{when}": {t: r[when][metric] for t, r in reports.items()}
        for metric in ("ece", "brier") for when in ("before", "after")
    }  # fmt: skip
    figures["log_loss_before"] = {t: r["before"]["log_loss"] for t, r in reports.items()}
    figures["log_loss_after"] = {t: r["after"]["log_loss"] for t, r in reports.items()}
    return PartResult(figures, markdown(reports), details=reports, seed=0)


def markdown(reports: dict[str, dict[str, Any]]) -> str:
    """The results table, the target check and the reliability diagrams."""
    rows = [
        {
            "task": task, "method": r["method"], "calibration pairs": r["calibration_pairs"],
            "test pairs": r["test_pairs"], "epochs": r["epochs"] or "recipe",
            **{f"{m} {w}": f"{r[w][m]:.4f}" for m in ("ece", "brier", "log_loss")
               for w in ("before", "after")},
        }
        for task, r in reports.items()
    ]  # fmt: skip
    checks = [
        f"- {task}: ECE after {reports[task]['after']['ece']:.4f} "
        f"{'<=' if reports[task]['after']['ece'] <= TARGET_ECE else '>'} {TARGET_ECE} "
        f"({'met' if reports[task]['after']['ece'] <= TARGET_ECE else 'NOT met'})"
        for task in TARGET_TASKS
        if task in reports
    ]
    noise = [
        f"- {task}: {reports[task]['ece_floor']:.4f} on {reports[task]['test_pairs']} pairs"
        for task in reports
    ]
    sources = [
        f"- {task}: a copy of `{r['trained_by']}` ({r['epochs']} epochs, loss {r['loss']}), "
        "trained with the task's repository recipe by another benchmark run, calibrated here"
        if "trained_by" in r
        else f"- {task}: trained here ({r['epochs'] or 'the recipe'} epochs)"
        for task, r in reports.items()
    ]
    figures = "\n".join(f"![{t}]({Path(r['plot']).name})" for t, r in reports.items())
    mixes = [
        f"- {task}: {r['within_group_share']:.1%} of the calibration negatives are within one "
        f"group (the share uniform test pairs have; uniform validation pairs: "
        f"{r['val_within_group_share']:.1%})"
        for task, r in reports.items()
        if "within_group_share" in r
    ]
    mix_lines = ["", "Pair mix of the calibration pairs (docs/calibration.md):", *mixes]
    return "\n".join([
        "ECE (15 equal-width bins), Brier score and log-loss on the test classes; *before* reads "
        "the score naively as a probability (learned head: as is; cosine: (s+1)/2; euclidean: "
        "1 - distance/2, clipped), *after* applies the map fitted on the validation classes.",
        "", markdown_table(rows), "", "Target ECE <= 0.02 after calibration:", *checks,
        *signature_far_markdown(reports.get("signatures", {}).get("far_targets", {})), "",
        "ECE of a perfectly calibrated map on these pairs (sampling noise: labels drawn 20 times "
        "from the calibrated probabilities):",
        *noise, *(mix_lines if mixes else []),
        *study_markdown(reports.get("omniglot", {}).get("pair_mix_study", {})),
        *signature_study_markdown(reports.get("signatures", {}).get("study", {})),
        "", "Models:", *sources, "", figures,
    ])  # fmt: skip
