"""Enrolled identities: one template vector per image (and optionally a mean) in a vector store.

:class:`Gallery` is the face-recognition layer (enroll, remove, list, identify with an open-set
"unknown"); it stores unit-length embeddings, so scores are cosine similarities in [-1, 1]. The
storage is any :class:`~siamkit.gallery.store.VectorStore`: a FAISS+SQLite folder by default, or
Milvus (a Milvus Lite ``*.db`` file or a server URI); see :func:`open_store`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from siamkit.errors import DataError, GalleryError
from siamkit.gallery.store import Metadata, SearchResult, VectorStore, as_matrix, open_store

__all__ = [
    "Candidate",
    "Gallery",
    "Identification",
    "Match",
    "SearchResult",
    "VectorStore",
    "open_store",
    "unit_vectors",
]


@dataclass(frozen=True)
class Candidate:
    """One enrolled identity and its best template score for a probe."""

    identity: str
    score: float


@dataclass(frozen=True)
class Identification:
    """The answer for one probe: ``identity`` is None ("unknown") below the threshold."""

    identity: str | None
    score: float
    candidates: list[Candidate] = field(default_factory=list)


@dataclass(frozen=True)
class Match:
    """One stored vector found by :meth:`Gallery.search`: its id, score and metadata."""

    id: int
    score: float
    metadata: Metadata


def unit_vectors(embeddings: Any, where: str = "embeddings") -> np.ndarray:
    """L2-normalised float32 rows; a zero row is a :class:`DataError`."""
    x = as_matrix(embeddings, None, where)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise DataError(f"{where}: an embedding is all zeros and has no direction")
    return x / norms


class Gallery:
    """Identities enrolled as template vectors in a :class:`VectorStore`.

    Each template's metadata is ``{"identity": name, "template": "image" | "mean", "source": ...}``.
    """

    def __init__(self, store: VectorStore) -> None:
        self.store = store

    @classmethod
    def open(cls, location: str | Path, **options: Any) -> Gallery:
        """Open or create the gallery at ``location`` (see :func:`open_store`)."""
        return cls(open_store(location, **options))

    def __len__(self) -> int:
        """Number of stored templates."""
        return len(self.store)

    def enroll(
        self,
        name: str,
        embeddings: Any,
        sources: Sequence[str] | None = None,
        mean: bool = False,
    ) -> np.ndarray:
        """Enroll identity ``name`` with one template per embedding row (+ their mean if asked).

        All templates are added in one store operation. Returns their ids. A name that is
        already enrolled is a :class:`GalleryError`: remove it first to re-enroll.
        """
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"identity name must be a non-empty string, got {name!r}")
        if len(self.store.find("identity", name)):
            raise GalleryError(
                f"identity {name!r} is already enrolled in {self.store.location}; remove it first"
            )
        x = unit_vectors(embeddings, f"embeddings of {name!r}")
        sources = list(sources) if sources is not None else [None] * len(x)
        if len(sources) != len(x):
            raise DataError(f"enroll {name!r}: {len(x)} embeddings but {len(sources)} sources")
        metas = [{"identity": name, "template": "image", "source": s} for s in sources]
        if mean and len(x) > 1:
            x = np.vstack([x, unit_vectors(x.mean(axis=0, keepdims=True))])
            metas.append({"identity": name, "template": "mean", "source": None})
        return self.store.add(x, metas)

    def remove(self, name: str) -> int:
        """Remove every template of ``name``; returns how many were removed."""
        ids = self.store.find("identity", name)
        if not len(ids):
            raise GalleryError(f"identity {name!r} is not enrolled in {self.store.location}")
        return self.store.remove(ids)

    def identities(self) -> dict[str, int]:
        """Enrolled names and their number of image templates, sorted by name."""
        counts = Counter(
            m["identity"]
            for m in self.store.metadata().values()
            if "identity" in m and m.get("template") == "image"
        )
        return dict(sorted(counts.items()))

    def identify(
        self, embeddings: Any, k: int = 5, threshold: float | None = None
    ) -> list[Identification]:
        """Top-``k`` identities per probe row, each scored by its best template.

        With a ``threshold`` (cosine), a probe whose best score is below it is "unknown"
        (``identity=None``): the open-set answer. Without one, the best candidate is returned.
        """
        if k < 1:
            raise DataError(f"identify: k must be >= 1, got {k}")
        probes = unit_vectors(embeddings, "probe embeddings")
        n = len(self.store)
        depth = min(n, max(4 * k, 32)) if n else k  # templates to fetch to find k identities
        while True:
            ranked = self._rank_identities(probes, depth)
            if depth >= n or all(len(best) >= k for best in ranked):
                break
            depth = min(n, 4 * depth)  # many templates per identity, or non-identity items
        answers = []
        for best in ranked:
            candidates = [Candidate(nm, s) for nm, s in list(best.items())[:k]]
            top = candidates[0] if candidates else Candidate("", float("-inf"))
            known = bool(candidates) and (threshold is None or top.score >= threshold)
            answers.append(Identification(top.identity if known else None, top.score, candidates))
        return answers

    def _rank_identities(self, probes: np.ndarray, depth: int) -> list[dict[str, float]]:
        """Per probe: identity -> best template score, best first, from the top ``depth``."""
        result = self.store.search(probes, depth)
        metas = self.store.metadata(np.unique(result.ids[result.ids >= 0]))
        ranked = []
        for scores, ids in zip(result.scores, result.ids, strict=True):
            best: dict[str, float] = {}
            for score, i in zip(scores.tolist(), ids.tolist(), strict=True):
                name = metas.get(i, {}).get("identity")
                if name is not None and name not in best:
                    best[name] = score
            ranked.append(best)
        return ranked

    def add(self, embeddings: Any, metadata: Sequence[Metadata]) -> np.ndarray:
        """Store items for retrieval (not identities), e.g. ``{"source": path}`` each."""
        return self.store.add(unit_vectors(embeddings, "item embeddings"), metadata)

    def sources(self) -> set[str]:
        """The ``source`` of every stored vector that has one."""
        return {m["source"] for m in self.store.metadata().values() if m.get("source")}

    def search(self, embeddings: Any, k: int = 10) -> list[list[Match]]:
        """The ``k`` most similar stored templates per query (image retrieval)."""
        result = self.store.search(unit_vectors(embeddings, "query embeddings"), k)
        metas = self.store.metadata(np.unique(result.ids[result.ids >= 0]))
        return [
            [
                Match(i, s, metas.get(i, {}))
                for s, i in zip(sc.tolist(), ids.tolist(), strict=True)
                if i >= 0
            ]
            for sc, ids in zip(result.scores, result.ids, strict=True)
        ]

    def save(self) -> None:
        """Make the gallery durable (see the back-end's ``save``)."""
        self.store.save()

    def close(self) -> None:
        """Save and release the gallery."""
        self.store.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
