"""The embedded back-end: a FAISS index for search, a SQLite file as the source of truth.

A store is a folder::

    items.sqlite           ids, vectors (float32 blobs), metadata (JSON), settings
    index-<generation>.faiss  the FAISS index matching that state of the database

Every change is one SQLite transaction that also bumps a ``generation`` counter. The index is
written under its generation's name (to a temporary file, then renamed) on :meth:`save`. On open,
an index whose generation does not match the database is ignored and rebuilt from the vectors in
SQLite, so a crash at any moment leaves a store that reopens consistent. Several processes may
share one folder: SQLite serialises their writes, and each process reloads its index when it
sees the generation moved (on every write, every search and :meth:`FaissStore.refresh`).

The index is exact (``IndexFlatIP``) below ``hnsw_threshold`` vectors and HNSW above it
(``index="auto"``), or whichever of ``"flat"``/``"hnsw"`` is asked for. HNSW cannot delete in
place: removed ids are masked out of searches and the index is rebuilt once they pass a quarter
of it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from siamkit.errors import DataError, GalleryError
from siamkit.gallery.store import (
    Metadata,
    SearchResult,
    as_ids,
    as_matrix,
    check_metadata,
)

IndexKind = Literal["auto", "flat", "hnsw"]
DB_NAME = "items.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, vector BLOB NOT NULL, meta TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
DEFAULTS: dict[str, Any] = {
    "index": "auto",
    "hnsw_threshold": 50_000,
    "hnsw_m": 32,
    "ef_construction": 200,
    "ef_search": 128,
}
CHUNK = 500  # ids per SQL "IN (...)" query


class FaissStore:
    """Vectors + metadata in a folder: FAISS for search, SQLite for durable state.

    Settings given here are saved with the store; ``None`` keeps the saved (or default) value.

    Args:
        folder: the store's folder (created if missing).
        index: ``"auto"`` (flat below ``hnsw_threshold`` vectors, HNSW above), ``"flat"`` or
            ``"hnsw"``.
        hnsw_threshold: the number of vectors from which ``"auto"`` builds HNSW.
        hnsw_m: HNSW links per node (``M``).
        ef_construction: HNSW build breadth (``efConstruction``).
        ef_search: HNSW search breadth (``efSearch``), also settable on a live store.
    """

    def __init__(
        self,
        folder: str | Path,
        index: IndexKind | None = None,
        hnsw_threshold: int | None = None,
        hnsw_m: int | None = None,
        ef_construction: int | None = None,
        ef_search: int | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.location = str(self.folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise GalleryError(f"gallery {self.folder}: expected a folder, found a file")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.folder / DB_NAME, isolation_level=None)
        try:
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as error:
            path = self.folder / DB_NAME
            raise GalleryError(f"gallery {path} is not a SQLite database: {error}") from error
        given = dict(
            index=index,
            hnsw_threshold=hnsw_threshold,
            hnsw_m=hnsw_m,
            ef_construction=ef_construction,
            ef_search=ef_search,
        )
        if index not in (None, "auto", "flat", "hnsw"):
            raise GalleryError(f"index must be 'auto', 'flat' or 'hnsw', got {index!r}")
        self._index: faiss.IndexIDMap2 | None = None
        self._seen = self.generation
        self._removed = np.empty(0, dtype=np.int64)
        self.dim: int | None = None
        self._count = 0
        self.settings = dict(DEFAULTS)
        with self._transaction():
            for key, value in given.items():
                if value is not None:
                    self._set(key, value)
        self.settings = {key: self._get(key, default) for key, default in DEFAULTS.items()}
        dim = self._get("dim", None)
        self.dim = None if dim is None else int(dim)
        self._count = self._counted()
        self._index = self._load_index()
        self._seen = self.generation  # the database state the in-memory index matches

    # -- the SQLite side -------------------------------------------------------------------------

    def _get(self, key: str, default: Any) -> Any:
        row = self._db.execute("SELECT value FROM info WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def _set(self, key: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO info VALUES (?, ?)", (key, json.dumps(value)))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One atomic change: COMMIT, or ROLLBACK and reload the in-memory state on error."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if self.generation != self._seen:  # another process committed since we looked
                self._reload()
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            self._reload()
            raise
        self._db.execute("COMMIT")
        self._seen = self.generation

    def refresh(self) -> bool:
        """Catch up with changes other processes committed to the same folder: reload the
        in-memory state and index when the database's generation moved. Returns whether it had.
        """
        if self.generation == self._seen:
            return False
        self._reload()
        return True

    def _reload(self) -> None:
        self._seen = self.generation
        dim = self._get("dim", None)
        self.dim = None if dim is None else int(dim)
        self._count = self._counted()
        self._index = None if self.dim is None else self._rebuild()

    @property
    def generation(self) -> int:
        """Incremented by every committed change; names the matching index file."""
        return int(self._get("generation", 0))

    def __len__(self) -> int:
        return self._count

    def _counted(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM items").fetchone()[0])

    def _stored_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        rows = self._db.execute("SELECT id, vector FROM items ORDER BY id").fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        if not rows:
            return ids, np.empty((0, self.dim or 0), dtype=np.float32)
        blob = b"".join(r[1] for r in rows)
        return ids, np.frombuffer(blob, dtype=np.float32).reshape(len(rows), -1)

    def _chunks(self, ids: np.ndarray) -> Iterator[list[int]]:
        for start in range(0, len(ids), CHUNK):
            yield ids[start : start + CHUNK].tolist()

    # -- the FAISS side --------------------------------------------------------------------------

    def _index_path(self, generation: int) -> Path:
        return self.folder / f"index-{generation}.faiss"

    def _wanted_kind(self, n: int) -> str:
        kind = self.settings["index"]
        if kind == "auto":
            return "hnsw" if n >= self.settings["hnsw_threshold"] else "flat"
        return kind

    def _new_index(self, kind: str) -> faiss.IndexIDMap2:
        if kind == "hnsw":
            inner = faiss.IndexHNSWFlat(
                self.dim, self.settings["hnsw_m"], faiss.METRIC_INNER_PRODUCT
            )
            inner.hnsw.efConstruction = self.settings["ef_construction"]
            inner.hnsw.efSearch = self.settings["ef_search"]
        else:
            inner = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIDMap2(inner)
        index.own_fields = True
        inner.this.disown()
        return index

    @property
    def ef_search(self) -> int:
        """HNSW search breadth (higher: better recall, slower queries)."""
        return int(self.settings["ef_search"])

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        """Change the search breadth of the live index and save it with the store."""
        if int(value) < 1:
            raise GalleryError(f"ef_search must be >= 1, got {value}")
        with self._transaction():
            self._set("ef_search", int(value))
        self.settings["ef_search"] = int(value)
        if self.index_kind == "hnsw":
            faiss.downcast_index(self._index.index).hnsw.efSearch = int(value)

    @property
    def index_kind(self) -> str:
        """``"flat"``, ``"hnsw"``, or ``"none"`` before the first vectors."""
        if self._index is None:
            return "none"
        inner = faiss.downcast_index(self._index.index)
        return "hnsw" if isinstance(inner, faiss.IndexHNSW) else "flat"

    def _load_index(self) -> faiss.IndexIDMap2 | None:
        if self.dim is None:
            return None
        path = self._index_path(self.generation)
        if not path.exists():
            return self._rebuild()
        index = faiss.read_index(str(path))
        if not isinstance(index, faiss.IndexIDMap2):
            index = faiss.downcast_index(index)
        self._index = index
        if self.index_kind == "hnsw":
            faiss.downcast_index(index.index).hnsw.efSearch = self.settings["ef_search"]
            stored = self._db.execute("SELECT id FROM items").fetchall()
            in_index = faiss.vector_to_array(index.id_map)
            self._removed = np.setdiff1d(in_index, np.array([r[0] for r in stored], dtype=np.int64))
        if self.index_kind != self._wanted_kind(len(self)):
            return self._rebuild()
        return index

    def _rebuild(self) -> faiss.IndexIDMap2:
        """A fresh index of the kind the current size calls for, from the vectors in SQLite."""
        ids, vectors = self._stored_vectors()
        index = self._new_index(self._wanted_kind(len(ids)))
        if len(ids):
            index.add_with_ids(vectors, ids)
        self._index = index
        self._removed = np.empty(0, dtype=np.int64)
        return index

    # -- the public interface --------------------------------------------------------------------

    def add(self, vectors: np.ndarray, metadata: Sequence[Metadata] | None = None) -> np.ndarray:
        """Store ``vectors`` (N, D) with one metadata dict each; return their new int64 ids.

        The rows and the index change together: if anything fails, neither does.
        """
        x = as_matrix(vectors, self.dim, f"gallery {self.folder}")
        metas = check_metadata(metadata, len(x), f"gallery {self.folder}")
        texts = [json.dumps(m) for m in metas]
        with self._transaction():
            if self.dim is None:
                self.dim = x.shape[1]
                self._set("dim", self.dim)
            start = int(self._get("next_id", 0))
            ids = np.arange(start, start + len(x), dtype=np.int64)
            rows = zip(ids.tolist(), (row.tobytes() for row in x), texts, strict=True)
            self._db.executemany("INSERT INTO items VALUES (?, ?, ?)", rows)
            self._set("next_id", start + len(x))
            self._count += len(x)
            self._set("generation", self.generation + 1)
            self._update_index_after_add(x, ids)
        return ids

    def _update_index_after_add(self, x: np.ndarray, ids: np.ndarray) -> None:
        if self._index is None or self.index_kind != self._wanted_kind(len(self)):
            self._rebuild()  # reads the rows just inserted (same connection, same transaction)
        else:
            self._index.add_with_ids(x, ids)

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        """Delete the vectors with these ids; return how many existed."""
        wanted = as_ids(ids)
        present = [i for chunk in self._chunks(wanted) for (i,) in self._present(chunk)]
        if not present:
            return 0
        gone = np.array(present, dtype=np.int64)
        with self._transaction():
            for chunk in self._chunks(gone):
                marks = ",".join("?" * len(chunk))
                self._db.execute(f"DELETE FROM items WHERE id IN ({marks})", chunk)
            self._set("generation", self.generation + 1)
            self._count -= len(gone)
            if self.index_kind == "flat":
                self._index.remove_ids(faiss.IDSelectorBatch(gone))
            else:
                self._removed = np.union1d(self._removed, gone)
                if len(self._removed) > self._index.ntotal // 4:
                    self._rebuild()
        return len(present)

    def _present(self, chunk: list[int]) -> list[tuple[int]]:
        marks = ",".join("?" * len(chunk))
        return self._db.execute(f"SELECT id FROM items WHERE id IN ({marks})", chunk).fetchall()

    def search(self, vectors: np.ndarray, k: int) -> SearchResult:
        """The ``k`` stored vectors of highest inner product with each query row."""
        self.refresh()
        n = len(self)
        if n == 0 or self._index is None:
            raise GalleryError(f"gallery {self.folder} is empty: enroll or index something first")
        if k < 1:
            raise DataError(f"search: k must be >= 1, got {k}")
        x = as_matrix(vectors, self.dim, f"gallery {self.folder}")
        params = None
        if len(self._removed):
            # the selector objects must outlive the search call
            batch = faiss.IDSelectorBatch(self._removed)
            params = faiss.SearchParameters(sel=faiss.IDSelectorNot(batch))
        # faiss.contrib.torch_utils (imported by pytorch-metric-learning) replaces ``search`` with
        # a version without ``params``; the numpy original is kept as ``search_numpy``.
        search = getattr(self._index, "search_numpy", self._index.search)
        scores, ids = search(x, min(k, n), params=params)
        if k > n:
            pad = ((0, 0), (0, k - n))
            scores = np.pad(scores, pad, constant_values=-np.inf)
            ids = np.pad(ids, pad, constant_values=-1)
        scores[ids < 0] = -np.inf
        return SearchResult(scores=scores, ids=ids)

    def metadata(self, ids: Sequence[int] | np.ndarray | None = None) -> dict[int, Metadata]:
        """Metadata by id, for ``ids`` or (None) for every stored vector."""
        if ids is None:
            rows = self._db.execute("SELECT id, meta FROM items").fetchall()
        else:
            rows = []
            for chunk in self._chunks(as_ids(ids)):
                marks = ",".join("?" * len(chunk))
                query = f"SELECT id, meta FROM items WHERE id IN ({marks})"
                rows += self._db.execute(query, chunk).fetchall()
        return {int(i): json.loads(meta) for i, meta in rows}

    def find(self, key: str, value: Any) -> np.ndarray:
        """Ids of the vectors whose metadata has ``key`` equal to ``value``."""
        rows = self._db.execute(
            "SELECT id FROM items WHERE json_extract(meta, ?) = ?", (f'$."{key}"', value)
        ).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def save(self) -> None:
        """Write the index for the current generation (atomically) and drop older index files."""
        if self._index is None:
            return
        path = self._index_path(self.generation)
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            faiss.write_index(self._index, str(tmp))
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        for old in self.folder.glob("index-*.faiss"):
            if old != path:
                old.unlink(missing_ok=True)

    def close(self) -> None:
        """Save and close the database."""
        self.save()
        self._db.close()

    def __enter__(self) -> FaissStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
