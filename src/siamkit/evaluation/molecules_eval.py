"""One-shot drug discovery on assays never seen in training (Altae-Tran et al. 2017's protocol).

An **episode** takes one held-out assay, draws a support set of ``n_pos`` actives and ``n_neg``
inactives among its measured molecules, and scores every other measured molecule of that assay
(the queries); its figure is the ROC-AUC of those scores against the queries' true activities.
The paper's settings are 1+/1-, 5+/10- and 10+/10-; results are the mean and standard deviation
of the episode ROC-AUCs (``episodes`` per held-out assay, pooled over the assays).

Scorers (higher = more likely active), all on the same episodes:

- ``mean``: mean cosine similarity of a query's embedding to the support actives minus the mean
  to the support inactives;
- ``prototype``: cosine to the mean active embedding minus cosine to the mean inactive one;
- ``attention``: the softmax-attention weight (cosine / ``temperature``) that falls on the
  support actives (a matching-network style weighted kNN);
- baselines on the fingerprints themselves: ``tanimoto`` (highest Tanimoto similarity to a
  support active minus the highest to a support inactive) and ``random_forest``
  (scikit-learn, 100 trees, balanced class weights, trained on the support set only, as the
  paper's baseline).

``siamkit eval MODEL ../shared/datasets/molecules`` runs the model's own dataset (the one named in
its recipe) on its held-out assays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from siamkit.data.molecules import FILES, assay_split, molecules_path, read_molecules
from siamkit.errors import DataError
from siamkit.evaluation.tasks import Report, register_evaluator

if TYPE_CHECKING:
    from siamkit.data.molecules import MoleculeSet
    from siamkit.model import Model

SETTINGS: tuple[tuple[int, int], ...] = ((1, 1), (5, 10), (10, 10))
"""(actives, inactives) in the support set, the paper's settings."""
EMBEDDING_SCORERS = ("mean", "prototype", "attention")
BASELINES = ("tanimoto", "random_forest")

