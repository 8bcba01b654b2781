"""Face recognition on people a model never saw: verification, closed-set and open-set
identification, the last two through a real :class:`siamkit.gallery.Gallery`.

- **verification**: every pair of images, cosine of the embeddings: EER and TAR at FAR = 1%;
- **closed-set identification**: one enrolled image per person, every other image a probe:
  rank-1 and rank-5 accuracy (averaged over ``trials`` random choices of the enrolled image);
- **open-set identification** (detection and identification): half the people enrolled with one
  image each, the other half impostors; DIR at FAR = 1% is the fraction of probes of enrolled
  people that are identified correctly with a score at or above the threshold that accepts at
  most 1% of the impostors' probes (averaged over ``trials`` random halves).

``siamkit eval MODEL ../shared/datasets/att_faces`` runs all three on the people the model's
recipe held out for testing; on any other folder of people (``<person>/<image>``; any folder for
a model trained on faces, the AT&T layout for other models) on every person in it the model never
trained or validated on (see :mod:`siamkit.evaluation.seen_classes`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from siamkit.data.faces import NAME, check_layout
from siamkit.errors import DataError
from siamkit.evaluation.image_folder_eval import class_files, is_class_tree, unseen_part
from siamkit.evaluation.seen_classes import Nouns
from siamkit.evaluation.tasks import EVALUATORS, Report, register_evaluator
from siamkit.evaluation.verification import equal_error_rate, tar_at_far
from siamkit.gallery import Gallery, unit_vectors
from siamkit.gallery.calibration import threshold_at_far
from siamkit.gallery.faiss_store import FaissStore
from siamkit.model import Model

FAR = 0.01
OPEN_SET_PEOPLE = 4
PEOPLE = Nouns("person", "people")


def verification_metrics(embeddings: Any, labels: Any) -> dict[str, float]:
    """EER and TAR@FAR=1% over all pairs of images (cosine similarity)."""
    x, y = unit_vectors(embeddings), np.asarray(labels)
    i, j = np.triu_indices(len(y), k=1)
    scores = np.einsum("nd,nd->n", x[i], x[j])
    same = (y[i] == y[j]).astype(np.int64)
    eer, _ = equal_error_rate(scores, same)
    return {"eer": eer, "tar_at_far_1pct": tar_at_far(scores, same, FAR), "pairs": len(same)}


def _enroll_one_each(
    gallery: Gallery, x: np.ndarray, y: np.ndarray, people: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Enroll one random image of each person; returns the mask of the enrolled images."""
    enrolled = np.zeros(len(y), dtype=bool)
    for person in people:
        pick = rng.choice(np.flatnonzero(y == person))
        gallery.enroll(str(person), x[pick : pick + 1])
        enrolled[pick] = True
    return enrolled


def closed_set(
    embeddings: Any, labels: Any, trials: int = 10, seed: int = 0, ranks: tuple[int, ...] = (1, 5)
) -> dict[str, float]:
    """Rank-k identification accuracy with one enrolled image per person."""
    x, y = unit_vectors(embeddings), np.asarray(labels)
    rng = np.random.default_rng(seed)
    hits = {r: [] for r in ranks}
    for _ in range(trials):
        with tempfile.TemporaryDirectory() as tmp, Gallery(FaissStore(tmp)) as gallery:
            enrolled = _enroll_one_each(gallery, x, y, np.unique(y), rng)
            answers = gallery.identify(x[~enrolled], k=max(ranks))
        truth = y[~enrolled].astype(str)
        for r in ranks:
            found = [
                t in [c.identity for c in a.candidates[:r]]
                for a, t in zip(answers, truth, strict=True)
            ]
            hits[r].append(np.mean(found))
    return {f"rank{r}": float(np.mean(v)) for r, v in hits.items()}


