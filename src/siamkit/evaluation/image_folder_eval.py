"""``siamkit eval MODEL FOLDER`` for a folder-per-class image tree: verification at the model's
threshold and N-way 1-shot accuracy, computed from the model's own preprocessing of the files, on
the classes of the folder the model never trained or validated on (see
:mod:`siamkit.evaluation.seen_classes`)."""

from __future__ import annotations

from pathlib import Path

import torch

from siamkit.data.datasets import IMAGE_SUFFIXES
from siamkit.data.episodes import sample_episodes
from siamkit.data.labelled import LabelledData
from siamkit.data.pairs import make_pairs
from siamkit.errors import DataError
from siamkit.evaluation.fewshot import episode_accuracy, mean_ci95
from siamkit.evaluation.seen_classes import CLASSES, Nouns, seen_classes, select_unseen
from siamkit.evaluation.tasks import Report, register_evaluator
from siamkit.evaluation.verification import verification_report
from siamkit.model import Model

PAIRS, EPISODES, MAX_WAY = 5000, 1000, 5


def class_files(root: Path) -> LabelledData:
    """Image paths labelled by their class folder."""
    dirs = sorted(d for d in root.iterdir() if d.is_dir())
    files = [(f, i) for i, d in enumerate(dirs) for f in sorted(d.iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]  # fmt: skip
    if len({label for _, label in files}) < 2:
        raise DataError(f"{root}: need at least 2 class folders with images (root/<class>/<img>)")
    return LabelledData([f for f, _ in files], torch.tensor([i for _, i in files]),
                        [d.name for d in dirs])  # fmt: skip


def unseen_part(
    model: Model, data: LabelledData, root: Path, nouns: Nouns = CLASSES, minimum: int = 2
) -> tuple[LabelledData, list[str]]:
    """The items of ``data`` (read by :func:`class_files` from ``root``) whose class the model
    never trained or validated on, and notes naming what was evaluated and left out."""
    names = data.classes or []
    present = [names[i] for i in data.class_ids().tolist()]
    chosen = select_unseen(seen_classes(model), present, root, nouns, minimum)
    keep = torch.tensor([names.index(n) for n in chosen.evaluated])
    return data.subset(torch.isin(data.labels, keep).nonzero().squeeze(1)), chosen.notes


def is_class_tree(path: Path) -> bool:
    """A folder whose sub-folders hold images."""
    if not path.is_dir():
        return False
    folders = [d for d in path.iterdir() if d.is_dir()]
    return any(f.suffix.lower() in IMAGE_SUFFIXES for d in folders for f in d.iterdir())


def evaluate_class_tree(model: Model, root: Path) -> Report:
    """Verification on balanced pairs and N-way 1-shot episodes over the tree's classes that
    the model never trained or validated on."""
    data, notes = unseen_part(model, class_files(root), root)
    embeddings = model.embed(data.items)
    a, b, y = make_pairs(data.labels, PAIRS, seed=0)
    with torch.no_grad():
        scores = model.network.head(embeddings[a], embeddings[b])
    report = verification_report(scores, y, model.threshold)
    rows = [{"metric": k, "value": v} for k, v in report.items()]
    n_way = min(MAX_WAY, len(data.class_ids()))
    episodes = sample_episodes(data.labels, n_way, 1, 1, EPISODES, seed=0)
    mean, ci = mean_ci95(episode_accuracy(model.network.head, embeddings, episodes, n_way, "mean"))
    rows.append({"metric": f"{n_way}-way 1-shot accuracy", "value": f"{mean:.4f} ± {ci:.4f}"})
    notes.append(f"{len(data)} images in {len(data.class_ids())} classes from {root}")
    if model.threshold is None:
        notes.append("the model has no calibrated threshold: accuracy is at this data's EER")
    return Report(f"evaluation on {root.name}", rows, notes)


register_evaluator("image class folders", is_class_tree, evaluate_class_tree)
