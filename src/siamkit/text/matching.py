"""Text matching: rank a reference set of texts for each query, through siamkit's gallery store.

References are embedded once into a :class:`~siamkit.gallery.store.VectorStore` (the same FAISS
or Milvus back-ends that hold face templates), each with its text and line number as metadata;
queries are answered by inner product of unit vectors, i.e. cosine similarity.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from siamkit.errors import DataError
from siamkit.gallery import Gallery, open_store
from siamkit.gallery.store import VectorStore
from siamkit.text.similarity import TextModel, embed_texts


@dataclass(frozen=True)
class TextMatch:
    """One reference found for a query: its text, position in the reference list and cosine."""

    text: str
    line: int
    score: float


def index_texts(model: TextModel, texts: Sequence[str], store: VectorStore) -> int:
    """Embed ``texts`` and add them to ``store`` (metadata: text and 1-based line); returns how
    many were added."""
    texts = [t for t in texts]
    if not texts:
        raise DataError("no reference texts to index")
    offset = len(store)
    metas = [{"text": t, "line": offset + i + 1} for i, t in enumerate(texts)]
    store.add(embed_texts(model, texts).numpy(), metas)
    store.save()
    return len(texts)


def search_texts(
    model: TextModel, store: VectorStore, queries: Sequence[str], k: int = 5
) -> list[list[TextMatch]]:
    """The ``k`` references of ``store`` most similar to each query, best first."""
    if len(store) == 0:
        raise DataError(f"the text index {store.location} is empty: index reference texts first")
    hits = Gallery(store).search(embed_texts(model, list(queries)).numpy(), k)
    return [
        [TextMatch(str(m.metadata.get("text", "")), int(m.metadata.get("line", -1)), m.score)
         for m in row]
        for row in hits
    ]  # fmt: skip


def rank_references(
    model: TextModel,
    queries: Sequence[str],
    references: Sequence[str],
    k: int = 5,
    index: str | Path | None = None,
) -> list[list[TextMatch]]:
    """Rank ``references`` for each query (top ``k``). With ``index`` (a gallery folder or Milvus
    location) the references are stored there, or reused if it already holds them; otherwise a
    temporary FAISS store is used."""
    if index is not None:
        store = open_store(index)
        try:
            if len(store) == 0:
                index_texts(model, references, store)
            elif len(store) != len(references):
                raise DataError(
                    f"text index {index} holds {len(store)} texts but {len(references)} "
                    "references were given: use a new index folder"
                )
            return search_texts(model, store, queries, k)
        finally:
            store.close()
    with tempfile.TemporaryDirectory(prefix="siamkit-text-") as folder:
        store = open_store(Path(folder) / "index")
        try:
            index_texts(model, references, store)
            return search_texts(model, store, queries, k)
        finally:
            store.close()
