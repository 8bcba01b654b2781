"""Gallery and its two back-ends (FAISS+SQLite folder, Milvus Lite file) on synthetic vectors."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from siamkit.errors import DataError, GalleryError
from siamkit.gallery import Gallery, open_store
from siamkit.gallery.faiss_store import FaissStore

DIM = 16


def people(n: int, per: int, seed: int = 0, noise: float = 0.1) -> dict[str, np.ndarray]:
    """``n`` identities, each ``per`` noisy views of its own random direction."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n, DIM))
    return {f"p{i}": centres[i] + noise * rng.standard_normal((per, DIM)) for i in range(n)}


@pytest.fixture(params=["faiss", "milvus"])
def location(request, tmp_path) -> str:
    return str(tmp_path / ("g.gallery" if request.param == "faiss" else "g.db"))


def test_enroll_identify_remove_persist_reload(location):
    faces = people(6, 3)
    with Gallery.open(location) as gallery:
        for name, views in faces.items():
            gallery.enroll(name, views[:2], sources=[f"{name}/1", f"{name}/2"], mean=True)
        assert gallery.identities() == {name: 2 for name in faces}
        assert len(gallery) == 6 * 3  # 2 images + 1 mean each
        answers = gallery.identify(np.stack([v[2] for v in faces.values()]), k=3)
        assert [a.identity for a in answers] == list(faces)
        assert all(len(a.candidates) == 3 for a in answers)
        assert gallery.remove("p0") == 3
    with Gallery.open(location) as gallery:
        assert set(gallery.identities()) == set(faces) - {"p0"}
        answer = gallery.identify(faces["p1"][2:], k=1)[0]
        assert answer.identity == "p1" and -1.0 <= answer.score <= 1.0
        hits = gallery.search(faces["p2"][:1], k=2)[0]
        assert hits[0].metadata["source"] == "p2/1" and hits[0].score == pytest.approx(1.0)


def test_open_set_rejects_unknown_people(location):
    faces = people(8, 2, noise=0.05)
    with Gallery.open(location) as gallery:
        for name in list(faces)[:4]:
            gallery.enroll(name, faces[name][:1])
        probes = np.stack([faces[name][1] for name in faces])
        answers = gallery.identify(probes, k=2, threshold=0.9)
    assert [a.identity for a in answers[:4]] == list(faces)[:4]
    assert [a.identity for a in answers[4:]] == [None] * 4
    assert all(a.candidates for a in answers[4:])  # the nearest are still reported


def test_bad_input_gives_clear_errors(location):
    with Gallery.open(location) as gallery:
        with pytest.raises(GalleryError, match="empty"):
            gallery.identify(np.ones((1, DIM)))
        gallery.enroll("alice", np.ones((1, DIM)))
        with pytest.raises(GalleryError, match="already enrolled"):
            gallery.enroll("alice", np.ones((1, DIM)))
        with pytest.raises(GalleryError, match="16-d vectors; got 8-d"):
            gallery.identify(np.ones((1, 8)))
        with pytest.raises(GalleryError, match="16-d vectors; got 8-d"):
            gallery.enroll("bob", np.ones((2, 8)))
        with pytest.raises(GalleryError, match="not enrolled"):
            gallery.remove("carol")
        with pytest.raises(DataError, match="all zeros"):
            gallery.enroll("dave", np.zeros((1, DIM)))
        with pytest.raises(DataError, match="NaN"):
            gallery.enroll("erin", np.full((1, DIM), np.nan))
        assert gallery.identities() == {"alice": 1}


def test_store_is_generic(location):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, DIM)).astype(np.float32)
    with open_store(location) as store:
        ids = store.add(x, [{"doc": f"d{i}", "even": i % 2 == 0} for i in range(50)])
        assert len(ids) == 50 and len(set(ids.tolist())) == 50
        result = store.search(x[:5], k=3)
        assert result.ids.shape == (5, 3)
        exact = np.argsort(-(x[:5] @ x.T), axis=1)[:, :3]
        assert (result.ids == ids[exact]).all()
        assert store.metadata(ids[:2]) == {
            int(ids[0]): {"doc": "d0", "even": True},
            int(ids[1]): {"doc": "d1", "even": False},
        }
        assert sorted(store.find("doc", "d7").tolist()) == [int(ids[7])]
        assert store.remove([ids[0], ids[0], 10**9]) == 1
        assert len(store) == 49
        assert int(ids[0]) not in store.search(x[:1], k=5).ids


def test_search_pads_when_k_exceeds_size(location):
    with open_store(location) as store:
        store.add(np.eye(DIM, dtype=np.float32)[:2])
        result = store.search(np.eye(DIM, dtype=np.float32)[:1], k=4)
    assert result.ids.shape == (1, 4)
    assert (result.ids[0, 2:] == -1).all() and np.isneginf(result.scores[0, 2:]).all()


def test_faiss_index_kind_is_automatic_and_overridable(tmp_path):
    x = np.random.default_rng(2).standard_normal((120, DIM)).astype(np.float32)
    store = FaissStore(tmp_path / "auto", hnsw_threshold=100)
    store.add(x[:99])
    assert store.index_kind == "flat"
    store.add(x[99:])
    assert store.index_kind == "hnsw"
    assert (store.search(x[:10], k=1).ids[:, 0] == np.arange(10)).all()
    store.remove(np.arange(10))  # masked in HNSW, not rebuilt
    assert not np.isin(store.search(x[:10], k=3).ids, np.arange(10)).any()
    store.close()
    reopened = FaissStore(tmp_path / "auto")
    assert reopened.index_kind == "hnsw" and len(reopened) == 110
    assert not np.isin(reopened.search(x[:10], k=3).ids, np.arange(10)).any()
    reopened.ef_search = 300  # a search-time setting: applied live, saved with the store
    assert faiss.downcast_index(reopened._index.index).hnsw.efSearch == 300
    reopened.close()
    assert FaissStore(tmp_path / "auto").ef_search == 300
    assert FaissStore(tmp_path / "auto", index="flat").index_kind == "flat"
    assert FaissStore(tmp_path / "small", index="hnsw").index_kind == "none"


def test_faiss_store_rejects_a_file_and_a_bad_index_kind(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(GalleryError, match="expected a folder"):
        FaissStore(tmp_path / "file")
    with pytest.raises(GalleryError, match="'auto', 'flat' or 'hnsw'"):
        FaissStore(tmp_path / "g", index="ivf")


def test_faiss_store_rejects_a_corrupt_database(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "items.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(GalleryError, match="items.sqlite is not a SQLite database"):
        FaissStore(tmp_path / "g")
