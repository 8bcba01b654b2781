"""A trained model as users hold it: network + preprocessing + decision threshold, in a folder.

A model folder holds ``config.json`` (how to rebuild the encoder, head and preprocessing, the
threshold and free-form metadata), ``model.safetensors`` (the weights) and any files the encoder
owns (a vocabulary, a tokenizer). Loading never unpickles.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor

from siamkit.checkpoint import atomic_write_text, load_tensors, load_weights, save_tensors
from siamkit.data.transforms import build_preprocessor
from siamkit.encoders import build_encoder
from siamkit.errors import CheckpointError, DataError
from siamkit.heads import HEADS
from siamkit.registry import ComponentSpec
from siamkit.siamese import SiameseNetwork

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


class ModelConfig(BaseModel):
    """The contents of a model folder's ``config.json``."""

    model_config = ConfigDict(extra="forbid")
    format_version: int = FORMAT_VERSION
    encoder: ComponentSpec
    head: ComponentSpec
    preprocess: ComponentSpec | None = None
    threshold: float | None = None
    encoder_assets: bool = False
    extra: dict[str, Any] = Field(default_factory=dict)


class Model:
    """A loaded siamese model: ``embed`` raw inputs, ``score`` pairs, ``decide`` at the threshold.

    Inputs are whatever the preprocessing accepts: image paths, PIL images or arrays for image
    models, strings for text models, vectors for vector models.
    """

    def __init__(self, network: SiameseNetwork, config: ModelConfig) -> None:
        self.network = network.eval()
        self.config = config
        spec = config.preprocess
        self.preprocess = None if spec is None else build_preprocessor(spec)

    @property
    def threshold(self) -> float | None:
        """Scores at or above the threshold are judged "same"; ``None`` if never calibrated."""
        return self.config.threshold

    def prepare(self, inputs: Sequence[Any]) -> Any:
        """Raw inputs -> one model batch (the saved preprocessing, or the inputs as they are)."""
        if len(inputs) == 0:
            raise DataError("no inputs given")
        if self.preprocess is None:
            return inputs if isinstance(inputs, Tensor) else list(inputs)
        return self.preprocess(inputs)

    @torch.no_grad()
    def embed(self, inputs: Sequence[Any], batch_size: int = 128) -> Tensor:
        """Embeddings (N, D) of raw inputs, computed in batches."""
        if len(inputs) == 0:
            raise DataError("no inputs given")
        device = next(self.network.parameters()).device
        parts = []
        for start in range(0, len(inputs), batch_size):
            batch = self.prepare(inputs[start : start + batch_size])
            if isinstance(batch, Tensor):
                batch = batch.to(device)
            parts.append(self.network.embed(batch).float().cpu())
        return torch.cat(parts)

    @torch.no_grad()
    def score(self, a: Sequence[Any], b: Sequence[Any]) -> Tensor:
        """Similarity of ``a[i]`` and ``b[i]`` for each i (higher = more similar)."""
        if len(a) != len(b):
            raise DataError(f"score: {len(a)} first inputs but {len(b)} second inputs")
        return self.network.head(self.embed(a), self.embed(b))

    @torch.no_grad()
    def pairwise(self, queries: Tensor, references: Tensor) -> Tensor:
        """Scores (Q, R) of query embeddings against reference embeddings."""
        return self.network.head.pairwise(queries, references)

    def decide(self, scores: Tensor) -> Tensor:
        """``True`` where the score reaches the calibrated threshold."""
        if self.threshold is None:
            raise CheckpointError("this model has no calibrated threshold; evaluate it first")
        return scores >= self.threshold


def save_model(
    folder: str | Path,
    network: SiameseNetwork,
    encoder: ComponentSpec | dict[str, Any],
    head: ComponentSpec | dict[str, Any],
    preprocess: ComponentSpec | dict[str, Any] | None = None,
    threshold: float | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``network`` and how to rebuild it into ``folder``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    has_assets = hasattr(network.encoder, "save_assets")
    if has_assets:
        network.encoder.save_assets(folder)
    config = ModelConfig(
        encoder=ComponentSpec.model_validate(encoder),
        head=ComponentSpec.model_validate(head),
        preprocess=None if preprocess is None else ComponentSpec.model_validate(preprocess),
        threshold=threshold,
        encoder_assets=has_assets,
        extra=extra or {},
    )
    save_tensors(folder / WEIGHTS_FILE, network.state_dict(), {"format": "siamkit"})
    atomic_write_text(folder / CONFIG_FILE, config.model_dump_json(indent=2))
    return folder


def read_config(folder: Path) -> ModelConfig:
    """Parse and validate ``folder/config.json``."""
    path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a model folder (no such directory)")
    try:
        config = ModelConfig.model_validate(json.loads(path.read_text()))
    except FileNotFoundError as error:
        raise CheckpointError(f"{path}: missing; is {folder} a siamkit model folder?") from error
    except (json.JSONDecodeError, ValidationError) as error:
        first = str(error).splitlines()[0]
        raise CheckpointError(f"{path}: not a valid siamkit model config ({first})") from error
    if config.format_version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {config.format_version} is newer than this siamkit "
            f"understands ({FORMAT_VERSION}); upgrade siamkit"
        )
    return config


def build_network(config: ModelConfig, assets_dir: Path | None = None) -> SiameseNetwork:
    """The (untrained) network a config describes."""
    extra = {"assets_dir": assets_dir} if config.encoder_assets and assets_dir else {}
    encoder = build_encoder(config.encoder, **extra)
    return SiameseNetwork(encoder, HEADS.build(config.head))


def load(folder: str | Path, device: str = "cpu") -> Model:
    """Load a model folder written by :func:`save_model` (or ``siamkit train``)."""
    folder = Path(folder)
    config = read_config(folder)
    network = build_network(config, folder)
    load_weights(network, load_tensors(folder / WEIGHTS_FILE), folder / WEIGHTS_FILE)
    return Model(network.to(device), config)
