"""Offline signatures: the ``genuine/W/``, ``forged/W/`` tree, writer-disjoint folds and pairs.

A forged image in ``forged/W/`` is a skilled forgery *of writer W*. Pairs follow SigNet
(Dey et al. 2017): genuine-genuine of one writer (label 1), genuine-skilled forgery of that
writer (label 0) and, as an extra negative type reported separately, random forgeries: a genuine
signature of another writer (label 0).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import KFold
from torch import Tensor

from siamkit.data.batches import Augment, take
from siamkit.data.datasets import DATASETS
from siamkit.data.labelled import LabelledData, Splits
from siamkit.data.paths import dataset_dir
from siamkit.data.signature_preprocess import SignaturePreprocess
from siamkit.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".pgm"}
PAIR_KINDS = ("genuine", "skilled", "random")


@dataclass(frozen=True)
class SignatureSet:
    """Every image of the tree: its path, the writer it shows or imitates, and whether forged."""

    paths: list[Path]
    writers: np.ndarray  # (N,) str: the writer whose signature the image is (or imitates)
    forged: np.ndarray  # (N,) bool

    def __len__(self) -> int:
        return len(self.paths)

    def writer_ids(self) -> list[str]:
        """The distinct writers, sorted."""
        return sorted(set(self.writers.tolist()))

    def of_writers(self, writers: Sequence[str]) -> np.ndarray:
        """Indices of every image (genuine or forged) of the given ``writers``."""
        return np.flatnonzero(np.isin(self.writers, list(writers)))

    def genuine_of(self, writer: str) -> np.ndarray:
        """Indices of the genuine signatures of ``writer``."""
        return np.flatnonzero((self.writers == writer) & ~self.forged)

    def forged_of(self, writer: str) -> np.ndarray:
        """Indices of the skilled forgeries of ``writer``."""
        return np.flatnonzero((self.writers == writer) & self.forged)


@dataclass(frozen=True)
class WriterSplit:
    """Writer ids for training, threshold choice (validation) and testing; never shared."""

    train: list[str]
    val: list[str]
    test: list[str]


@dataclass(frozen=True)
class SignaturePairs:
    """Index pairs into a :class:`SignatureSet`, labels (1 = same writer, genuine) and kinds."""

    first: np.ndarray
    second: np.ndarray
    labels: np.ndarray  # float32, 1 = genuine-genuine
    kinds: np.ndarray  # "genuine" | "skilled" | "random"

    def __len__(self) -> int:
        return len(self.labels)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_signature_tree(root: str | Path) -> SignatureSet:
    """Read ``root/genuine/<writer>/*`` and ``root/forged/<writer>/*`` (forgeries optional).

    Raises :class:`DataError` naming the folder when the layout is not as expected.
    """
    root = Path(root)
    genuine_root = root / "genuine"
    if not genuine_root.is_dir():
        raise DataError(f"signature dataset {root}: expected a folder {genuine_root}/<writer>/")
    paths: list[Path] = []
    writers: list[str] = []
    forged: list[bool] = []
    for kind in ("genuine", "forged"):
        folder = root / kind
        for writer_dir in sorted(p for p in folder.glob("*") if p.is_dir()):
            images = _images(writer_dir)
            paths += images
            writers += [writer_dir.name] * len(images)
            forged += [kind == "forged"] * len(images)
    data = SignatureSet(paths, np.array(writers, dtype=str), np.array(forged, dtype=bool))
    _check_tree(root, data)
    return data


def _check_tree(root: Path, data: SignatureSet) -> None:
    genuine_counts = {w: len(data.genuine_of(w)) for w in data.writer_ids()}
    few = sorted(w for w, n in genuine_counts.items() if n < 2)
    if len(genuine_counts) < 3 or few:
        raise DataError(
            f"signature dataset {root}: expected at least 3 writers with at least 2 genuine "
            f"images each in genuine/<writer>/; got {len(genuine_counts)} writers"
            + (f", too few genuine images for {', '.join(few)}" if few else "")
        )


def writer_folds(
    writers: list[str], n_folds: int = 5, n_val: int = 8, seed: int = 0
) -> list[WriterSplit]:
    """``n_folds`` writer-disjoint splits: each writer is a test writer in exactly one fold.

    In each fold, ``n_val`` of the remaining writers (drawn with ``seed``) choose the threshold
    and the rest train. No writer is ever in two parts of a fold.
    """
    writers = sorted(set(writers))
    if n_folds < 2 or len(writers) < n_folds + n_val + 1:
        raise DataError(
            f"writer folds: expected n_folds >= 2 and more than n_folds + n_val writers, "
            f"got n_folds={n_folds}, n_val={n_val}, {len(writers)} writers"
        )
    rng = np.random.default_rng(seed)
    folds = []
    for rest, test in KFold(n_folds, shuffle=True, random_state=seed).split(writers):
        rest = rng.permutation(rest)
        folds.append(
            WriterSplit(
                train=sorted(writers[i] for i in rest[n_val:]),
                val=sorted(writers[i] for i in rest[:n_val]),
                test=sorted(writers[i] for i in test),
            )
        )
    return folds


def signature_pairs(
    data: SignatureSet,
    writers: list[str],
    seed: int = 0,
    max_per_kind: int | None = None,
    random_per_writer: int | None = None,
) -> SignaturePairs:
    """SigNet pairs among ``writers`` only.

    Per writer: every genuine-genuine pair (label 1), every genuine-skilled forgery pair
    (label 0), and ``random_per_writer`` (default: as many as skilled) genuine-random forgery
    pairs with another of ``writers`` (label 0). ``max_per_kind`` subsamples each kind per writer.
    """
    if len(set(writers)) < 2:
        raise DataError(
            f"SigNet pairs need at least 2 writers (for random forgeries), got {writers}"
        )
    rng = np.random.default_rng(seed)
    others = {w: np.concatenate([data.genuine_of(v) for v in writers if v != w]) for w in writers}
    chunks: list[tuple[np.ndarray, str]] = []
    for writer in writers:
        genuine = data.genuine_of(writer)
        same = np.array(list(combinations(genuine, 2))).reshape(-1, 2)
        skilled = np.stack(np.meshgrid(genuine, data.forged_of(writer)), -1).reshape(-1, 2)
        n_random = random_per_writer if random_per_writer is not None else max(len(skilled), 1)
        random = np.stack([rng.choice(genuine, n_random), rng.choice(others[writer], n_random)], 1)
        for pairs, kind in ((same, "genuine"), (skilled, "skilled"), (random, "random")):
            if max_per_kind is not None and len(pairs) > max_per_kind:
                pairs = pairs[rng.choice(len(pairs), max_per_kind, replace=False)]
            chunks.append((pairs, kind))
    pairs = np.concatenate([p for p, _ in chunks]).astype(np.int64)
    kinds = np.concatenate([np.full(len(p), kind) for p, kind in chunks])
    return SignaturePairs(pairs[:, 0], pairs[:, 1], (kinds == "genuine").astype(np.float32), kinds)


class SignaturePairBatches:
    """Training batches ``(x1, x2, y)`` of SigNet pairs among ``writers``, fresh each epoch.

    ``images`` holds every image of ``data`` already preprocessed, (N, C, H, W). Each epoch
    draws ``pairs_per_epoch`` pairs: ``mix`` gives the fractions of genuine-genuine,
    genuine-skilled and genuine-random pairs. Same interface as the core batch sources
    (``set_epoch``, ``__iter__``, ``__len__``), so :func:`siamkit.training.fit` trains on it.
    """

    def __init__(
        self,
        images: Tensor,
        data: SignatureSet,
        writers: list[str],
        pairs_per_epoch: int = 2048,
        batch_size: int = 32,
        seed: int = 0,
        mix: tuple[float, float, float] = (0.5, 0.3, 0.2),
        augment: Augment | None = None,
    ) -> None:
        if len(images) != len(data):
            raise DataError(f"expected one image per signature ({len(data)}), got {len(images)}")
        if len(mix) != 3 or min(mix) < 0 or sum(mix) <= 0:
            raise DataError(f"mix: expected 3 non-negative fractions, got {mix}")
        self.images, self.data, self.writers = images, data, list(writers)
        self.pairs_per_epoch, self.batch_size, self.seed = pairs_per_epoch, batch_size, seed
        self.mix = np.asarray(mix, dtype=np.float64) / sum(mix)
        self.augment = augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose pairs ``__iter__`` yields next."""
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.pairs_per_epoch // self.batch_size)

    def epoch_pairs(self) -> SignaturePairs:
        """This epoch's pairs, in the proportions of ``mix``, shuffled."""
        seed = self.seed * 1_000_003 + self.epoch
        pool = signature_pairs(self.data, self.writers, seed)
        rng = np.random.default_rng(seed)
        counts = np.round(self.mix * self.pairs_per_epoch).astype(int)
        chosen = np.concatenate(
            [
                rng.choice(np.flatnonzero(pool.kinds == kind), n, replace=True)
                for kind, n in zip(PAIR_KINDS, counts, strict=True)
                if n > 0
            ]
        )
        chosen = rng.permutation(chosen)
        return SignaturePairs(
            pool.first[chosen], pool.second[chosen], pool.labels[chosen], pool.kinds[chosen]
        )

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        pairs = self.epoch_pairs()
        first, second = torch.from_numpy(pairs.first), torch.from_numpy(pairs.second)
        labels = torch.from_numpy(pairs.labels)
        for s in range(0, len(labels), self.batch_size):
            sl = slice(s, s + self.batch_size)
            yield (
                take(self.images, first[sl], self.augment),
                take(self.images, second[sl], self.augment),
                labels[sl],
            )


def signature_classes(data: SignatureSet) -> tuple[np.ndarray, list[str]]:
    """Class labels for generic tools: writer W's genuine images are class "W", its skilled
    forgeries class "W/forged", so a forgery never counts as the writer it imitates."""
    names = [w + ("/forged" if f else "") for w, f in zip(data.writers, data.forged, strict=True)]
    classes = sorted(set(names))
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index[n] for n in names]), classes


def signature_labelled(
    images: Tensor, data: SignatureSet, writers: Sequence[str] | None = None
) -> LabelledData:
    """Preprocessed ``images`` (one per signature of ``data``) as :class:`LabelledData` with the
    labels of :func:`signature_classes` and writers as groups, restricted to ``writers`` if given.

    With core :class:`~siamkit.data.batches.ClassBatches` and ``groups_per_batch``, each batch
    then holds a few writers' genuine signatures *and* their skilled forgeries, so a batch-hard
    miner finds a writer's forgeries as its hardest negatives.
    """
    if len(images) != len(data):
        raise DataError(f"expected one image per signature ({len(data)}), got {len(images)}")
    labels, classes = signature_classes(data)
    names = data.writer_ids()
    groups = np.array([names.index(w) for w in data.writers])
    every = LabelledData(images, torch.from_numpy(labels), classes, torch.from_numpy(groups), names)
    if writers is None:
        return every
    return every.subset(torch.from_numpy(data.of_writers(writers)))


@DATASETS.register("signatures")
def signatures(
    data_dir: Path | None = None,
    fold: int = 0,
    n_folds: int = 5,
    n_val: int = 8,
    seed: int = 0,
    size: Sequence[int] = (155, 220),
    canvas: Sequence[int] = (310, 440),
    mean: float = 0.0,
    std: float = 1.0,
) -> Splits:
    """The signature tree as writer-disjoint :class:`Splits` (fold ``fold`` of ``n_folds``).

    Items are SigNet-preprocessed images (``size``, ``canvas``, ``mean``, ``std`` as in
    :class:`SignaturePreprocess`); labels follow :func:`signature_classes`; ``groups``
    are writers (``group_names`` their ids).
    """
    data = read_signature_tree(dataset_dir("signatures", data_dir))
    split = writer_folds(data.writer_ids(), n_folds, n_val, seed)[fold]
    preprocess = SignaturePreprocess(size, canvas, mean=mean, std=std)
    every = signature_labelled(preprocess(data.paths), data)

    def part(names: list[str]) -> LabelledData:
        return every.subset(torch.from_numpy(data.of_writers(names)))

    return Splits(part(split.train), part(split.val), part(split.test), preprocess.spec)
