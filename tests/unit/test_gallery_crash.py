"""A process killed in the middle of enrolling leaves a gallery that reopens consistent."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from siamkit.gallery import Gallery

SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from siamkit.gallery import Gallery
    from siamkit.gallery.faiss_store import FaissStore

    location, crash = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    gallery = Gallery.open(location)
    gallery.enroll("saved", rng.standard_normal((3, 8)))
    gallery.save()
    if crash == "inside_transaction":  # rows inserted, not committed, index half-updated
        def die(self, x, ids):
            os._exit(3)
        FaissStore._update_index_after_add = die
    if crash == "while_saving_index":  # committed, index file half-written
        def die(self):
            open(self.folder / f"index-{self.generation}.tmp", "wb").write(b"garbage")
            os._exit(3)
        FaissStore.save = die
    gallery.enroll("crashed", rng.standard_normal((4, 8)), mean=True)
    if crash == "while_saving_index":
        gallery.save()
    os._exit(3)  # never closed: committed rows, stale index file
    """
)


def crash(location: str, where: str) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, location, where], timeout=120)
    assert done.returncode == 3


@pytest.mark.parametrize(
    ("where", "survivors"),
    [
        ("inside_transaction", {"saved": 3}),
        ("after_commit", {"saved": 3, "crashed": 4}),
        ("while_saving_index", {"saved": 3, "crashed": 4}),
    ],
)
def test_faiss_gallery_reopens_consistent_after_a_crash(tmp_path, where, survivors):
    location = str(tmp_path / "g.gallery")
    crash(location, where)
    with Gallery.open(location) as gallery:
        assert gallery.identities() == survivors
        store = gallery.store
        assert (
            store._index.ntotal == len(store) == sum(survivors.values()) + ("crashed" in survivors)
        )
        probe = np.random.default_rng(0).standard_normal((3, 8))
        assert [a.identity for a in gallery.identify(probe)] == ["saved"] * 3
        gallery.enroll("after", np.ones((1, 8)))  # and it keeps working
    with Gallery.open(location) as gallery:
        assert gallery.identities() == {**survivors, "after": 1}


def test_milvus_lite_gallery_reopens_consistent_after_a_crash(tmp_path):
    location = str(tmp_path / "g.db")
    crash(location, "after_commit")
    with Gallery.open(location) as gallery:
        names = gallery.identities()
        assert names.get("saved") == 3
        assert names.get("crashed", 4) == 4  # all of an enrollment or none of it
        assert len(gallery) == sum(names.values()) + ("crashed" in names)
