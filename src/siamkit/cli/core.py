"""Core commands: demo, train, eval, verify."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from siamkit.cli.app import app, console, print_table
from siamkit.cli.tune import TRACK_HELP, TRACK_URI_HELP
from siamkit.errors import DataError


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the report, plots and model.")] = Path(
        "runs/demo"
    ),
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 4,
) -> None:
    """Train on digits 0-5, then test one-shot and verification on the unseen digits 6-9."""
    from siamkit.demo import run_demo

    summary = run_demo(out, epochs=epochs)
    print_table("siamkit demo: unseen digits 6-9", summary.rows())
    console.print(f"report: {summary.report_path}")


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Recipe YAML (see configs/).")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/<name>).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in OUT.")] = False,
    data_dir: Annotated[Path | None, typer.Option(help="Override the recipe's data_dir.")] = None,
    track: Annotated[str | None, typer.Option(help=TRACK_HELP)] = None,
    track_uri: Annotated[str | None, typer.Option(help=TRACK_URI_HELP)] = None,
) -> None:
    """Train a model from a recipe (images, text: any file in configs/); writes OUT/model,
    checkpoints and report.json. Under `torchrun --nproc-per-node N -m siamkit train ...` the
    N processes train data-parallel (docs/distributed.md)."""
    from siamkit import distributed
    from siamkit.recipe import load_recipe, run_recipe
    from siamkit.tracking import recipe_params, tracked_run

    recipe = load_recipe(config)
    out = out or Path("runs") / config.stem
    with distributed.session(recipe.training.device):
        main = distributed.is_main()  # rank 0 alone is tracked
        track, track_uri = (track, track_uri) if main else (None, None)
        with tracked_run(track, out, track_uri, config.stem, recipe_params(recipe)) as run:
            callbacks = [run.epoch_callback] if run is not None else []
            result = run_recipe(recipe, out, resume, data_dir, callbacks=callbacks)
            if run is not None:
                run.log_result(result)
        if not main:
            return
    rows = [{"metric": k, "value": v} for k, v in result.test.items()]
    rows += [{"metric": k, "value": str(v)} for k, v in result.fewshot.items()]
    if result.train_seconds is not None:
        rows.append({"metric": "train minutes", "value": result.train_seconds / 60})
    split = f"{recipe.data.name} test split" if recipe.sentence_pairs else "test classes"
    print_table(result.title or f"{split} (never seen in training)", rows)
    console.print(f"model saved to {result.model_dir}")


app.command("train-text", help="The same as `siamkit train` (kept for text recipes).")(train)


@app.command("convert-face-api")
def convert_face_api(
    model_dir: Annotated[
        Path, typer.Argument(help="face-api's model/ folder (npm package @vladmandic/face-api).")
    ],
    out: Annotated[Path, typer.Argument(help="safetensors file to write.")],
) -> None:
    """Convert face-api.js's pre-trained face-recognition weights (dlib's ResNet) into a
    safetensors file for the face_resnet encoder (a recipe's init_weights)."""
    from siamkit.encoders.face_api import convert_face_api as convert

    console.print(f"face_resnet weights written to {convert(model_dir, out)}")


@app.command("convert-resemblyzer")
def convert_resemblyzer(
    pretrained: Annotated[
        Path, typer.Argument(help="Resemblyzer's pretrained.pt (from its PyPI wheel).")
    ],
    out: Annotated[Path, typer.Argument(help="safetensors file to write.")],
) -> None:
    """Convert the Resemblyzer wheel's pre-trained GE2E speaker encoder (read with
    weights_only=True) into a safetensors file for the ge2e_lstm encoder (a recipe's
    init_weights)."""
    from siamkit.encoders.speaker import convert_resemblyzer as convert

    console.print(f"ge2e_lstm weights written to {convert(pretrained, out)}")


@app.command("convert-speech-embedding")
def convert_speech_embedding(
    onnx_file: Annotated[
        Path, typer.Argument(help="embedding_model.onnx (from openWakeWord 0.5.1's PyPI wheel).")
    ],
    out: Annotated[Path, typer.Argument(help="safetensors file to write.")],
) -> None:
    """Convert Google's pre-trained speech embedding (openWakeWord's embedding_model.onnx; its
    weights only, nothing executed) into a safetensors file for the speech_embedding encoder's
    trunk (a recipe's init_weights)."""
    from siamkit.encoders.speech_embedding import convert_speech_embedding as convert

    console.print(f"speech_embedding weights written to {convert(onnx_file, out)}")


@app.command("eval")
def evaluate(
    model: Annotated[Path, typer.Argument(help="Model folder.")],
    data: Annotated[Path, typer.Argument(help="Dataset file or folder.")],
) -> None:
    """Evaluate MODEL on DATA (a dataset this siamkit recognises, e.g. an image-class folder)."""
    import siamkit
    from siamkit.evaluation.tasks import evaluate_path

    report = evaluate_path(siamkit.load(model), data)
    print_table(report.title, report.rows)
    for note in report.notes:
        console.print(note)


@app.command()
def verify(
    model: Annotated[Path, typer.Argument(help="Model folder.")],
    questioned: Annotated[str, typer.Argument(help="The input to check (file or text).")],
    others: Annotated[
        list[str] | None,
        typer.Argument(help="The one input to compare with, or with --references the references."),
    ] = None,
    references: Annotated[
        bool, typer.Option("--references", help="Compare with these enrolled references: K >= 1.")
    ] = False,
    aggregate: Annotated[
        str | None,
        typer.Option(
            help="Reference scores: mean, max or centroid (default: the model's, else mean)."
        ),
    ] = None,
) -> None:
    """Score QUESTIONED against OTHER (or --references REF1 REF2 ...); decide at the threshold."""
    import siamkit

    others = others or []
    if not others or (len(others) > 1 and not references):
        raise DataError("give exactly one input to compare with, or --references REF1 [REF2 ...]")
    if references or aggregate is not None:  # one reference: every aggregate is the pair score
        from siamkit.evaluation.reference_set import AGGREGATES

        if aggregate is not None and aggregate not in AGGREGATES:
            raise DataError(
                f"--aggregate must be one of {', '.join(AGGREGATES)}; got {aggregate!r}"
            )
    loaded = siamkit.load(model)
    row: dict[str, Any]
    if references:
        row = reference_verification(loaded, questioned, others, aggregate)
    else:
        score = float(loaded.score([questioned], others)[0])
        row = {"score": score, "threshold": loaded.threshold}
    score, threshold = row["score"], row["threshold"]
    if threshold is not None:
        row["decision"] = "same" if score >= threshold else "different"
    k = row.get("references")
    support = row.pop("support", None)  # what the validation writers support (signatures)
    row["probability"] = probability_text(loaded, score, k, row.get("aggregate", "mean"))
    print_table("verification", [row])
    if support is not None:
        console.print(describe_reference_support(support))
        if support.get("warning"):
            console.print(f"[yellow]warning:[/yellow] {support['warning']}")


def probability_text(loaded: Any, score: float, k: int | None = None, aggregate: str = "mean"):
    """``"p=0.93 (0.88-0.96)"``: P(same) of ``score`` and its interval, or "not calibrated"."""
    calibrator = loaded.calibration(k, aggregate)
    if calibrator is None:
        return "not calibrated (siamkit calibrate MODEL)"
    return calibrator.probability([score]).text()


@app.command()
def calibrate(
    model: Annotated[Path, typer.Argument(help="Model folder (from siamkit train).")],
    data_dir: Annotated[
        Path | None, typer.Option(help="Dataset folder (default: the recipe's, else SIAMKIT_DATA).")
    ] = None,
) -> None:
    """Fit MODEL's score -> P(same) map on its recipe's validation split and store it in MODEL;
    prints ECE, Brier and log-loss on the test split before and after (docs/calibration.md)."""
    from siamkit.calibrate_model import calibrate_folder

    report = calibrate_folder(model, data_dir)
    rows = [
        {"": when, **{m: report[when][m] for m in ("ece", "brier", "log_loss")}}
        for when in ("before", "after")
    ]
    print_table(f"calibration on the test split ({report['test_pairs']} pairs)", rows)
    console.print(
        f"{report['method']} map fitted on {report['calibration_pairs']} validation pairs, "
        f"saved in {model}/config.json; reliability diagram: {report['plot']}"
    )
    if "within_group_share" in report:
        console.print(
            f"{report['within_group_share']:.1%} of the calibration negatives within one group, "
            f"as uniform test pairs have them (uniform validation pairs: "
            f"{report['val_within_group_share']:.1%})"
        )


@app.command()
def threshold(
    model: Annotated[Path, typer.Argument(help="Model folder (from siamkit train).")],
    rule: Annotated[
        str, typer.Option(help="eer, accuracy, f1, far<=X or frr<=X (e.g. far<=0.01).")
    ],
    data_dir: Annotated[
        Path | None, typer.Option(help="Dataset folder (default: the recipe's, else SIAMKIT_DATA).")
    ] = None,
) -> None:
    """Re-set MODEL's decision threshold(s) by RULE on its recipe's validation split and store
    them in MODEL; prints the FAR interval the validation data supports and FAR/FRR on the
    test split (a signature model: per K and aggregate). docs/calibration.md."""
    from siamkit.thresholding import rethreshold_folder, worst_warning

    report = rethreshold_folder(model, rule, data_dir)
    percent = "{:.2%}".format

    def accepted(row: dict[str, Any]) -> str:
        return (f"{row['accepted']}/{row['trials']} "
                f"({percent(row['far_low'])}-{percent(row['far_high'])})")  # fmt: skip

    if "by_k" in report:
        rows = [
            {"K": r["k"], "aggregate": r["aggregate"], "threshold": r["threshold"],
             "val FAR (95% interval)": accepted(r),
             "test FAR": percent(r["test_far"]), "test FRR": percent(r["test_frr"])}
            for r in report["by_k"]
        ]  # fmt: skip
        title = f"reference thresholds by {rule} (validation writers; test writers reported)"
    else:
        val, test = report["validation"], report["test"]
        rows = [{
            "threshold": report["threshold"], "previous": report["previous"],
            "val FAR (95% interval)": accepted(val), "val FRR": percent(val["frr"]),
            "test FAR": percent(test["far"]), "test FRR": percent(test["frr"]),
        }]  # fmt: skip
        title = f"threshold by {rule} (validation pairs; test pairs reported)"
    print_table(title, rows)
    if warning := worst_warning(report):
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"saved in {model}/config.json")