def open_set(
    embeddings: Any,
    labels: Any,
    trials: int = 10,
    seed: int = 0,
    far: float = FAR,
    threshold: float | None = None,
) -> dict[str, float]:
    """DIR at FAR = ``far`` with half the people enrolled (one image each), half impostors.

    With a ``threshold`` (e.g. the model's calibrated one for a gallery of half the people)
    also the DIR and FAR (the share of stranger probes accepted) at it.
    """
    x, y = unit_vectors(embeddings), np.asarray(labels)
    people = np.unique(y)
    if len(people) < OPEN_SET_PEOPLE:
        raise DataError(
            f"open-set identification needs at least {OPEN_SET_PEOPLE} people, got {len(people)}"
        )
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {
        "dir_at_far_1pct": [],
        "dir_at_threshold": [],
        "far_at_threshold": [],
    }  # noqa: E501
    for _ in range(trials):
        known = rng.permutation(people)[: len(people) // 2]
        with tempfile.TemporaryDirectory() as tmp, Gallery(FaissStore(tmp)) as gallery:
            enrolled = _enroll_one_each(gallery, x, y, known, rng)
            genuine = np.isin(y, known) & ~enrolled
            impostor = ~np.isin(y, known)
            g = gallery.identify(x[genuine], k=1)
            i = gallery.identify(x[impostor], k=1)
        g_scores = np.array([a.score for a in g])
        correct = np.array([a.identity for a in g]) == y[genuine].astype(str)
        i_scores = np.array([a.score for a in i])
        t = threshold_at_far(i_scores, far)
        out["dir_at_far_1pct"].append(float(np.mean(correct & (g_scores >= t))))
        if threshold is not None:
            out["dir_at_threshold"].append(float(np.mean(correct & (g_scores >= threshold))))
            out["far_at_threshold"].append(float(np.mean(i_scores >= threshold)))
    return {k: float(np.mean(v)) for k, v in out.items() if v}


def face_metrics(
    embeddings: Any, labels: Any, trials: int = 10, seed: int = 0, threshold: float | None = None
) -> dict[str, float]:
    """Verification, closed-set and open-set metrics of one set of (unseen) people."""
    return {
        **verification_metrics(embeddings, labels),
        **closed_set(embeddings, labels, trials, seed),
        **open_set(embeddings, labels, trials, seed, threshold=threshold),
    }


# -- siamkit eval MODEL ../shared/datasets/att_faces ----------------------------------------------


def is_att_faces(path: Path) -> bool:
    """A folder in the AT&T layout (``sN/Y.pgm``)."""
    if not path.is_dir():
        return False
    try:
        check_layout(path)
    except DataError:
        return False
    return True


def is_face_model(model: Model) -> bool:
    """A model trained by a face recipe (its data is AT&T faces): it gets the face evaluation on
    any folder of people, whatever their folder names and image format."""
    return model.config.extra.get("recipe", {}).get("data", {}).get("name") == NAME


def evaluate_faces(model: Model, root: Path) -> Report:
    """All three evaluations on the people of ``root`` the model never trained or validated on
    (on AT&T itself: the recipe's test people). Open-set identification needs 4 people."""
    from siamkit.gallery.images import cosine_threshold

    data, notes = unseen_part(model, class_files(root), root, PEOPLE)
    x, y = model.embed(data.items).numpy(), data.labels.numpy()
    threshold = cosine_threshold(model, len(np.unique(y)) // 2)  # open_set enrolls half
    metrics = {**verification_metrics(x, y), **closed_set(x, y)}
    if len(np.unique(y)) >= OPEN_SET_PEOPLE:
        metrics |= open_set(x, y, threshold=threshold)
    else:
        notes.append(f"open-set identification skipped: it needs {OPEN_SET_PEOPLE} people")
    rows = [{"metric": k, "value": v} for k, v in metrics.items()]
    shown = "none" if threshold is None else f"{threshold:.4f}"
    notes.append(
        f"{len(data)} images; open-set threshold from the model for a gallery of "
        f"{len(np.unique(y)) // 2} people: {shown}"
    )
    if model.config.extra.get("recipe", {}).get("init_weights"):
        notes.append("the encoder started from pre-trained weights, whose training people are "
                     "not known here")  # fmt: skip
    return Report(f"face recognition on {root.name}", rows, notes)


register_evaluator("AT&T faces", is_att_faces, evaluate_faces)
register_evaluator("folders of people (a face model)", is_class_tree, evaluate_faces, is_face_model)
# Before the generic class-folder evaluator, which also recognises these trees.
EVALUATORS[:0] = [EVALUATORS.pop(), EVALUATORS.pop()]
