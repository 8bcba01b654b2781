"""Gallery commands: enroll, identify, people, remove (faces); index, search (image retrieval).

GALLERY is a folder (FAISS + SQLite, the default), a Milvus Lite file ``*.db``, or a Milvus
server URI ``http://host:19530``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from siamkit.cli.app import app, console, print_table

ModelArg = Annotated[Path, typer.Argument(help="Model folder (from siamkit train).")]
GalleryArg = Annotated[str, typer.Argument(help="Gallery folder, Milvus Lite *.db or URI.")]


@app.command()
def enroll(
    model: ModelArg,
    gallery: GalleryArg,
    images: Annotated[list[Path], typer.Argument(help="Images of this person.")],
    name: Annotated[str, typer.Option("--name", help="The identity's name (unique).")],
    mean: Annotated[
        bool, typer.Option(help="Also store the mean of the images' templates.")
    ] = False,
) -> None:
    """Enroll identity NAME in GALLERY with one template per image."""
    import siamkit
    from siamkit.gallery import Gallery
    from siamkit.gallery.images import enroll_files

    loaded = siamkit.load(model)
    with Gallery.open(gallery) as g:
        ids = enroll_files(loaded, g, name, images, mean=mean)
        total = len(g.identities())
    console.print(f"enrolled {name!r}: {len(ids)} templates; {total} identities in {gallery}")


@app.command()
def identify(
    model: ModelArg,
    gallery: GalleryArg,
    image: Annotated[Path, typer.Argument(help="The probe image.")],
    k: Annotated[int, typer.Option("-k", min=1, help="Candidates to show.")] = 5,
    threshold: Annotated[
        float | None,
        typer.Option(help="Cosine below which the probe is unknown (default: the model's)."),
    ] = None,
) -> None:
    """Who is in IMAGE: the top-k enrolled identities, or "unknown" below the threshold."""
    import siamkit
    from siamkit.gallery import Gallery
    from siamkit.gallery.images import cosine_threshold, identify_files, sized_gallery_threshold

    loaded = siamkit.load(model)
    with Gallery.open(gallery) as g:
        size = len(g.identities())
        sized = sized_gallery_threshold(loaded, size) if threshold is None else None
        t = threshold if threshold is not None else cosine_threshold(loaded, size)
        answer = identify_files(loaded, g, [image], k=k, threshold=t)[0]
    calibrator = loaded.calibration()  # P(same) of one probe-template pair, if calibrated
    rows = [{"rank": i + 1, "identity": c.identity, "score": c.score,
             **({} if calibrator is None else
                {"probability": calibrator.probability([c.score]).text()})}
            for i, c in enumerate(answer.candidates)]  # fmt: skip
    print_table(f"candidates for {image}", rows)
    decision = answer.identity if answer.identity is not None else "unknown"
    shown = "none" if t is None else f"{t:.4f}"
    p = "" if calibrator is None else f", {calibrator.probability([answer.score]).text()}"
    console.print(f"identity: {decision} (score {answer.score:.4f}{p}, threshold {shown})")
    if sized is not None:
        console.print(describe_sized(sized))
        if sized["warning"]:
            console.print(f"[yellow]warning:[/yellow] {sized['warning']}")


def describe_sized(row: dict) -> str:
    """One line: which gallery size's threshold was used and the FAR interval behind it."""
    how = "interpolated between calibrated sizes" if row["interpolated"] else "calibrated"
    return (
        f"threshold for a gallery of {row['gallery_size']} people ({how}; table size "
        f"{row['size']}): {row['far']:.2%} of stranger probes accepted, the calibration data "
        f"support {row['far_low']:.2%}-{row['far_high']:.2%} ({row['trials']} stranger probes)"
    )


@app.command()
def people(gallery: GalleryArg) -> None:
    """List the identities enrolled in GALLERY and their number of image templates."""
    from siamkit.gallery import Gallery

    with Gallery.open(gallery) as g:
        names = g.identities()
    print_table(f"{len(names)} identities in {gallery}",
                [{"identity": n, "images": c} for n, c in names.items()])  # fmt: skip


@app.command()
def remove(
    gallery: GalleryArg,
    name: Annotated[str, typer.Option("--name", help="The identity to remove.")],
) -> None:
    """Remove identity NAME (all its templates) from GALLERY."""
    from siamkit.gallery import Gallery

    with Gallery.open(gallery) as g:
        removed = g.remove(name)
    console.print(f"removed {name!r}: {removed} templates")


