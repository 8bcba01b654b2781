"""``siamkit classify``: known-class classification with an ensemble folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from siamkit.cli.app import app, print_table


@app.command()
def classify(
    folder: Annotated[
        Path, typer.Argument(help="Ensemble folder (siamkit train with an ensemble: block).")
    ],
    inputs: Annotated[list[Path], typer.Argument(help="Input files (e.g. images) to classify.")],
    top: Annotated[int, typer.Option(min=1, help="Most probable classes to show per input.")] = 3,
) -> None:
    """The most probable known classes of each input, by the siamese network and the
    classifier together (their weighted class probabilities)."""
    from siamkit.ensemble import load_ensemble

    ensemble = load_ensemble(folder)
    rows = []
    for path, ranked in zip(inputs, ensemble.classify([str(p) for p in inputs], top), strict=True):
        for rank, (name, probability) in enumerate(ranked, 1):
            rows.append({"input": str(path), "rank": rank, "class": name, "p": probability})
    print_table(f"{folder}: top {top} of {len(ensemble.classes)} classes", rows)
