"""An exported model folder run by ONNX Runtime: the ``embed`` / ``score`` / ``pairwise`` /
``decide`` API of :class:`siamkit.model.Model`, with numpy arrays instead of tensors.

The folder (written by ``siamkit export``) holds ``encoder.onnx``, the model's ``config.json``
(whose ``extra["onnx"]`` block says what the graph takes) and the tokenizer assets. Loading it
needs onnxruntime, numpy, Pillow and, for sentence-transformers, ``tokenizers``; never torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from siamkit.calibration import Calibrator, Probability, require_calibration, saved_calibration
from siamkit.errors import CheckpointError, DataError
from siamkit.runtime.heads import NumpyHead, reference_aggregates, saved_reference_threshold
from siamkit.runtime.preprocess import PieceTokenizer, WordTokenizer, build_preprocess

ONNX_FILE = "encoder.onnx"


@dataclass
class RuntimeConfig:
    """The parts of ``config.json`` the runtime uses (plain JSON, no pydantic)."""

    encoder: dict[str, Any]
    head: dict[str, Any]
    preprocess: dict[str, Any] | None = None
    threshold: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def onnx(self) -> dict[str, Any]:
        """The export manifest: input kind, graph inputs, opset, quantisation, parity check."""
        return self.extra["onnx"]


def read_export_config(folder: Path) -> RuntimeConfig:
    """Parse ``folder/config.json`` of an exported model; clear errors for anything else."""
    path = folder / "config.json"
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not an exported model folder (no such directory)")
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise CheckpointError(
            f"{path}: missing; is {folder} a folder from siamkit export?"
        ) from error
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from error
    if "onnx" not in raw.get("extra", {}) or not (folder / ONNX_FILE).is_file():
        raise CheckpointError(
            f"{folder}: not an exported model (expected {ONNX_FILE} and config.json with an "
            f"'onnx' block); run siamkit export {folder} --format onnx on the model folder"
        )
    keys = ("encoder", "head", "preprocess", "threshold", "extra")
    return RuntimeConfig(**{k: raw.get(k) for k in keys if k in raw})


class OnnxModel:
    """A siamese model on ONNX Runtime: ``embed`` raw inputs (image paths, PIL images, arrays,
    vectors or strings, as the saved preprocessing takes), ``score`` pairs, ``decide`` at the
    saved threshold, ``score_references`` against K enrolled references.

    Example::

        from siamkit.runtime import load_onnx
        model = load_onnx("runs/faces/model-onnx")
        scores = model.score(["a.pgm"], ["b.pgm"])
        model.decide(scores)  # array([ True])
    """

    def __init__(self, folder: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.folder = Path(folder)
        self.config = read_export_config(self.folder)
        manifest = self.config.onnx
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(self.folder / ONNX_FILE), options, providers=["CPUExecutionProvider"]
        )
        self.kind = manifest["kind"]
        self.head = NumpyHead(self.config.head["name"], manifest.get("head_weights"))
        self.preprocess = build_preprocess(self.config.preprocess)
        self.tokenizer: Any = None
        if self.kind == "text_rnn":
            self.tokenizer = WordTokenizer(
                self.folder / "vocab.json", manifest["max_length"],
                manifest.get("subword_buckets", 0), manifest.get("subword_sizes", (3, 5)),
            )  # fmt: skip
        elif self.kind == "sentence_transformer":
            self.tokenizer = PieceTokenizer(
                self.folder / "tokenizer.json", manifest["max_length"], manifest["pad_id"],
                manifest["pad_token"], manifest["inputs"], manifest.get("lowercase", False),
            )  # fmt: skip

    @property
    def threshold(self) -> float | None:
        """Scores at or above it are judged "same"; ``None`` if the model was never calibrated."""
        return self.config.threshold

    def prepare(self, inputs: Sequence[Any]) -> dict[str, np.ndarray]:
        """Raw inputs -> the graph's input arrays."""
        if len(inputs) == 0:
            raise DataError("no inputs given")
        if self.tokenizer is not None:
            if isinstance(inputs, str) or not all(isinstance(t, str) for t in inputs):
                raise DataError(f"a {self.kind} model expects a list of strings")
            return self.tokenizer(list(inputs))
        if self.preprocess is None:
            batch = np.stack([np.asarray(x, dtype=np.float32) for x in inputs])
        else:
            batch = np.stack([self.preprocess.one(x) for x in inputs])
        return {self.config.onnx["inputs"][0]: batch.astype(np.float32, copy=False)}

    def embed(self, inputs: Sequence[Any], batch_size: int = 128) -> np.ndarray:
        """Embeddings (N, D) float32 of raw inputs, computed in batches."""
        if len(inputs) == 0:
            raise DataError("no inputs given")
        parts = [
            self.forward(self.prepare(inputs[start : start + batch_size]))
            for start in range(0, len(inputs), batch_size)
        ]
        return np.concatenate(parts)

    def forward(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """One run of the graph on prepared input arrays (:meth:`prepare`'s): (N, D) float32."""
        return self.session.run(None, arrays)[0].astype(np.float32, copy=False)

    def score(self, a: Sequence[Any], b: Sequence[Any]) -> np.ndarray:
        """Similarity of ``a[i]`` and ``b[i]`` for each i (higher = more similar)."""
        if len(a) != len(b):
            raise DataError(f"score: {len(a)} first inputs but {len(b)} second inputs")
        return self.head.score(self.embed(a), self.embed(b))

    def pairwise(self, queries: np.ndarray, references: np.ndarray) -> np.ndarray:
        """Scores (Q, R) of query embeddings against reference embeddings."""
        return self.head.pairwise(np.asarray(queries), np.asarray(references))

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """``True`` where the score reaches the calibrated threshold."""
        if self.threshold is None:
            raise CheckpointError("this model has no calibrated threshold; evaluate it first")
        return np.asarray(scores) >= self.threshold

    def score_references(self, questioned: Any, references: Sequence[Any]) -> dict[str, float]:
        """Score one input against K >= 1 references of a claimed identity: ``mean``, ``max`` and
        ``centroid`` (spread-normalised if the model was saved so), higher = more likely same."""
        if len(references) == 0:
            raise DataError("reference-set verification needs at least one reference")
        embeddings = self.embed([questioned, *references])
        normalisation = self.config.extra.get("reference_normalisation", "none")
        return reference_aggregates(self.head, embeddings[0], embeddings[1:], normalisation)

    def calibration(self, k: int | None = None, aggregate: str = "mean") -> Calibrator | None:
        """The saved score -> P(same) map (pairs, or ``k`` references), ``None`` if not
        calibrated; the same JSON as :meth:`siamkit.model.Model.calibration`, read with numpy."""
        return saved_calibration(self.config.extra, k, aggregate)

    def probability(
        self, scores: Any, k: int | None = None, aggregate: str = "mean"
    ) -> Probability:
        """P(same) of each score and its bootstrap interval (``p, low, high``); raises
        :class:`CheckpointError` when the model is not calibrated."""
        return require_calibration(self.calibration(k, aggregate)).probability(scores)

    def reference_threshold(self, k: int, aggregate: str) -> float | None:
        """The threshold for ``k`` references and ``aggregate`` (else the model's threshold)."""
        saved = saved_reference_threshold(self.config.extra, k, aggregate)
        return saved if saved is not None else self.threshold


def load_onnx(folder: str | Path, threads: int | None = None) -> OnnxModel:
    """Load a folder written by ``siamkit export MODEL --format onnx`` (see :class:`OnnxModel`)."""
    return OnnxModel(folder, threads)
