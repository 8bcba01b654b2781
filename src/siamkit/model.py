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

from siamkit.calibration import Calibrator, Probability, require_calibration, saved_calibration
from siamkit.checkpoint import atomic_write_text, load_tensors, load_weights, save_tensors
from siamkit.data.transforms import build_preprocessor
from siamkit.encoders import build_encoder
from siamkit.errors import CheckpointError, DataError
from siamkit.heads import HEADS
from siamkit.registry import ComponentSpec
from siamkit.siamese import SiameseNetwork
from siamkit.two_tower import TwoTowerNetwork

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 2  # 2: two-tower folders (encoder_b); single-encoder ones are still 1
TOWER_B_ASSETS = "tower_b"  # sub-folder of tower b's encoder files (a vocabulary...)


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
    encoder_b: ComponentSpec | None = None  # a two-tower model's second tower
    preprocess_b: ComponentSpec | None = None
    encoder_b_assets: bool = False


class Model:
    """A loaded siamese model: ``embed`` raw inputs, ``score`` pairs, ``decide`` at the threshold.

    Inputs are whatever the preprocessing accepts: image paths, PIL images or arrays for image
    models, WAV paths for audio models, strings for text models, vectors for vector models. A
    two-tower model sends each input to the tower whose preprocessing accepts it (see
    :meth:`tower_of`), so ``score(["seven"], ["7_theo_0.wav"])`` compares a word with a recording.
    """

    def __init__(self, network: SiameseNetwork | TwoTowerNetwork, config: ModelConfig) -> None:
        self.network = network.eval()
        self.config = config
        spec, spec_b = config.preprocess, config.preprocess_b
        self.preprocess = None if spec is None else build_preprocessor(spec)
        self.preprocess_b = None if spec_b is None else build_preprocessor(spec_b)

    @property
    def two_tower(self) -> bool:
        """Whether this model has two towers (two encoders, one space)."""
        return isinstance(self.network, TwoTowerNetwork)

    def tower_of(self, item: Any) -> str:
        """The tower (``"a"`` or ``"b"``) of a two-tower model that takes ``item``: the one whose
        preprocessing accepts it (an audio preprocessor takes ``.wav`` paths, an image one
        existing files), else the tower without preprocessing (raw strings, e.g. text)."""
        towers = (("b", self.preprocess_b), ("a", self.preprocess))
        for name, pre in towers:
            if pre is not None and _accepts(pre, item):
                return name
        for name, pre in towers:
            if pre is None and isinstance(item, str):
                return name
        raise DataError(f"{item!r}: neither tower of this two-tower model takes this input")

    @property
    def threshold(self) -> float | None:
        """Scores at or above the threshold are judged "same"; ``None`` if never calibrated."""
        return self.config.threshold

    def prepare(self, inputs: Sequence[Any], tower: str = "a") -> Any:
        """Raw inputs -> one model batch (the saved preprocessing, or the inputs as they are)."""
        if len(inputs) == 0:
            raise DataError("no inputs given")
        pre = self.preprocess_b if tower == "b" else self.preprocess
        if pre is None:
            return inputs if isinstance(inputs, Tensor) else list(inputs)
        return pre(inputs)

    @torch.no_grad()
    def embed(
        self, inputs: Sequence[Any], batch_size: int = 128, tower: str | None = None
    ) -> Tensor:
        """Embeddings (N, D) of raw inputs, computed in batches. A two-tower model embeds each
        input with ``tower`` ("a" or "b"), by default the tower that takes it (:meth:`tower_of`)."""
        if len(inputs) == 0:
            raise DataError("no inputs given")
        if self.two_tower and tower is None:
            return self._embed_routed(inputs, batch_size)
        device = next(self.network.parameters()).device
        parts = []
        for start in range(0, len(inputs), batch_size):
            batch = self.prepare(inputs[start : start + batch_size], tower or "a")
            if isinstance(batch, Tensor):
                batch = batch.to(device)
            embedded = self.network.embed(batch, tower) if tower else self.network.embed(batch)
            parts.append(embedded.float().cpu())
        return torch.cat(parts)

    def _embed_routed(self, inputs: Sequence[Any], batch_size: int) -> Tensor:
        """Each input embedded by the tower that takes it, in the order given."""
        towers = [self.tower_of(x) for x in inputs]
        out: Tensor | None = None
        for name in dict.fromkeys(towers):
            where = [i for i, t in enumerate(towers) if t == name]
            part = self.embed([inputs[i] for i in where], batch_size, tower=name)
            out = part.new_zeros(len(inputs), part.shape[1]) if out is None else out
            out[where] = part
        assert out is not None
        return out

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

    def calibration(self, k: int | None = None, aggregate: str = "mean") -> Calibrator | None:
        """The saved score -> P(same) map (pairs, or ``k`` references and ``aggregate``), or
        ``None`` for a folder saved without one."""
        return saved_calibration(self.config.extra, k, aggregate)

    def probability(
        self, scores: Any, k: int | None = None, aggregate: str = "mean"
    ) -> Probability:
        """P(same) of each score with its bootstrap interval: ``p, low, high =
        model.probability(model.score(a, b))``; ``k``/``aggregate`` for reference-set scores.
        Raises :class:`CheckpointError` ("not calibrated") when the folder has no map; see
        :mod:`siamkit.calibration`."""
        values = scores.detach().cpu().numpy() if isinstance(scores, Tensor) else scores
        return require_calibration(self.calibration(k, aggregate)).probability(values)


