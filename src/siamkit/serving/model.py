"""The ``"torch"`` back-end of the server (see :mod:`siamkit.serving.backend`): a model folder
as the server runs it: decode + preprocess on worker threads, forward passes on the model thread
(see :mod:`siamkit.serving.batcher`), scores and decisions as ``siamkit verify`` makes them.

An image model decodes uploads with :func:`siamkit.data.transforms.open_image` (the CLI's
function, with the server's pixel limit) and its saved preprocessing; a text model takes strings.
An image network is prepared for inference once (:func:`for_inference`): batch norms folded
into the convolutions before them, weights and batches in channels-last layout. Embeddings stay
those of :meth:`siamkit.model.Model.embed` (to float rounding); the faces Conv-4 runs about 4x
faster on one CPU thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from siamkit.data.transforms import ImagePreprocessor, open_image
from siamkit.errors import ConfigError
from siamkit.evaluation.reference_set import normalised_aggregates, saved_reference_threshold
from siamkit.gallery.images import cosine_threshold
from siamkit.model import Model, load
from siamkit.serving.backend import (
    TEXT_CHUNK,
    Kind,
    check_aggregate,
    in_length_order,
    served_kind,
    served_name,
    verdict,
)


def fold_batch_norms(module: nn.Module) -> int:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` in an
    ``nn.Sequential`` into that convolution (in place); returns how many were folded."""
    folded = 0
    for child in module.children():
        folded += fold_batch_norms(child)
    if isinstance(module, nn.Sequential):
        layers = list(module)
        for i in range(len(layers) - 1):
            conv, norm = layers[i], layers[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                if norm.training or not norm.track_running_stats:
                    continue
                module[i] = fuse_conv_bn_eval(conv, norm)
                module[i + 1] = nn.Identity()
                folded += 1
    return folded


def for_inference(network: nn.Module) -> nn.Module:
    """An image network made faster for inference, in place: batch norms folded into their
    convolutions, channels-last weights (feed it channels-last batches)."""
    network.eval()
    fold_batch_norms(network)
    return network.to(memory_format=torch.channels_last)


class ServedModel:
    """A loaded :class:`~siamkit.model.Model` and what serving needs from it."""

    runtime = "torch"

    def __init__(self, model: Model, name: str, max_pixels: int) -> None:
        self.model, self.name, self.max_pixels = model, name, max_pixels
        self.network = model.network
        self.head = model.network.head
        preprocess = model.config.preprocess
        self.kind: Kind = served_kind(
            f"model {name}", preprocess.name if preprocess else None, model.two_tower
        )
        if self.kind == "image":
            for_inference(self.network)

    @classmethod
    def load(cls, folder: str | Path, max_pixels: int, threads: int | None = None) -> ServedModel:
        """Load a model folder for serving (``threads``: torch's intra-op threads)."""
        if threads:
            torch.set_num_threads(threads)
        return cls(load(Path(folder).resolve()), served_name(folder), max_pixels)

    @property
    def threshold(self) -> float | None:
        """The model's pair threshold (``score >= threshold`` is "same")."""
        return self.model.threshold

    def gallery_threshold(self, size: int) -> float | None:
        """The cosine threshold of /v1/identify for a gallery of ``size`` people (the model
        folder's per-size calibration; ``None``: a head without a cosine scale, or no threshold)."""
        try:
            return cosine_threshold(self.model, size)
        except ConfigError:
            return None

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
            if self.kind == "image":
                batch = torch.stack(items).contiguous(memory_format=torch.channels_last)
                return self.network.embed(batch).float()
            return self._embed_texts(list(items))

    def _embed_texts(self, texts: list[str]) -> Tensor:
        """Texts sorted by length and embedded :data:`TEXT_CHUNK` at a time (less padding than
        one batch of short and long texts), returned in their order."""
        return in_length_order(
            texts, lambda chunk: self.network.embed(chunk).float(), TEXT_CHUNK, torch.cat
        )

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
        return verdict(score, threshold)

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
        aggregate = check_aggregate(aggregate or extra.get("reference_aggregate", "mean"))
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
