"""Molecule reader, assay split, episodes and scorers (siamkit.data.molecules, molecules_eval)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("rdkit")

from siamkit.data import molecules  # noqa: E402
from siamkit.data.datasets import build_dataset  # noqa: E402
from siamkit.errors import DataError  # noqa: E402
from siamkit.evaluation import molecules_eval as me  # noqa: E402

SMILES = ["CCO", "c1ccccc1", "CC(=O)O", "this is not a smiles", "CCN", "CCCl", "c1ccncc1", "CO"]
ROWS = [
    "1,0,,1", "0,1,0,0", "1,,1,0", "0,0,0,0", "0,1,1,", "1,0,0,1", "0,0,1,1", ",1,0,0",
]  # fmt: skip


def write_csv(folder: Path, name: str = "tox21.csv") -> Path:
    path = folder / name
    lines = ["smiles,A,B,C,D"] + [f"{s},{r}" for s, r in zip(SMILES, ROWS, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_smiles_is_counted_not_fatal(tmp_path):
    data = molecules.read_molecules(write_csv(tmp_path), cache=tmp_path / "cache")
    assert data.skipped == 1 and data.skipped_smiles == ["this is not a smiles"]
    assert data.fingerprints.shape == (7, 2048) and data.fingerprints.dtype == np.uint8
    assert set(np.unique(data.fingerprints)) <= {0, 1}
    assert data.tasks == ["A", "B", "C", "D"]
    # the bad row is gone from the labels too; empty cells are -1 (not measured)
    assert data.labels.shape == (7, 4) and data.labels[0, 2] == -1
    rows, active = data.assay(2)
    assert 0 not in rows and active.tolist() == [0, 1, 1, 0, 1, 0]


def test_fingerprint_cache_round_trip(tmp_path, monkeypatch):
    path, cache = write_csv(tmp_path), tmp_path / "cache"
    first = molecules.read_molecules(path, cache=cache)
    assert len(list(cache.glob("*.safetensors"))) == 1

    def refuse(*_, **__):
        raise AssertionError("fingerprints recomputed despite the cache")

    monkeypatch.setattr(molecules, "morgan_fingerprints", refuse)
    again = molecules.read_molecules(path, cache=cache)
    np.testing.assert_array_equal(again.fingerprints, first.fingerprints)
    assert again.skipped == 1
    # another radius is another cache entry
    with pytest.raises(AssertionError, match="recomputed"):
        molecules.read_molecules(path, radius=3, cache=cache)


def test_labels_other_than_0_1_are_refused(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("smiles,A\nCCO,2\n")
    with pytest.raises(DataError, match="line 2"):
        molecules.read_table(path)
    with pytest.raises(DataError, match="not found"):
        molecules.read_table(tmp_path / "missing.csv")


@pytest.mark.parametrize(("n", "held"), [(12, 3), (27, 6), (17, 5), (4, 1)])
def test_assay_split_holds_out_the_last_fold(n, held):
    train, test = molecules.assay_split(n)
    assert test == list(range(n - held, n)) and train == list(range(n - held))


def test_registered_reader_gives_assay_classes(tmp_path, monkeypatch):
    monkeypatch.setenv("SIAMKIT_CACHE", str(tmp_path / "cache"))
    path = write_csv(tmp_path)
    splits = build_dataset("tox21", path, val_fraction=0.3, seed=1)
    # 4 assays -> assays 0-2 train/val, assay 3 (D) held out
    assert set(splits.test.groups.tolist()) == {3}
    assert set(splits.train.groups.tolist()) <= {0, 1, 2}
    assert splits.train.items.dtype == torch.uint8
    assert set(splits.train.items.unique().tolist()) <= {0, 255}
    labels = splits.test.labels - 2 * splits.test.groups
    assert set(labels.tolist()) == {0, 1}
    assert splits.test.classes[int(splits.test.labels[0])].startswith("D:")


def test_support_and_query_do_not_overlap():
    active = np.array([1] * 12 + [0] * 40)
    rng = np.random.default_rng(0)
    for n_pos, n_neg in me.SETTINGS:
        support, query = me.draw_support(active, n_pos, n_neg, rng)
        assert len(np.intersect1d(support, query)) == 0
        assert len(support) + len(query) == len(active)
        assert active[support].sum() == n_pos and (active[support] == 0).sum() == n_neg
    with pytest.raises(DataError, match="at least 13 actives"):
        me.draw_support(active, 12, 10, rng)


def synthetic_task(seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Actives around one direction, inactives around another, in 16-d."""
    gen = torch.Generator().manual_seed(seed)
    y = np.array([1] * 30 + [0] * 70)
    centre = torch.where(torch.from_numpy(y)[:, None] == 1, 1.0, -1.0) * torch.eye(16)[0]
    return centre + 0.5 * torch.randn(100, 16, generator=gen), y


@pytest.mark.parametrize("method", me.EMBEDDING_SCORERS)
def test_scorers_pick_the_actives(method):
    x, y = synthetic_task()
    support, query = me.draw_support(y, 5, 10, np.random.default_rng(0))
    scores = me.embedding_scores(x[query], x[support], torch.from_numpy(y[support]), method)
    assert me.roc_auc(y[query], scores.numpy()) > 0.95
    # shuffled support labels carry no information
    flipped = 1 - y[support]
    scores = me.embedding_scores(x[query], x[support], torch.from_numpy(flipped), method)
    assert me.roc_auc(y[query], scores.numpy()) < 0.05


def test_tanimoto_and_forest_on_fingerprints():
    rng = np.random.default_rng(0)
    y = np.array([1] * 20 + [0] * 40)
    fps = (rng.random((60, 64)) < 0.1).astype(np.uint8)
    fps[y == 1, :8] = 1  # actives share a substructure
    assert me.tanimoto(fps[:1], fps[:1])[0, 0] == pytest.approx(1.0)
    support, query = me.draw_support(y, 5, 10, rng)
    tan = me.tanimoto_scores(fps[query], fps[support], y[support])
    forest = me.random_forest_scores(fps[query], fps[support], y[support], seed=0, trees=20)
    assert me.roc_auc(y[query], tan) > 0.9 and me.roc_auc(y[query], forest) > 0.9


def test_episode_aucs_are_the_same_episodes_for_every_scorer(tmp_path):
    data = molecules.read_molecules(write_csv(tmp_path), cache=tmp_path / "cache")
    seen: dict[str, list] = {"a": [], "b": []}

    def recorder(name):
        def run(q, s, y, rng):
            seen[name].append(tuple(s))
            return np.arange(len(q), dtype=float)

        return run

    out = me.episode_aucs(data, [2], {"a": recorder("a"), "b": recorder("b")}, 1, 1, episodes=4)
    assert seen["a"] == seen["b"] and len(out["a"]["C"]) == 4
    assert me.summarise(out["a"])["episodes"] == 4


def test_evaluator_recognises_the_molecule_files(tmp_path):
    assert not me.is_molecule_data(tmp_path)
    path = write_csv(tmp_path)
    assert me.is_molecule_data(tmp_path) and me.is_molecule_data(path)
    assert not me.is_molecule_data(tmp_path / "cache")
