"""The small interface every model runtime of the server implements, and the function that picks
one.

A back-end turns uploaded images (or texts) into embeddings and embeddings into verdicts; the
routes, the batcher, the limits, the auth and the metrics do not know which one runs. Two exist:

- ``"torch"`` (:class:`siamkit.serving.model.ServedModel`): a model folder from ``siamkit
  train``, run by PyTorch;
- ``"onnx"`` (:class:`siamkit.serving.onnx_model.OnnxServedModel`): a folder from ``siamkit
  export``, run by ONNX Runtime through :func:`siamkit.runtime.load_onnx`. Serving it never
  imports torch.

``"auto"`` picks ``"onnx"`` for a folder holding ``encoder.onnx`` and ``"torch"`` otherwise. Each
back-end's module is imported only when it is chosen. Nothing in this module imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from siamkit.errors import ConfigError, DataError

Kind = Literal["image", "text"]
RUNTIMES = ("auto", "torch", "onnx")
ONNX_FILE = "encoder.onnx"  # siamkit.export.ONNX_FILE (that module imports torch)
AGGREGATES = ("mean", "max", "centroid")  # siamkit.evaluation.reference_set.AGGREGATES
# texts per forward pass, sorted by length: all-MiniLM-L6-v2 on STS-B dev sentences embeds
# 32 texts 1.3-1.45x faster in chunks of 8 than in one padded batch, and 5-20% faster than in
# chunks of 16, at 1 and 2 torch threads (benchmarks/serve_load.py, text_forward_without_http)
TEXT_CHUNK = 8


class ModelBackend(Protocol):
    """What the server needs from a loaded model, whatever runs it.

    Embeddings are (N, D) float32 rows: a torch tensor or a numpy array, whichever the back-end
    computes; the routes read them with ``numpy.asarray`` and hand rows back to :meth:`pair`
    and :meth:`against_references`.
    """

    runtime: str  # "torch" or "onnx"
    name: str  # shown by /ready
    kind: Kind
    max_pixels: int

    @property
    def threshold(self) -> float | None:
        """The pair threshold (``score >= threshold`` is "same"), None if never calibrated."""
        ...

    def gallery_threshold(self, size: int) -> float | None:
        """The cosine threshold of /v1/identify ("unknown" below it) for a gallery of ``size``
        enrolled people: the open-set rate asked at calibration holds per probe at that size."""
        ...

    def prepare(self, blobs: Sequence[tuple[str, bytes]]) -> list[Any]:
        """Encoded images -> preprocessed inputs of :meth:`run` (on a decode thread)."""
        ...

    def run(self, items: list[Any]) -> Any:
        """One forward pass: (N, D) embeddings of prepared images or of texts (model thread)."""
        ...

    def warm_up(self, batch: int) -> None:
        """Run the model on a batch of one and of ``batch`` blank inputs."""
        ...

    def pair(self, a: Any, b: Any) -> dict[str, Any]:
        """The verify body of two embedding rows (D,) at the model's threshold."""
        ...

    def against_references(self, embeddings: Any, aggregate: str | None = None) -> dict[str, Any]:
        """The verify body of ``embeddings[0]`` against the K references ``embeddings[1:]``."""
        ...


def served_kind(model: str, preprocess: str | None, two_tower: bool = False) -> Kind:
    """What the server takes from ``model``, named by its saved preprocessing: images
    (``"image"``) or texts (none). Any other model (speech, vectors, signatures, two towers) is
    refused in one line, by ``siamkit serve`` before it starts and by both back-ends."""
    if not two_tower and preprocess == "image":
        return "image"
    if not two_tower and preprocess is None:
        return "text"
    if two_tower:
        what = "two-tower models"
    elif preprocess == "audio":
        what = "speech models (.wav inputs)"
    else:
        what = f"{preprocess!r} inputs"
    raise ConfigError(
        f"{model}: siamkit serve serves image and text models, not {what}; use siamkit verify / "
        "index / search, siamkit.load, or an export run by python -m siamkit.runtime"
    )


def detect_runtime(folder: str | Path) -> str:
    """``"onnx"`` for an exported folder (it holds ``encoder.onnx``), else ``"torch"``."""
    return "onnx" if (Path(folder) / ONNX_FILE).is_file() else "torch"


def check_runtime(runtime: str, folder: str | Path) -> str:
    """The runtime that serves ``folder``: ``runtime``, or the detected one for ``"auto"``."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
    return detect_runtime(folder) if runtime == "auto" else runtime


def load_backend(
    folder: str | Path, runtime: str = "auto", max_pixels: int = 16_000_000,
    threads: int | None = None,
) -> ModelBackend:  # fmt: skip
    """Load ``folder`` for serving with ``runtime`` ("auto", "torch" or "onnx").

    ``threads`` caps the intra-op threads of the runtime (torch's or ONNX Runtime's);
    ``max_pixels`` is the largest image an upload may decode to.
    """
    chosen = check_runtime(runtime, folder)
    if chosen == "onnx":
        from siamkit.serving.onnx_model import OnnxServedModel

        return OnnxServedModel.load(folder, max_pixels, threads)
    try:
        from siamkit.serving.model import ServedModel
    except ModuleNotFoundError as error:  # siamkit-runtime: no torch, no siamkit.model
        raise ConfigError(f"{folder}: the torch runtime needs PyTorch and siamkit ({error}); "
                          "export the model (siamkit export) and serve it with --runtime onnx"
                          ) from error  # fmt: skip
    return ServedModel.load(folder, max_pixels, threads)


def served_name(folder: str | Path) -> str:
    """The name /ready shows: the folder's, or its parent's for ``runs/<name>/model``."""
    path = Path(folder).resolve()
    return path.parent.name if path.name == "model" else path.name


def verdict(score: float, threshold: float | None) -> dict[str, Any]:
    """The verify body: score, threshold and decision (null without a threshold)."""
    if not math.isfinite(score):
        raise DataError(f"the model gave a non-finite score ({score}) for these inputs")
    decision = None if threshold is None else ("same" if score >= threshold else "different")
    return {"score": score, "threshold": threshold, "decision": decision}


def check_aggregate(aggregate: str) -> str:
    """``aggregate`` if it is one of :data:`AGGREGATES`, else a :class:`DataError`."""
    if aggregate not in AGGREGATES:
        raise DataError(f"aggregate must be one of {', '.join(AGGREGATES)}; got {aggregate!r}")
    return aggregate


def in_length_order(
    texts: Sequence[str], embed: Callable[[list[str]], Any], chunk: int,
    concat: Callable[[list[Any]], Any],
) -> Any:  # fmt: skip
    """``embed`` the texts ``chunk`` at a time, shortest first (less padding than one batch of
    short and long texts), and return the rows in the texts' order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    parts = [embed([texts[i] for i in order[start : start + chunk]])
             for start in range(0, len(texts), chunk)]  # fmt: skip
    position = [0] * len(texts)
    for rank, i in enumerate(order):
        position[i] = rank
    return concat(parts)[position]