def reference_verification(
    loaded: Any, questioned: str, others: list[str], aggregate: str | None
) -> dict[str, Any]:
    """Score, threshold, aggregate and reference count of QUESTIONED against K references."""
    from siamkit.evaluation.reference_set import (
        saved_reference_support,
        saved_reference_threshold,
        score_against_references,
    )

    aggregate = aggregate or loaded.config.extra.get("reference_aggregate", "mean")
    score = score_against_references(loaded, questioned, others)[aggregate]
    saved = saved_reference_threshold(loaded.config.extra, len(others), aggregate)
    threshold = saved if saved is not None else loaded.threshold
    support = saved_reference_support(loaded.config.extra, len(others), aggregate)
    return {
        "score": score,
        "threshold": threshold,
        "aggregate": aggregate,
        "references": len(others),
        **({} if saved is None or support is None else {"support": support}),
    }


def describe_reference_support(row: dict[str, Any]) -> str:
    """One line: the rule a reference threshold was chosen by and the FAR interval behind it."""
    asked = "" if row.get("far") is None else f", {row['far']:.2%} asked"
    return (
        f"threshold chosen by {row['rule']} on {row['writers']} validation writers (K = "
        f"{row['k']}, {row['aggregate']}): {row['accepted']} of {row['trials']} skilled "
        f"forgeries accepted, a FAR of {row['far_low']:.2%}-{row['far_high']:.2%} (95% "
        f"interval{asked})"
    )