@app.command()
def index(
    model: ModelArg,
    folder: Annotated[
        Path,
        typer.Argument(
            help="Folder of the files the model reads: images, or .wav recordings for an "
            "audio model (searched recursively)."
        ),
    ],
    gallery: Annotated[
        str | None,
        typer.Option(help="Gallery to add to (default: ./<FOLDER's name>.gallery)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Files embedded per batch.")] = 256,
) -> None:
    """Embed every file the model reads under FOLDER (images, or recordings for an audio
    model) into a gallery for `siamkit search`."""
    import siamkit
    from siamkit.gallery import Gallery
    from siamkit.gallery.images import index_folder

    loaded = siamkit.load(model)
    target = gallery or f"{folder.resolve().name}.gallery"  # data folders may be read-only
    with Gallery.open(target) as g:
        summary = index_folder(loaded, g, folder, batch_size=batch_size)
        total = len(g)
    console.print(
        f"indexed {summary.added} files ({summary.skipped} already there); "
        f"{total} items in {target}"
    )


@app.command()
def search(
    model: ModelArg,
    gallery: GalleryArg,
    image: Annotated[Path, typer.Argument(help="The query image.")],
    k: Annotated[int, typer.Option("-k", min=1, help="Results to show.")] = 10,
) -> None:
    """The k stored images most similar to IMAGE (cosine similarity of embeddings)."""
    import siamkit
    from siamkit.gallery import Gallery
    from siamkit.gallery.images import search_files

    loaded = siamkit.load(model)
    with Gallery.open(gallery) as g:
        matches = search_files(loaded, g, [image], k=k)[0]
    rows = [
        {
            "rank": i + 1,
            "score": m.score,
            "source": m.metadata.get("source"),
            "label": m.metadata.get("label", m.metadata.get("identity")),
        }
        for i, m in enumerate(matches)
    ]
    print_table(f"most similar to {image}", rows)


@app.command("gallery-threshold")
def gallery_threshold(
    model: ModelArg,
    far: Annotated[
        float, typer.Option(help="Share of stranger probes to accept, at each gallery size.")
    ] = 0.01,
    folds: Annotated[
        int,
        typer.Option(
            help="0: calibrate on the recipe's validation people; K >= 2: cross-fit K models "
            "on the training + validation people (K trainings) and calibrate on all of them."
        ),
    ] = 0,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Epochs per cross-fitted model (default: recipe's).")
    ] = None,
    work_dir: Annotated[
        Path | None, typer.Option(help="Cross-fitting work folder (default: MODEL.crossfit).")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Override the recipe's data_dir.")] = None,
) -> None:
    """Set MODEL's open-set thresholds: per gallery size G, the cosine at which FAR of the
    stranger probes (people never enrolled) are accepted, calibrated on people the model never
    trained on; `identify` then uses the one for the gallery's size."""
    from siamkit.gallery.calibration import calibrate_model

    found = calibrate_model(
        model, far=far, data_dir=data_dir, folds=folds, epochs=epochs, work_dir=work_dir,
        show_progress=True,
    )  # fmt: skip
    source = f"{folds} cross-fitted folds" if folds else "validation people"
    print_table(
        f"thresholds per gallery size ({found['trials']} stranger probes of {found['people']} "
        f"people, {source})",
        [{"people enrolled": r["size"], "cosine": r["cosine"],
          "FAR 95% interval": f"{r['far_low']:.2%}-{r['far_high']:.2%}",
          "note": "extrapolated" if r["extrapolated"] else ""}
         for r in found["sizes"] if r["size"] in SHOWN_SIZES],
    )  # fmt: skip
    console.print(
        f"gallery threshold {found['cosine']:.4f} (cosine, 1 person enrolled) accepts "
        f"{100 * far:g}% of {found['pairs']} impostor pairs of {found['people']} "
        f"{'people' if folds else 'validation people'}; at every size, {100 * far:g}% of "
        f"stranger probes; saved in {model}"
    )
    if found["warning"]:
        console.print(f"[yellow]warning:[/yellow] {found['warning']}")


SHOWN_SIZES = {1, 2, 5, 6, 10, 20, 50, 100, 1000}
