"""A trained model and a gallery together: enroll, identify and search with image files.

The gallery compares unit-length embeddings by cosine similarity. :func:`cosine_threshold` gives
the threshold below which a probe is "unknown": the gallery threshold stored in the model folder
by :func:`siamkit.gallery.calibration.calibrate_model` if there is one (for the gallery's size:
:func:`identify_files` passes it), else the model's pair
threshold turned into a cosine (a cosine head's as it is; a euclidean head on L2-normalised
embeddings converts ``-d`` to ``1 - d^2 / 2``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import Progress

from siamkit.data.datasets import IMAGE_SUFFIXES
from siamkit.errors import DataError
from siamkit.gallery import Gallery, Identification, Match
from siamkit.gallery.calibration import KEY
from siamkit.model import Model


def sized_gallery_threshold(model: Model, gallery_size: int) -> dict | None:
    """The calibrated threshold for a gallery of ``gallery_size`` people with the size and FAR
    interval it rests on (see :func:`siamkit.gallery.openset.threshold_for_size`), or ``None``
    when the model folder holds no per-size table (not calibrated, or by an old version)."""
    from siamkit.gallery.openset import threshold_for_size

    calibrated = model.config.extra.get(KEY)
    if not calibrated or not calibrated.get("sizes"):
        return None
    return threshold_for_size(calibrated, gallery_size)


def cosine_threshold(model: Model, gallery_size: int | None = None) -> float | None:
    """The gallery threshold the model folder holds, for ``gallery_size`` enrolled people when
    given (see :func:`siamkit.gallery.openset.gallery_cosine`)."""
    from siamkit.gallery.openset import gallery_cosine

    config = model.config
    normalized = bool(config.encoder.params.get("normalize"))
    calibration = config.extra.get(KEY)
    return gallery_cosine(calibration, model.threshold, config.head.name, normalized, gallery_size)


def embed_files(model: Model, files: Sequence[str | Path]) -> np.ndarray:
    """Embeddings (N, D) of image files, read with the model's saved preprocessing."""
    if not files:
        raise DataError("no image files given")
    return model.embed([str(f) for f in files]).numpy()


def enroll_files(
    model: Model, gallery: Gallery, name: str, files: Sequence[str | Path], mean: bool = False
) -> np.ndarray:
    """Enroll ``name`` with one template per image file (and their mean if asked)."""
    embeddings = embed_files(model, files)
    return gallery.enroll(name, embeddings, sources=[str(f) for f in files], mean=mean)


def identify_files(
    model: Model,
    gallery: Gallery,
    files: Sequence[str | Path],
    k: int = 5,
    threshold: float | None = None,
) -> list[Identification]:
    """Top-``k`` identities per probe file; "unknown" below ``threshold`` (default: the model's
    for the gallery's current number of identities, as a cosine, see :func:`cosine_threshold`)."""
    if threshold is None:
        threshold = cosine_threshold(model, len(gallery.identities()))
    t = threshold
    return gallery.identify(embed_files(model, files), k=k, threshold=t)


def search_files(
    model: Model, gallery: Gallery, files: Sequence[str | Path], k: int = 10
) -> list[list[Match]]:
    """The ``k`` most similar stored images per query file."""
    return gallery.search(embed_files(model, files), k=k)


def image_files(folder: str | Path, suffixes: set[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Every image file (or file with one of ``suffixes``) under ``folder`` (recursively),
    sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes)
    if not files:
        kind = "image" if suffixes == IMAGE_SUFFIXES else "input"
        raise DataError(f"{root}: no {kind} files ({', '.join(sorted(suffixes))})")
    return files


def input_suffixes(model: Model) -> set[str]:
    """The files ``index`` reads for ``model``: its (a two-tower model's tower b) preprocessing's
    ``suffixes`` (an audio model's ``.wav``), else images."""
    pre = model.preprocess_b if getattr(model, "preprocess_b", None) else model.preprocess
    return set(getattr(pre, "suffixes", IMAGE_SUFFIXES))


@dataclass(frozen=True)
class IndexSummary:
    """What :func:`index_folder` did: images added, and images skipped as already indexed."""

    added: int
    skipped: int


def index_folder(
    model: Model,
    gallery: Gallery,
    folder: str | Path,
    batch_size: int = 256,
    show_progress: bool = True,
) -> IndexSummary:
    """Embed every image under ``folder`` into ``gallery`` for retrieval.

    Each item's metadata is ``{"source": path, "label": its parent folder's name}``. Files indexed
    before (same path) are skipped, so indexing a folder again adds only its new images. Batches
    are committed one at a time: an interrupted run keeps what it finished.
    """
    root = Path(folder)
    files = image_files(root, input_suffixes(model))
    known = gallery.sources() if len(gallery) else set()
    todo = [f for f in files if str(f) not in known]
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task(f"indexing {root}", total=len(todo))
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            metas = [{"source": str(f), "label": f.parent.name} for f in batch]
            gallery.add(embed_files(model, batch), metas)
            progress.advance(task, len(batch))
    gallery.save()
    return IndexSummary(added=len(todo), skipped=len(files) - len(todo))
