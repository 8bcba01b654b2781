"""Why random within-alphabet episodes are harder than Lake et al.'s official runs.

The official 400 trials (``all_runs.zip``) are 20-way 1-shot within one alphabet, like the
random within-alphabet episodes of ``benchmarks/omniglot.py``, yet a model scores about ten
points higher on them. This script finds each official image in the evaluation zip (by its
embedding: the same pixels give the same vector), reads off the run's alphabet, characters and
drawers, and scores one saved model (no test-time augmentation) on episodes that keep one of
those choices and draw the rest at random:

1. the official trials;
2. the run's 20 characters, support and query images of random drawers;
3. 20 random characters of the run's alphabet, the run's two drawers (support, query);
4. 20 random characters of the run's alphabet, random drawers;
5. random within-alphabet episodes over all 20 evaluation alphabets (benchmarks/omniglot.py),
   and per alphabet.

    .venv/bin/python benchmarks/omniglot_protocol.py [--model DIR] [--draws 200]

Writes benchmarks/results/omniglot-protocol.md and .json.
"""

from __future__ import annotations

import argparse
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import torch
from torch import Tensor

import siamkit
from benchmarks_common import markdown_table, shown, write_table
from siamkit.data.episodes import Episode, sample_episodes
from siamkit.data.omniglot import png_members, read_zip
from siamkit.data.paths import dataset_dir
from siamkit.errors import DataError
from siamkit.evaluation.embedding import embed_all
from siamkit.evaluation.fewshot import episode_accuracy, mean_ci95
from siamkit.evaluation.omniglot_runs import Run, read_runs

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "runs" / "omniglot-bench" / "omniglot-batch-hard" / "model"
WAYS = 20


@dataclass(frozen=True)
class EvaluationSet:
    """The evaluation alphabets' images with their character, alphabet and drawer (1-20)."""

    images: Tensor
    labels: Tensor
    groups: Tensor
    drawers: Tensor
    alphabets: list[str]

    def of(self, character: int, drawer: int | None = None) -> Tensor:
        """Indices of a character's images (by one drawer when given)."""
        mask = self.labels == character
        if drawer is not None:
            mask &= self.drawers == drawer
        return mask.nonzero().flatten()


def evaluation_set(zip_path: Path, size: int) -> EvaluationSet:
    """The evaluation zip at ``size`` px; the drawer is the file name's suffix (``0709_03``)."""
    data = read_zip(zip_path, size)
    with zipfile.ZipFile(zip_path) as archive:
        names = [PurePosixPath(m).stem for m, _, _ in png_members(archive, zip_path)]
    drawers = torch.tensor([int(name.rsplit("_", 1)[1]) for name in names])
    return EvaluationSet(data.images, data.labels, data.groups, drawers, data.alphabets)


def locate(model: siamkit.Model, images: list, reference: Tensor) -> Tensor:
    """Index in the evaluation set of each official image: the one with the same embedding (up to
    float rounding of batched inference, ~1e-3; different images are ~0.3 apart)."""
    distances = torch.cdist(model.embed(images), reference)
    nearest = distances.min(1)
    if (nearest.values > 1e-2).any():
        raise DataError("an official run image is not in images_evaluation.zip")
    return nearest.indices


def episode(support: list[int], query: list[int]) -> Episode:
    """One query per class; class ``i`` is ``support[i]``."""
    ways = torch.arange(len(support))
    return Episode(torch.tensor(support), ways, torch.tensor(query), ways)


def drawn(data: EvaluationSet, characters: Tensor, drawers: tuple[int, int] | None, gen) -> Episode:
    """Support and query image of each character, from the given drawers or two random ones."""
    support, query = [], []
    for character in characters.tolist():
        if drawers is None:
            members = data.of(character)
            pick = members[torch.randperm(len(members), generator=gen)[:2]]
            support.append(int(pick[0]))
            query.append(int(pick[1]))
        else:
            support.append(int(data.of(character, drawers[0])[0]))
            query.append(int(data.of(character, drawers[1])[0]))
    return episode(support, query)


def random_characters(data: EvaluationSet, alphabet: int, gen) -> Tensor:
    characters = data.labels[data.groups == alphabet].unique()
    return characters[torch.randperm(len(characters), generator=gen)[:WAYS]]


def accuracy(accuracies: Tensor) -> str:
    """Mean accuracy ± 95% CI in percent."""
    mean, ci = mean_ci95(accuracies)
    return f"{100 * mean:.1f} ± {100 * ci:.1f}"


def row(name: str, accuracies: Tensor, episodes: int) -> dict[str, str | int]:
    return {"episodes": name, "count": episodes, "accuracy %": accuracy(accuracies)}


@dataclass
class Decomposition:
    """Per official run: accuracies of the official episode and of each kind of random one."""

    official: list[Tensor] = field(default_factory=list)
    same_characters: list[Tensor] = field(default_factory=list)
    same_drawers: list[Tensor] = field(default_factory=list)
    same_alphabet: list[Tensor] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)