# A scorer maps (query rows, support rows, support 0/1 labels, rng) to one score per query.
Scorer = Callable[[np.ndarray, np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


def draw_support(
    active: np.ndarray, n_pos: int, n_neg: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(support, query) positions into ``active`` (one assay's 0/1 labels): ``n_pos`` actives and
    ``n_neg`` inactives drawn without replacement, every other molecule a query."""
    pos, neg = np.flatnonzero(active == 1), np.flatnonzero(active == 0)
    if len(pos) < n_pos + 1 or len(neg) < n_neg + 1:
        raise DataError(
            f"a {n_pos}+/{n_neg}- support set needs at least {n_pos + 1} actives and "
            f"{n_neg + 1} inactives, the assay has {len(pos)} and {len(neg)}"
        )
    support = np.concatenate(
        [rng.choice(pos, n_pos, replace=False), rng.choice(neg, n_neg, replace=False)]
    )
    query = np.setdiff1d(np.arange(len(active)), support)
    return support, query


def embedding_scores(
    query: Tensor, support: Tensor, support_y: Tensor, method: str, temperature: float = 0.1
) -> Tensor:
    """Scores of ``query`` embeddings (Q, D) against a labelled ``support`` (S, D)."""
    q, s = F.normalize(query.float(), dim=1), F.normalize(support.float(), dim=1)
    pos, neg = support_y == 1, support_y == 0
    if method == "mean":
        sim = q @ s.T
        return sim[:, pos].mean(1) - sim[:, neg].mean(1)
    if method == "prototype":
        protos = F.normalize(torch.stack([s[pos].mean(0), s[neg].mean(0)]), dim=1)
        sim = q @ protos.T
        return sim[:, 0] - sim[:, 1]
    if method == "attention":
        weights = torch.softmax(q @ s.T / temperature, dim=1)
        return weights[:, pos].sum(1)
    raise DataError(f"unknown scorer {method!r}; known: {', '.join(EMBEDDING_SCORERS)}")


def tanimoto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tanimoto similarities (A, B) of two sets of 0/1 fingerprints."""
    a, b = a.astype(np.float32), b.astype(np.float32)
    common = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - common
    return common / np.maximum(union, 1.0)


def tanimoto_scores(query: np.ndarray, support: np.ndarray, support_y: np.ndarray) -> np.ndarray:
    """Highest Tanimoto similarity to a support active minus the highest to an inactive."""
    sim = tanimoto(query, support)
    return sim[:, support_y == 1].max(1) - sim[:, support_y == 0].max(1)


def random_forest_scores(
    query: np.ndarray, support: np.ndarray, support_y: np.ndarray, seed: int, trees: int = 100
) -> np.ndarray:
    """P(active) from a random forest trained on the support set only."""
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(trees, class_weight="balanced", random_state=seed, n_jobs=1)
    forest.fit(support, support_y)
    return forest.predict_proba(query)[:, list(forest.classes_).index(1)]


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC of ``scores`` for the 0/1 labels ``y`` (ties count one half)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, scores))


def episode_aucs(
    data: MoleculeSet,
    tasks: Sequence[int],
    scorers: dict[str, Scorer],
    n_pos: int,
    n_neg: int,
    episodes: int = 20,
    seed: int = 0,
) -> dict[str, dict[str, list[float]]]:
    """``{scorer: {assay name: [ROC-AUC of each episode]}}``; every scorer sees the same
    ``episodes`` support sets per assay (seeded by ``seed``, the assay and the setting)."""
    out: dict[str, dict[str, list[float]]] = {name: {} for name in scorers}
    for t in tasks:
        rows, active = data.assay(t)
        rng = np.random.default_rng([seed, t, n_pos, n_neg])
        for _ in range(episodes):
            support, query = draw_support(active, n_pos, n_neg, rng)
            for name, scorer in scorers.items():
                scores = scorer(rows[query], rows[support], active[support], rng)
                out[name].setdefault(data.tasks[t], []).append(roc_auc(active[query], scores))
    return out


def fingerprint_scorers(data: MoleculeSet, seed: int = 0) -> dict[str, Scorer]:
    """The two baselines, on ``data``'s fingerprints."""
    fps = data.fingerprints
    return {
        "tanimoto": lambda q, s, y, rng: tanimoto_scores(fps[q], fps[s], y),
        "random_forest": lambda q, s, y, rng: random_forest_scores(
            fps[q], fps[s], y, int(rng.integers(2**31))
        ),
    }


def embedding_scorers(
    embeddings: Tensor, methods: Sequence[str] = EMBEDDING_SCORERS
) -> dict[str, Scorer]:
    """Scorers over precomputed ``embeddings`` (N, D) of every molecule of the set."""

    def scorer(method: str) -> Scorer:
        def run(q: np.ndarray, s: np.ndarray, y: np.ndarray, rng: Any) -> np.ndarray:
            out = embedding_scores(embeddings[q], embeddings[s], torch.from_numpy(y), method)
            return out.numpy()

        return run

    return {m: scorer(m) for m in methods}


@torch.no_grad()
def embed_molecules(
    embed: Callable[[Tensor], Tensor], data: MoleculeSet, rows: np.ndarray, batch: int = 1024
) -> Tensor:
    """Embeddings (N, D) of all molecules, computed for ``rows`` only (the others stay 0)."""
    out: Tensor | None = None
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        x = torch.from_numpy(data.fingerprints[part]).float()
        e = embed(x).float().cpu()
        if out is None:
            out = torch.zeros(len(data.fingerprints), e.shape[1])
        out[torch.from_numpy(part)] = e
    if out is None:
        raise DataError("no molecules to embed")
    return out


def summarise(aucs: dict[str, list[float]]) -> dict[str, float]:
    """Mean and standard deviation of the episode ROC-AUCs pooled over assays, and the count."""
    values = np.concatenate([np.asarray(v) for v in aucs.values()])
    return {"mean": float(values.mean()), "std": float(values.std()), "episodes": len(values)}


def held_out_rows(data: MoleculeSet, tasks: Sequence[int]) -> np.ndarray:
    """Molecules measured on any of ``tasks``."""
    return np.flatnonzero((data.labels[:, list(tasks)] >= 0).any(1))


# -- siamkit eval MODEL ../shared/datasets/molecules ----------------------------------------------


def is_molecule_data(path: Path) -> bool:
    """The molecules folder (holding tox21.csv, sider.csv or muv.csv.gz) or one of those files."""
    names = set(FILES.values())
    if path.is_file():
        return path.name in names
    return path.is_dir() and any((path / n).is_file() for n in names)


def molecule_recipe(model: Model) -> dict[str, Any] | None:
    """The ``data`` block of the model's recipe when it was trained on a molecule dataset."""
    data = model.config.extra.get("recipe", {}).get("data", {})
    return data if data.get("name") in FILES else None


def is_molecule_model(model: Model) -> bool:
    """A model trained by a molecule recipe (tox21, sider, muv)."""
    return molecule_recipe(model) is not None


def evaluate_molecules(model: Model, path: Path, episodes: int = 20, seed: int = 0) -> Report:
    """Episode ROC-AUCs of the model's scorers and the Tanimoto baseline on the held-out assays
    of the model's dataset, for each support setting."""
    spec = molecule_recipe(model)
    if spec is None:
        raise DataError(f"{path}: molecule data needs a model trained by a molecule recipe")
    name, params = spec["name"], spec.get("params", {})
    file = molecules_path(name, path)
    if file.name != FILES[name]:
        raise DataError(f"{file}: the model was trained on {name} ({FILES[name]})")
    data = read_molecules(file, params.get("radius", 2), params.get("bits", 2048))
    _, test_tasks = assay_split(len(data.tasks))
    model.network.eval()
    embeddings = embed_molecules(model.network.embed, data, held_out_rows(data, test_tasks))
    scorers = {**embedding_scorers(embeddings), "tanimoto": fingerprint_scorers(data)["tanimoto"]}
    rows = []
    for n_pos, n_neg in SETTINGS:
        aucs = episode_aucs(data, test_tasks, scorers, n_pos, n_neg, episodes, seed)
        for method, per_assay in aucs.items():
            s = summarise(per_assay)
            rows.append({"support": f"{n_pos}+/{n_neg}-", "scorer": method,
                         "roc_auc": round(s["mean"], 4), "std": round(s["std"], 4)})  # fmt: skip
    notes = [
        f"{name}: held-out assays {', '.join(data.tasks[t] for t in test_tasks)}; "
        f"{episodes} episodes per assay and setting",
        f"{data.skipped} SMILES that RDKit could not parse were skipped",
    ]
    return Report(f"one-shot drug discovery on {name} (held-out assays)", rows, notes)


register_evaluator("molecules (Tox21, SIDER, MUV)", is_molecule_data, evaluate_molecules)
