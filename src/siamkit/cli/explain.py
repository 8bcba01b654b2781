"""``siamkit explain``: why a model scored two inputs as it did (attribution maps of the score,
or token attributions for text), and which enrolled templates back an identification. torch and
captum are imported only when the command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from siamkit.cli.app import app, console, print_table
from siamkit.errors import DataError

METHOD_NAMES = ("occlusion", "integrated_gradients", "saliency", "gradient_shap")
BASELINE_NAMES = ("black", "mean", "blur")


def _check(value: str, choices: tuple[str, ...], option: str) -> None:
    if value not in choices:
        raise DataError(f"{option}: expected one of {', '.join(choices)}; got {value!r}")


@app.command("explain")
def explain(
    model: Annotated[Path, typer.Argument(help="Model folder (from siamkit train).")],
    a: Annotated[str, typer.Argument(help="First input: an image file, or a text.")],
    b: Annotated[
        str | None, typer.Argument(help="Second input (omit with --gallery: A is the probe).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the PNG/HTML and JSON.")] = Path(
        "explained"
    ),
    method: Annotated[
        str, typer.Option(help="occlusion, integrated_gradients, saliency or gradient_shap.")
    ] = "occlusion",
    baseline: Annotated[
        str, typer.Option(help="What removed pixels become: blur (default), mean or black.")
    ] = "blur",
    steps: Annotated[
        int, typer.Option(min=2, help="Integration steps (integrated gradients, text).")
    ] = 32,
    gallery: Annotated[
        Path | None, typer.Option(help="Explain an identification of A in this gallery instead.")
    ] = None,
    k: Annotated[int, typer.Option(min=1, help="Nearest templates shown with --gallery.")] = 5,
) -> None:
    """Explain MODEL's score of A and B: a map per input of what raises the score (PNG overlays
    side by side with the score and decision; highlighted HTML for text models), or with
    --gallery the enrolled templates nearest to probe A."""
    _check(method, METHOD_NAMES, "--method")
    _check(baseline, BASELINE_NAMES, "--baseline")
    if gallery is not None:
        if b is not None:
            raise DataError("with --gallery give one probe image, not two inputs")
        _explain_identification(model, a, gallery, out, k)
        return
    if b is None:
        raise DataError("give two inputs A and B to explain (or one probe with --gallery)")
    import siamkit
    from siamkit.explain import explain_pair, save_explanation

    loaded = siamkit.load(model)
    explanation = explain_pair(loaded, a, b, method=method, baseline=baseline, steps=steps)
    written = save_explanation(explanation, out)
    row = {"score": explanation.score, "threshold": explanation.threshold}
    if explanation.decision is not None:
        row["decision"] = explanation.decision
    print_table("explanation", [row])
    for path in written:
        console.print(f"wrote {path}")


def _explain_identification(model: Path, probe: str, gallery: Path, out: Path, k: int) -> None:
    import json

    import siamkit
    from siamkit.explain.evidence import identification_evidence, save_evidence_png
    from siamkit.gallery import Gallery

    if not Path(probe).is_file():
        raise DataError(f"{probe}: no such image file (the probe)")
    if not gallery.exists():
        raise DataError(f"{gallery}: no such gallery (enroll people first)")
    loaded = siamkit.load(model)
    with Gallery.open(gallery) as g:
        evidence = identification_evidence(loaded, g, probe, k)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evidence.json").write_text(json.dumps(evidence.to_dict(), indent=2) + "\n")
    picture = save_evidence_png(evidence, loaded, out / "evidence.png")
    rows = [
        {"identity": e.identity, "score": e.score, "source": e.source or ""}
        for e in evidence.nearest
    ]
    print_table(f"{probe}: {evidence.identity or 'unknown'} ({evidence.score:.4f})", rows)
    console.print(f"wrote {out / 'evidence.json'}, {picture}")
