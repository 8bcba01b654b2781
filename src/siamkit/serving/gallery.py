"""The gallery as the server uses it: one thread owns it (SQLite connections stay on the thread
that opened them, and requests' writes are serialised), and every call first catches up with
what other worker processes committed to the same folder (``FaissStore.refresh``).

Enrolled identities are durable once ``enroll`` returns: the folder back-end commits each
enrolment as one SQLite transaction, so a server killed at any moment restarts with every
identity it had confirmed, and none half-enrolled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from siamkit.gallery import Gallery

T = TypeVar("T")


class GalleryService:
    """Asynchronous access to a :class:`~siamkit.gallery.Gallery` opened at ``location``."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.executor: ThreadPoolExecutor | None = None
        self.gallery: Gallery | None = None
        self.size = 0  # templates stored, as of the last call (for the metrics)
        self._counted_at: tuple[int | None, int] | None = None  # state of the last people count
        self._people = 0

    async def _call(self, work: Callable[[Gallery], T]) -> T:
        def run() -> T:
            assert self.gallery is not None
            refresh = getattr(self.gallery.store, "refresh", None)
            if refresh is not None:
                refresh()
            try:
                return work(self.gallery)
            finally:
                self.size = len(self.gallery)

        assert self.executor is not None, "the gallery is not open"
        return await asyncio.get_running_loop().run_in_executor(self.executor, run)

    async def open(self) -> None:
        """Open (or create) the gallery on its thread."""

        def run() -> None:
            self.gallery = Gallery.open(self.location)
            self.size = len(self.gallery)

        self.executor = ThreadPoolExecutor(1, thread_name_prefix="siamkit-gallery")
        await asyncio.get_running_loop().run_in_executor(self.executor, run)

    async def close(self) -> None:
        """Save and close the gallery, then stop its thread."""
        if self.executor is None:
            return
        if self.gallery is not None:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.gallery.close)
            self.gallery = None
        self.executor.shutdown(wait=True)
        self.executor = None

    async def enroll(self, name: str, embeddings: np.ndarray, sources: list[str]) -> int:
        """Enroll ``name`` with one template per embedding; returns the templates stored."""
        ids = await self._call(lambda g: g.enroll(name, embeddings, sources=sources))
        return len(ids)

    async def identify(
        self, embedding: np.ndarray, k: int, threshold_at: Callable[[int], float | None]
    ) -> tuple[Any, float | None]:
        """The :class:`~siamkit.gallery.Identification` of one probe and the threshold used:
        ``threshold_at(people)`` for the number of people enrolled at that moment."""

        def work(g: Gallery) -> tuple[Any, float | None]:
            threshold = threshold_at(self._people_count(g))
            return g.identify(embedding, k=k, threshold=threshold)[0], threshold

        return await self._call(work)

    def _people_count(self, g: Gallery) -> int:
        """Enrolled identities, counted again only when the gallery's state moved (its store's
        generation where it has one, else its number of stored vectors)."""
        state = (getattr(g.store, "generation", None), len(g))
        if state != self._counted_at:
            self._counted_at, self._people = state, len(g.identities())
        return self._people

    async def people(self) -> dict[str, int]:
        """Enrolled names and their template counts."""
        return await self._call(lambda g: g.identities())

    async def remove(self, name: str) -> int:
        """Remove every template of ``name``."""
        return await self._call(lambda g: g.remove(name))

    async def index(self, embeddings: np.ndarray, ids: list[str]) -> int:
        """Store items for search, each with metadata ``{"id": ...}``; returns how many."""
        metas = [{"id": item, "source": item} for item in ids]
        return len(await self._call(lambda g: g.add(embeddings, metas)))

    async def search(self, embedding: np.ndarray, k: int) -> list[dict[str, Any]]:
        """The ``k`` stored vectors most similar to one query: ``{"id", "score"}`` each."""
        matches = (await self._call(lambda g: g.search(embedding, k=k)))[0]
        return [
            {"id": str(m.metadata.get("id", m.metadata.get("identity", m.id))), "score": m.score}
            for m in matches
        ]
