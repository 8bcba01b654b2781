"""The model as the server runs it: decode + preprocess on worker threads, forward passes on the
model thread (see :mod:`siamkit.serving.batcher`), scores and decisions as ``siamkit verify``
makes them.

An image model decodes uploads with :func:`siamkit.data.transforms.open_image` (the CLI's
function, with the server's pixel limit) and its saved preprocessing; a text model takes strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from torch import Tensor

from siamkit.data.transforms import ImagePreprocessor, open_image
from siamkit.errors import ConfigError, DataError
from siamkit.evaluation.reference_set import (
    AGGREGATES,
    normalised_aggregates,
    saved_reference_threshold,
)
from siamkit.gallery.images import cosine_threshold
from siamkit.model import Model, load

Kind = Literal["image", "text"]


class ServedModel:
    """A loaded :class:`~siamkit.model.Model` and what serving needs from it."""

    def __init__(self, model: Model, name: str, max_pixels: int) -> None:
        self.model, self.name, self.max_pixels = model, name, max_pixels
        self.network = model.network
        self.head = model.network.head
        if isinstance(model.preprocess, ImagePreprocessor):
            self.kind: Kind = "image"
        elif model.preprocess is None:
            self.kind = "text"
        else:
            raise ConfigError(
                f"model {name}: siamkit serve serves image and text models, not "
                f"{type(model.preprocess).__name__} inputs"
            )
        try:
            self.gallery_threshold = cosine_threshold(model)
        except ConfigError:
            self.gallery_threshold = None

    @classmethod
    def load(cls, folder: str | Path, max_pixels: int) -> ServedModel:
        """Load a model folder for serving."""
        folder = Path(folder).resolve()
        name = folder.parent.name if folder.name == "model" else folder.name  # runs/faces/model
        return cls(load(folder), name, max_pixels)

    @property
    def threshold(self) -> float | None:
        """The model's pair threshold (``score >= threshold`` is "same")."""
        return self.model.threshold

    def prepare(self, blobs: Sequence[tuple[str, bytes]]) -> list[Tensor]:
        """Encoded images -> preprocessed (C, H, W) tensors (runs on a worker thread)."""
        preprocess: ImagePreprocessor = self.model.preprocess  # type: ignore[assignment]
        return [
            preprocess.one(open_image(data, preprocess.mode, self.max_pixels, name))
            for name, data in blobs
        ]

    def run(self, items: list[Any]) -> Tensor:
        """One forward pass: (N, D) embeddings of preprocessed images or of texts."""
        with torch.inference_mode():
            batch = torch.stack(items) if self.kind == "image" else list(items)
            return self.network.embed(batch).float()

    def warm_up(self, batch: int) -> None:
        """Run the model once on a batch of one and of ``batch`` blank inputs."""
        if self.kind == "image":
            preprocess: ImagePreprocessor = self.model.preprocess  # type: ignore[assignment]
            height, width = preprocess.size
            blank = preprocess.one(Image.new(preprocess.mode, (width, height)))
            inputs: list[Any] = [blank] * batch
        else:
            inputs = ["warm up"] * batch
        self.run(inputs[:1])
        self.run(inputs)

    def verdict(self, score: float, threshold: float | None) -> dict[str, Any]:
        """The verify body: score, threshold and decision (null without a threshold)."""
        decision = None if threshold is None else ("same" if score >= threshold else "different")
        return {"score": score, "threshold": threshold, "decision": decision}

    def pair(self, a: Tensor, b: Tensor) -> dict[str, Any]:
        """Verification of two embeddings (D,) at the model's threshold."""
        with torch.inference_mode():
            score = float(self.head(a[None], b[None])[0])
        return self.verdict(score, self.threshold)

    def against_references(
        self, embeddings: Tensor, aggregate: str | None = None
    ) -> dict[str, Any]:
        """Verification of ``embeddings[0]`` against the K references ``embeddings[1:]``, as
        ``siamkit verify --references`` does it (the model's aggregate and saved thresholds)."""
        extra = self.model.config.extra
        aggregate = aggregate or extra.get("reference_aggregate", "mean")
        if aggregate not in AGGREGATES:
            raise DataError(f"aggregate must be one of {', '.join(AGGREGATES)}; got {aggregate!r}")
        k = len(embeddings) - 1
        normalisation = extra.get("reference_normalisation", "none")
        with torch.inference_mode():
            scores = normalised_aggregates(
                self.head, embeddings[:1], embeddings[None, 1:], normalisation
            )
        saved = saved_reference_threshold(extra, k, aggregate)
        threshold = saved if saved is not None else self.threshold
        body = self.verdict(float(scores[aggregate][0]), threshold)
        return body | {"aggregate": aggregate, "references": k}