def decompose(
    model: siamkit.Model, data: EvaluationSet, embeddings: Tensor, runs: list[Run], draws: int,
    gen: torch.Generator,
) -> Decomposition:  # fmt: skip
    """Score every official run and ``draws`` random episodes per run of rows 2-4."""

    def score(episodes: list[Episode]) -> Tensor:
        return episode_accuracy(model.network.head, embeddings, episodes, WAYS, "mean")

    out = Decomposition()
    for run in runs:
        support = locate(model, run.training, embeddings)
        query = locate(model, run.test, embeddings)[run.answers.argsort()]
        alphabet = int(data.groups[support[0]])
        drawers = (int(data.drawers[support[0]]), int(data.drawers[query[0]]))
        out.official.append(score([episode(support.tolist(), query.tolist())]))
        out.same_characters.append(
            score([drawn(data, data.labels[support], None, gen) for _ in range(draws)])
        )
        out.same_drawers.append(score([
            drawn(data, random_characters(data, alphabet, gen), drawers, gen) for _ in range(draws)
        ]))  # fmt: skip
        out.same_alphabet.append(score([
            drawn(data, random_characters(data, alphabet, gen), None, gen) for _ in range(draws)
        ]))  # fmt: skip
        out.runs.append({
            "run": run.name, "alphabet": data.alphabets[alphabet],
            "support drawers": sorted(set(data.drawers[support].tolist())),
            "query drawers": sorted(set(data.drawers[query].tolist())),
            "official %": f"{100 * float(out.official[-1].mean()):.0f}",
            "same characters, random drawers %":
                f"{100 * float(out.same_characters[-1].mean()):.1f}",
        })  # fmt: skip
    return out


def per_alphabet(
    head: torch.nn.Module, data: EvaluationSet, embeddings: Tensor, used: list[str], draws: int,
    seed: int,
) -> list[dict[str, str | int]]:  # fmt: skip
    """Random within-alphabet 20-way 1-shot accuracy of each alphabet."""
    rows = []
    for g, name in enumerate(data.alphabets):
        inside = (data.groups == g).nonzero().flatten()
        eps = sample_episodes(data.labels[inside], WAYS, 1, 1, draws, seed)
        acc = episode_accuracy(head, embeddings[inside], eps, WAYS, "mean")
        rows.append({"alphabet": name, "characters": len(data.labels[inside].unique()),
                     "official runs": used.count(name), "accuracy %": accuracy(acc)})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MODEL, help="a saved Omniglot model folder")
    parser.add_argument("--draws", type=int, default=200, help="random episodes per run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = dataset_dir("omniglot")
    model = siamkit.load(args.model)
    head = model.network.head
    data = evaluation_set(root / "images_evaluation.zip", model.config.preprocess.params["size"][0])
    embeddings = embed_all(model.network, data.images)
    gen = torch.Generator().manual_seed(args.seed)
    runs = read_runs(root / "all_runs.zip")
    parts = decompose(model, data, embeddings, runs, args.draws, gen)
    n = args.draws * len(runs)
    all_random = sample_episodes(data.labels, WAYS, 1, 1, 1000, args.seed, groups=data.groups)
    rows = [
        row("1. the official trials (CI over the 20 runs)", torch.cat(parts.official), 400),
        row("2. the runs' characters, random drawers", torch.cat(parts.same_characters), n),
        row(
            "3. random characters of the runs' alphabets, the runs' drawers",
            torch.cat(parts.same_drawers),
            n,
        ),  # fmt: skip
        row(
            "4. random characters of the runs' alphabets, random drawers",
            torch.cat(parts.same_alphabet),
            n,
        ),  # fmt: skip
        row(
            "5. random within-alphabet episodes, all 20 alphabets",
            episode_accuracy(head, embeddings, all_random, WAYS, "mean"),
            1000,
        ),  # fmt: skip
    ]
    used = [r["alphabet"] for r in parts.runs]
    alphabets = per_alphabet(head, data, embeddings, used, args.draws, args.seed)
    notes = [
        f"Model: `{shown(args.model)}` (no test-time augmentation); 20-way 1-shot, one query per "
        f"class; rows 2-4: {args.draws} seeded episodes per official run (seed {args.seed}); "
        "mean ± 95% CI over episodes (row 1: over its 20 runs of 20 trials).",
        "## The official runs\n\n" + markdown_table(parts.runs),
        f"## Random within-alphabet episodes per alphabet ({args.draws} each)\n\n"
        + markdown_table(alphabets),
    ]
    summary = {"model": str(shown(args.model)), "draws": args.draws, "seed": args.seed,
               "runs": parts.runs, "per_alphabet": alphabets}  # fmt: skip
    write_table("omniglot-protocol", "Omniglot: the official runs vs random episodes", rows,
                summary, notes)  # fmt: skip


if __name__ == "__main__":
    main()
