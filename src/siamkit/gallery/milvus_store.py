"""The scale-out back-end: the same store interface on Milvus, through ``pymilvus``.

``uri`` is a Milvus Lite file (``gallery.db``: an embedded database, no server, used by the tests)
or a server/cluster address (``http://host:19530``, with ``token`` if it needs one): the code is
the same. Each store is one collection with an auto-generated int64 primary key, a float vector
field searched by inner product (HNSW by default) and a JSON metadata field. Needs the
``siamkit[milvus]`` extra.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from siamkit.errors import DataError, GalleryError
from siamkit.gallery.store import Metadata, SearchResult, as_ids, as_matrix, check_metadata

BATCH = 5_000  # rows per insert request
MAX_K = 16_384  # Milvus' largest search limit
KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ITERATOR_LOG = "pymilvus.client.iterator.query_iterator"


class MilvusStore:
    """Vectors + metadata in a Milvus collection.

    Args:
        uri: Milvus Lite file (``*.db``) or server URI.
        collection: collection name.
        token: credentials for a server (``"user:password"`` or an API key), if it needs them.
        index_type: the vector index (default HNSW).
        index_params: its build parameters (default ``M=32``, ``efConstruction=200``).
        ef_search: HNSW search breadth (raised to ``k`` when a search asks for more).
    """

    def __init__(
        self,
        uri: str,
        collection: str = "gallery",
        token: str = "",
        index_type: str = "HNSW",
        index_params: dict[str, Any] | None = None,
        ef_search: int = 128,
    ) -> None:
        try:
            from pymilvus import MilvusClient
        except ImportError as error:  # pragma: no cover - the extra is installed in CI
            raise GalleryError(
                f"gallery {uri} needs pymilvus: pip install 'siamkit[milvus]'"
            ) from error
        # Milvus Lite has no server-side iterator timestamp and pymilvus warns on every
        # query_iterator. Set after importing pymilvus: its logging config resets child loggers.
        logging.getLogger(ITERATOR_LOG).setLevel(logging.ERROR)
        self.location = uri
        self.collection = collection
        self.index_type = index_type
        self.index_params = index_params or (
            {"M": 32, "efConstruction": 200} if index_type == "HNSW" else {}
        )
        self.ef_search = ef_search
        try:
            self._client = MilvusClient(uri=uri, token=token)
        except Exception as error:
            raise GalleryError(f"cannot open Milvus gallery {uri}: {error}") from error
        self.dim: int | None = None
        if self._client.has_collection(collection):
            fields = self._client.describe_collection(collection)["fields"]
            vector = next(f for f in fields if f["name"] == "vector")
            self.dim = int(vector["params"]["dim"])
            self._client.load_collection(
                collection
            )  # a collection reopened after a crash is released

    def _create(self, dim: int) -> None:
        from pymilvus import DataType

        schema = self._client.create_schema(auto_id=True, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("meta", DataType.JSON)
        index = self._client.prepare_index_params()
        index.add_index(
            field_name="vector",
            index_type=self.index_type,
            metric_type="IP",
            params=self.index_params,
        )
        self._client.create_collection(
            self.collection, schema=schema, index_params=index, consistency_level="Strong"
        )
        self.dim = dim

    def __len__(self) -> int:
        if self.dim is None:
            return 0
        rows = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def add(self, vectors: np.ndarray, metadata: Sequence[Metadata] | None = None) -> np.ndarray:
        """Store ``vectors`` (N, D) with one metadata dict each; return their new int64 ids."""
        x = as_matrix(vectors, self.dim, f"gallery {self.location}")
        metas = check_metadata(metadata, len(x), f"gallery {self.location}")
        if self.dim is None:
            self._create(x.shape[1])
        ids: list[int] = []
        for start in range(0, len(x), BATCH):
            rows = [
                {"vector": v, "meta": m}
                for v, m in zip(x[start : start + BATCH], metas[start : start + BATCH], strict=True)
            ]
            ids += list(self._client.insert(self.collection, rows)["ids"])
        return np.array(ids, dtype=np.int64)

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        """Delete the vectors with these ids; return how many existed."""
        wanted = as_ids(ids).tolist()
        if self.dim is None or not wanted:
            return 0
        present = [
            row["id"] for row in self._client.get(self.collection, ids=wanted, output_fields=["id"])
        ]
        if present:
            self._client.delete(self.collection, ids=present)
        return len(present)

    def search(self, vectors: np.ndarray, k: int) -> SearchResult:
        """The ``k`` stored vectors of highest inner product with each query row."""
        if self.dim is None:
            raise GalleryError(f"gallery {self.location} is empty: enroll or index something first")
        if not 1 <= k <= MAX_K:
            raise DataError(f"search: k must be in 1..{MAX_K}, got {k}")
        x = as_matrix(vectors, self.dim, f"gallery {self.location}")
        params = {"params": {"ef": max(self.ef_search, k)}} if self.index_type == "HNSW" else {}
        hits = self._client.search(
            self.collection, data=list(x), limit=k, search_params=params, output_fields=["id"]
        )
        if not any(hits) and len(self) == 0:
            raise GalleryError(f"gallery {self.location} is empty: enroll or index something first")
        scores = np.full((len(x), k), -np.inf, dtype=np.float32)
        found = np.full((len(x), k), -1, dtype=np.int64)
        for row, result in enumerate(hits):
            for col, hit in enumerate(result):
                scores[row, col] = hit["distance"]
                found[row, col] = hit["id"]
        return SearchResult(scores=scores, ids=found)

    def metadata(self, ids: Sequence[int] | np.ndarray | None = None) -> dict[int, Metadata]:
        """Metadata by id, for ``ids`` or (None) for every stored vector."""
        if self.dim is None:
            return {}
        if ids is None:
            rows = self._query_all(filter="")
        else:
            rows = self._client.get(
                self.collection, ids=as_ids(ids).tolist(), output_fields=["meta"]
            )
        return {int(row["id"]): row["meta"] for row in rows}

    def find(self, key: str, value: Any) -> np.ndarray:
        """Ids of the vectors whose metadata has ``key`` equal to ``value``."""
        if not KEY.match(key):
            raise DataError(f"metadata key must be an identifier, got {key!r}")
        if self.dim is None:
            return np.empty(0, dtype=np.int64)
        rows = self._query_all(filter=f'meta["{key}"] == {json.dumps(value)}')
        return np.array(sorted(row["id"] for row in rows), dtype=np.int64)

    def _query_all(self, filter: str) -> list[dict[str, Any]]:
        iterator = self._client.query_iterator(
            self.collection, batch_size=1000, filter=filter, output_fields=["meta"]
        )
        rows: list[dict[str, Any]] = []
        while batch := iterator.next():
            rows += batch
        iterator.close()
        return rows

    def save(self) -> None:
        """Flush inserted rows to Milvus' persistent storage."""
        if self.dim is not None:
            self._client.flush(self.collection)

    def close(self) -> None:
        """Flush and close the client."""
        self.save()
        self._client.close()

    def __enter__(self) -> MilvusStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
