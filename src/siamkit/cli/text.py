"""Text commands: similarity, match-text, classify-text, paraphrase (train: `siamkit train`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from siamkit.cli.app import app, console, print_table
from siamkit.errors import DataError

ModelArg = Annotated[Path, typer.Argument(help="Text model folder (siamkit train output).")]


@app.command()
def similarity(
    model: ModelArg,
    text_a: Annotated[str, typer.Argument(help="First text.")],
    text_b: Annotated[str, typer.Argument(help="Second text.")],
) -> None:
    """Cosine similarity of two texts (and the decision at the model's threshold)."""
    import siamkit

    loaded = siamkit.load(model)
    score = float(loaded.score([text_a], [text_b])[0])
    row: dict[str, object] = {"similarity": score}
    if loaded.threshold is not None:
        row["threshold"] = loaded.threshold
        row["decision"] = "similar" if score >= loaded.threshold else "different"
    if (calibrator := loaded.calibration()) is not None:
        row["probability"] = calibrator.probability([score]).text()
    print_table("sentence similarity", [row])


@app.command("match-text")
def match_text(
    model: ModelArg,
    queries: Annotated[list[str], typer.Argument(help="Query text(s).")],
    references: Annotated[Path, typer.Option(help="UTF-8 file, one reference text a line.")],
    k: Annotated[int, typer.Option("-k", min=1, help="How many matches per query.")] = 5,
    index: Annotated[
        str | None, typer.Option(help="Gallery folder or Milvus *.db to keep the index in.")
    ] = None,
) -> None:
    """Rank the reference texts for each query (top K) through a gallery index."""
    import siamkit
    from siamkit.data.text import read_text_lines
    from siamkit.text.matching import rank_references

    texts = [line for line in read_text_lines(references) if line.strip()]
    if not texts:
        raise DataError(f"{references}: no reference texts (one per line expected)")
    results = rank_references(siamkit.load(model), queries, texts, k, index)
    for query, matches in zip(queries, results, strict=True):
        rows = [{"rank": r, "score": m.score, "line": m.line, "text": m.text}
                for r, m in enumerate(matches, start=1)]  # fmt: skip
        print_table(f"matches for: {query}", rows)


@app.command("classify-text")
def classify_text(
    model: ModelArg,
    texts: Annotated[list[str], typer.Argument(help="Text(s) to label.")],
    references: Annotated[Path, typer.Option(help="UTF-8 file of 'label<TAB>text' lines.")],
    method: Annotated[str, typer.Option(help="prototype (class means) or knn (vote).")] = (
        "prototype"
    ),
    k: Annotated[int, typer.Option("-k", min=1, help="Neighbours for the knn vote.")] = 5,
) -> None:
    """Label each text by its nearest labelled reference texts."""
    import siamkit
    from siamkit.data.text import read_labelled_texts
    from siamkit.text.classification import classify_texts

    if method not in ("prototype", "knn"):
        raise DataError(f"--method must be 'prototype' or 'knn', got {method!r}")
    ref_texts, ref_labels = read_labelled_texts(references)
    labels = classify_texts(siamkit.load(model), texts, ref_texts, ref_labels, method, k)  # type: ignore[arg-type]
    print_table("text classification", [
        {"text": t, "label": label} for t, label in zip(texts, labels, strict=True)
    ])  # fmt: skip


@app.command()
def paraphrase(
    model: ModelArg,
    text_a: Annotated[str | None, typer.Argument(help="First text.")] = None,
    text_b: Annotated[str | None, typer.Argument(help="Second text.")] = None,
    train: Annotated[
        Path | None, typer.Option(help="Labelled pairs to choose the threshold on.")
    ] = None,
    test: Annotated[Path | None, typer.Option(help="Labelled pairs to report on.")] = None,
    save: Annotated[bool, typer.Option(help="Store the chosen threshold in MODEL.")] = False,
) -> None:
    """Paraphrase detection: decide for TEXT_A/TEXT_B at the model's threshold, or choose the
    threshold on --train pairs (MRPC file or '0|1<TAB>a<TAB>b' lines) and report on --test."""
    import siamkit
    from siamkit.data.text import read_pair_file
    from siamkit.text.paraphrase import paraphrase_report, paraphrase_threshold

    loaded = siamkit.load(model)
    if text_a is not None or text_b is not None:
        if text_a is None or text_b is None or train is not None:
            raise DataError("give two texts, or --train PAIRS [--test PAIRS], not both")
        score = loaded.score([text_a], [text_b])
        decision = "paraphrase" if bool(loaded.decide(score)[0]) else "different"
        row = {"similarity": float(score[0]), "threshold": loaded.threshold, "decision": decision}
        print_table("paraphrase", [row])
        return
    if train is None:
        raise DataError("give two texts, or --train PAIRS to choose the threshold")
    threshold = paraphrase_threshold(loaded, read_pair_file(train))
    row: dict[str, object] = {"threshold": threshold}
    if test is not None:
        row.update(paraphrase_report(loaded, read_pair_file(test), threshold))
    print_table("paraphrase detection", [row])
    if save:
        from siamkit.model import update_config

        update_config(model, threshold=threshold)
        console.print(f"threshold saved to {model}")
