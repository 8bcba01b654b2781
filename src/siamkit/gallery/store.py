"""The small interface every gallery back-end implements, and the function that picks one.

A store keeps **vectors with integer ids and a metadata dict each**, and answers inner-product
nearest-neighbour queries. It knows nothing about faces or identities, so text retrieval can use
it as it is. Pass unit vectors to get cosine similarities.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from siamkit.errors import DataError, GalleryError

Metadata = dict[str, Any]


@dataclass(frozen=True)
class SearchResult:
    """Top-k neighbours of each query: ``scores`` and ``ids`` of shape (Q, k), best first.

    Where fewer than k vectors are stored, the missing slots hold id -1 and score -inf.
    """

    scores: np.ndarray
    ids: np.ndarray


class VectorStore(Protocol):
    """What :class:`siamkit.gallery.Gallery` (and any retrieval code) needs from a back-end."""

    location: str
    dim: int | None  # None until the first vectors are added

    def __len__(self) -> int: ...

    def add(self, vectors: np.ndarray, metadata: Sequence[Metadata] | None = None) -> np.ndarray:
        """Store ``vectors`` (N, D) with one metadata dict each; return their new int64 ids."""
        ...

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        """Delete the vectors with these ids; return how many existed."""
        ...

    def search(self, vectors: np.ndarray, k: int) -> SearchResult:
        """The ``k`` stored vectors of highest inner product with each query row."""
        ...

    def metadata(self, ids: Sequence[int] | np.ndarray | None = None) -> dict[int, Metadata]:
        """Metadata by id, for ``ids`` or (None) for every stored vector."""
        ...

    def find(self, key: str, value: Any) -> np.ndarray:
        """Ids of the vectors whose metadata has ``key`` equal to ``value``."""
        ...

    def save(self) -> None:
        """Make everything added or removed so far durable."""
        ...

    def close(self) -> None:
        """Save and release the store."""
        ...


def as_matrix(vectors: Any, dim: int | None, where: str) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 (N, D) array, checked against the store's ``dim``."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] == 0:
        raise DataError(
            f"{where}: expected a non-empty (N, D) array of vectors, got shape {x.shape}"
        )
    if dim is not None and x.shape[1] != dim:
        raise GalleryError(f"{where} holds {dim}-d vectors; got {x.shape[1]}-d vectors")
    if not np.isfinite(x).all():
        raise DataError(f"{where}: vectors contain NaN or infinite values")
    return np.ascontiguousarray(x)


def as_ids(ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Distinct ids as an int64 array."""
    return np.unique(np.asarray(ids, dtype=np.int64).ravel())


def check_metadata(metadata: Sequence[Metadata] | None, n: int, where: str) -> list[Metadata]:
    """One JSON-serialisable dict per vector (empty dicts when ``metadata`` is None)."""
    if metadata is None:
        return [{} for _ in range(n)]
    metas = list(metadata)
    if len(metas) != n or not all(isinstance(m, dict) for m in metas):
        raise DataError(f"{where}: expected {n} metadata dicts (one per vector), got {len(metas)}")
    try:
        json.dumps(metas)
    except (TypeError, ValueError) as error:
        raise DataError(f"{where}: metadata must be JSON-serialisable: {error}") from error
    return metas


def is_milvus_uri(location: str | Path) -> bool:
    """Milvus URIs: ``http(s)://``/``tcp://`` servers, or a Milvus Lite file ending in ``.db``."""
    text = str(location)
    return text.startswith(("http://", "https://", "tcp://", "unix:")) or text.endswith(".db")


def open_store(location: str | Path, **options: Any) -> VectorStore:
    """Open (or create) the store at ``location``.

    A Milvus server URI (``http://host:19530``) or a Milvus Lite file (``*.db``) opens a
    :class:`~siamkit.gallery.milvus_store.MilvusStore`; any other path is a folder holding a
    :class:`~siamkit.gallery.faiss_store.FaissStore`. ``options`` go to the back-end.
    """
    if is_milvus_uri(location):
        from siamkit.gallery.milvus_store import MilvusStore

        return MilvusStore(str(location), **options)
    from siamkit.gallery.faiss_store import FaissStore

    return FaissStore(Path(location), **options)