def save_model(
    folder: str | Path,
    network: SiameseNetwork,
    encoder: ComponentSpec | dict[str, Any],
    head: ComponentSpec | dict[str, Any],
    preprocess: ComponentSpec | dict[str, Any] | None = None,
    threshold: float | None = None,
    extra: dict[str, Any] | None = None,
    encoder_b: ComponentSpec | dict[str, Any] | None = None,
    preprocess_b: ComponentSpec | dict[str, Any] | None = None,
) -> Path:
    """Write ``network`` and how to rebuild it into ``folder``; returns the folder. A
    :class:`~siamkit.two_tower.TwoTowerNetwork` also needs its second tower's ``encoder_b``
    spec (and ``preprocess_b``); ``encoder`` and ``preprocess`` describe tower a."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    two = isinstance(network, TwoTowerNetwork)
    if two != (encoder_b is not None):
        raise CheckpointError("save_model: give encoder_b exactly when saving a two-tower network")
    first = network.encoder_a if two else network.encoder
    has_assets = hasattr(first, "save_assets")
    if has_assets:
        first.save_assets(folder)
    b_assets = two and hasattr(network.encoder_b, "save_assets")
    if b_assets:
        (folder / TOWER_B_ASSETS).mkdir(exist_ok=True)
        network.encoder_b.save_assets(folder / TOWER_B_ASSETS)
    config = ModelConfig(
        format_version=FORMAT_VERSION if two else 1,
        encoder=ComponentSpec.model_validate(encoder),
        head=ComponentSpec.model_validate(head),
        preprocess=None if preprocess is None else ComponentSpec.model_validate(preprocess),
        threshold=threshold,
        encoder_assets=has_assets,
        extra=extra or {},
        encoder_b=None if encoder_b is None else ComponentSpec.model_validate(encoder_b),
        preprocess_b=None if preprocess_b is None else ComponentSpec.model_validate(preprocess_b),
        encoder_b_assets=b_assets,
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


def update_config(
    folder: str | Path, extra: dict[str, Any] | None = None, **fields: Any
) -> ModelConfig:
    """Rewrite ``folder/config.json`` (atomically) with new values of its ``fields`` (e.g.
    ``threshold=0.7``) and the keys of ``extra`` merged into its extra, keeping everything else;
    the weights are not touched. Returns the new config."""
    folder = Path(folder)
    config = read_config(folder)
    if extra:
        fields["extra"] = {**config.extra, **extra}
    config = config.model_copy(update=fields)
    atomic_write_text(folder / CONFIG_FILE, config.model_dump_json(indent=2))
    return config


def build_network(
    config: ModelConfig, assets_dir: Path | None = None
) -> SiameseNetwork | TwoTowerNetwork:
    """The (untrained) network a config describes (two towers when it names ``encoder_b``)."""
    extra = {"assets_dir": assets_dir} if config.encoder_assets and assets_dir else {}
    encoder = build_encoder(config.encoder, **extra)
    if config.encoder_b is None:
        return SiameseNetwork(encoder, HEADS.build(config.head))
    extra_b = {}
    if config.encoder_b_assets and assets_dir:
        extra_b = {"assets_dir": assets_dir / TOWER_B_ASSETS}
    encoder_b = build_encoder(config.encoder_b, **extra_b)
    return TwoTowerNetwork(encoder, encoder_b, HEADS.build(config.head))


def _accepts(pre: Any, item: Any) -> bool:
    """Whether preprocessor ``pre`` takes ``item``: its own ``accepts`` test, else any non-string
    input or a string naming an existing file."""
    if hasattr(pre, "accepts"):
        return bool(pre.accepts(item))
    return not isinstance(item, str) or Path(item).is_file()


def load(folder: str | Path, device: str = "cpu") -> Model:
    """Load a model folder written by :func:`save_model` (or ``siamkit train``)."""
    folder = Path(folder)
    config = read_config(folder)
    network = build_network(config, folder)
    load_weights(network, load_tensors(folder / WEIGHTS_FILE), folder / WEIGHTS_FILE)
    return Model(network.to(device), config)
