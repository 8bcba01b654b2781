"""The ``"onnx"`` back-end of the server: a folder from ``siamkit export``, run by ONNX Runtime
(:func:`siamkit.runtime.load_onnx`), with numpy preprocessing and numpy heads. Nothing here
imports torch, so ``siamkit serve FOLDER --runtime onnx`` runs where torch is not installed.

Uploads are decoded by :func:`siamkit.imaging.open_image` (the CLI's and the torch server's
function, with the server's pixel limit) and preprocessed by the runtime's numpy twin of the
saved preprocessor; scores, decisions, reference sets and the gallery threshold follow
:class:`siamkit.serving.model.ServedModel`, on numpy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from siamkit.errors import ConfigError
from siamkit.gallery.openset import KEY, gallery_cosine
from siamkit.imaging import open_image
from siamkit.runtime.heads import reference_aggregates, saved_reference_threshold
from siamkit.runtime.model import OnnxModel, load_onnx
from siamkit.runtime.preprocess import ImagePreprocess
from siamkit.serving.backend import (
    TEXT_CHUNK,
    Kind,
    check_aggregate,
    in_length_order,
    served_kind,
    served_name,
    verdict,
)


class OnnxServedModel:
    """A loaded :class:`~siamkit.runtime.OnnxModel` and what serving needs from it."""

    runtime = "onnx"

    def __init__(self, model: OnnxModel, name: str, max_pixels: int) -> None:
        self.model, self.name, self.max_pixels = model, name, max_pixels
        preprocess = model.config.preprocess
        if preprocess is not None:
            saved = preprocess["name"]
        else:  # texts need the export's tokenizer; a graph of bare tensors is not served
            saved = None if model.tokenizer is not None else model.kind
        self.kind: Kind = served_kind(f"model {name}", saved)

    @classmethod
    def load(
        cls, folder: str | Path, max_pixels: int, threads: int | None = None
    ) -> OnnxServedModel:
        """Load an exported folder for serving (``threads``: ONNX Runtime intra-op threads)."""
        return cls(load_onnx(folder, threads), served_name(folder), max_pixels)

    @property
    def threshold(self) -> float | None:
        """The model's pair threshold (``score >= threshold`` is "same")."""
        return self.model.threshold

    def gallery_threshold(self, size: int) -> float | None:
        """The cosine threshold of /v1/identify for a gallery of ``size`` people, as the torch
        back-end finds it (``None``: a head without a cosine scale, or no threshold)."""
        config = self.model.config
        normalized = bool(config.encoder.get("params", {}).get("normalize"))
        calibration = config.extra.get(KEY)
        try:
            return gallery_cosine(
                calibration, config.threshold, config.head.get("name"), normalized, size
            )
        except ConfigError:
            return None

    def prepare(self, blobs: Sequence[tuple[str, bytes]]) -> list[np.ndarray]:
        """Encoded images -> preprocessed (C, H, W) arrays (runs on a worker thread)."""
        preprocess: ImagePreprocess = self.model.preprocess
        return [
            preprocess.one(open_image(data, preprocess.mode, self.max_pixels, name))
            for name, data in blobs
        ]

    def run(self, items: list[Any]) -> np.ndarray:
        """One run of the graph: (N, D) embeddings of preprocessed images or of texts."""
        if self.kind == "image":
            return self.model.forward({self.model.config.onnx["inputs"][0]: np.stack(items)})
        return in_length_order(
            list(items), lambda texts: self.model.forward(self.model.prepare(texts)),
            TEXT_CHUNK, np.concatenate,
        )  # fmt: skip

    def warm_up(self, batch: int) -> None:
        """Run the graph once on a batch of one and of ``batch`` blank inputs."""
        if self.kind == "image":
            preprocess: ImagePreprocess = self.model.preprocess
            height, width = preprocess.size
            inputs: list[Any] = [preprocess.one(Image.new(preprocess.mode, (width, height)))]
        else:
            inputs = ["warm up"]
        self.run(inputs)
        self.run(inputs * batch)

    def pair(self, a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
        """Verification of two embeddings (D,) at the model's threshold."""
        score = float(self.model.head.score(np.asarray(a)[None], np.asarray(b)[None])[0])
        return verdict(score, self.threshold)

    def against_references(
        self, embeddings: np.ndarray, aggregate: str | None = None
    ) -> dict[str, Any]:
        """Verification of ``embeddings[0]`` against the K references ``embeddings[1:]``, with
        the model's aggregate and saved thresholds (as ``siamkit verify --references``)."""
        extra = self.model.config.extra
        aggregate = check_aggregate(aggregate or extra.get("reference_aggregate", "mean"))
        k = len(embeddings) - 1
        normalisation = extra.get("reference_normalisation", "none")
        scores = reference_aggregates(self.model.head, embeddings[0], embeddings[1:], normalisation)
        saved = saved_reference_threshold(extra, k, aggregate)
        threshold = saved if saved is not None else self.threshold
        return verdict(scores[aggregate], threshold) | {"aggregate": aggregate, "references": k}
