"""Evidence for an identification: the enrolled templates nearest to the probe, with their
identities, scores and (when the gallery stored them) the enrolled images' paths."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from siamkit.errors import DataError


@dataclass(frozen=True)
class Evidence:
    """One enrolled template near the probe."""

    identity: str | None
    score: float
    source: str | None
    template: str | None


@dataclass(frozen=True)
class IdentificationEvidence:
    """The answer for a probe (``identity`` None = unknown) and the templates behind it."""

    probe: str
    identity: str | None
    score: float
    threshold: float | None
    nearest: list[Evidence] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record."""
        return asdict(self)


def identification_evidence(
    model: Any, gallery: Any, probe: str | Path, k: int = 5, threshold: float | None = None
) -> IdentificationEvidence:
    """Identify ``probe`` (an image file) in ``gallery`` and return the ``k`` nearest enrolled
    templates as evidence; ``threshold`` defaults to the model's gallery threshold."""
    from siamkit.gallery.images import cosine_threshold, embed_files

    if k < 1:
        raise DataError(f"evidence: k must be >= 1, got {k}")
    if len(gallery) == 0:
        raise DataError("the gallery is empty: enroll people before asking for evidence")
    if threshold is None:
        threshold = cosine_threshold(model, len(gallery.identities()))
    embedding = embed_files(model, [probe])
    answer = gallery.identify(embedding, k=1, threshold=threshold)[0]
    matches = gallery.search(embedding, k=k)[0]
    nearest = [
        Evidence(m.metadata.get("identity"), float(m.score), m.metadata.get("source"),
                 m.metadata.get("template"))
        for m in matches
    ]  # fmt: skip
    return IdentificationEvidence(
        str(probe), answer.identity, float(answer.score), threshold, nearest
    )


def save_evidence_png(evidence: IdentificationEvidence, model: Any, path: str | Path) -> Path:
    """The probe and its nearest enrolled images (those whose source file exists), captioned
    with identity and score."""
    from siamkit.explain.render import _display, _figure

    shown = [(evidence.probe, "probe: " + (evidence.identity or "unknown"))]
    shown += [
        (e.source, f"{e.identity}\n{e.score:.3f}")
        for e in evidence.nearest
        if e.source and Path(e.source).is_file()
    ]
    images = model.prepare([s for s, _ in shown])
    figure = _figure(len(shown), 3.0)
    axes = figure.subplots(1, len(shown), squeeze=False)[0]
    for axis, image, (_, caption) in zip(axes, images, shown, strict=True):
        picture = _display(image)
        axis.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
        axis.set_title(caption, fontsize=8)
        axis.set_xticks([])
        axis.set_yticks([])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path
