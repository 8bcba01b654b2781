"""Sentence-pair datasets: STS Benchmark (scored 0-5) and MRPC (paraphrase 0/1), and their batches.

Both files are tab-separated and their sentences contain quotes, so they are split on tabs with no
CSV quoting. Every reader raises :class:`~siamkit.errors.DataError` naming the file and line when a
row is not what the format says.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from siamkit.data.labelled import LabelledData
from siamkit.data.paths import dataset_dir
from siamkit.distributed import shard_bounds
from siamkit.errors import DataError

STSB_SPLITS = {"train": "sts-train.csv", "dev": "sts-dev.csv", "test": "sts-test.csv"}
MRPC_SPLITS = {"train": "msr_paraphrase_train.txt", "test": "msr_paraphrase_test.txt"}


@dataclass
class TextPairs:
    """Sentence pairs with one target each: a 0-5 similarity score or a 0/1 label (1 = same)."""

    a: list[str]
    b: list[str]
    scores: Tensor

    def __post_init__(self) -> None:
        self.scores = torch.as_tensor(self.scores, dtype=torch.float32)
        if not len(self.a) == len(self.b) == len(self.scores):
            raise DataError(
                f"text pairs need one score per pair; got {len(self.a)} first sentences, "
                f"{len(self.b)} second sentences and {len(self.scores)} scores"
            )

    def __len__(self) -> int:
        return len(self.scores)

    def subset(self, indices: Sequence[int] | Tensor) -> TextPairs:
        """The pairs at ``indices``."""
        idx = torch.as_tensor(indices, dtype=torch.long).tolist()
        return TextPairs([self.a[i] for i in idx], [self.b[i] for i in idx], self.scores[idx])

    def texts(self) -> list[str]:
        """Every sentence of both sides (e.g. to build a vocabulary)."""
        return self.a + self.b


def read_text_lines(path: Path, encoding: str = "utf-8") -> list[str]:
    """The lines of a text file, without line ends; a clear error if it is missing or not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}: expected UTF-8 text, got undecodable byte at offset {error.start}"
        ) from error
    return text.splitlines()


def split_file(folder: Path | None, dataset: str, files: dict[str, str], split: str) -> Path:
    """The file of ``split`` in the dataset folder, or a :class:`DataError` naming the choices."""
    if split not in files:
        raise DataError(f"{dataset}: unknown split {split!r}; expected one of {sorted(files)}")
    return dataset_dir(dataset, folder) / files[split]


def read_stsb(split: str = "train", data_dir: Path | None = None) -> TextPairs:
    """STS Benchmark pairs of ``split`` (train/dev/test) with their gold scores (0-5).

    Columns: genre, file, year, id, score, sentence 1, sentence 2 (extra source columns ignored).
    """
    path = split_file(data_dir, "stsbenchmark", STSB_SPLITS, split)
    a, b, scores = [], [], []
    for number, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 7:
            raise DataError(
                f"{path}:{number}: expected >= 7 tab-separated fields, got {len(fields)}"
            )
        score = parse_float(fields[4], path, number, "score")
        if not 0.0 <= score <= 5.0:
            raise DataError(f"{path}:{number}: expected a score in [0, 5], got {score}")
        a.append(fields[5])
        b.append(fields[6])
        scores.append(score)
    return TextPairs(a, b, scores)


def read_mrpc(split: str = "train", data_dir: Path | None = None) -> TextPairs:
    """MRPC pairs of ``split`` (train/test) with their labels (1 = paraphrase)."""
    return read_mrpc_file(split_file(data_dir, "mrpc", MRPC_SPLITS, split))


def read_mrpc_file(path: Path) -> TextPairs:
    """Pairs of one MRPC release file: Quality, #1 ID, #2 ID, #1 String, #2 String."""
    lines = read_text_lines(path, encoding="utf-8-sig")
    if not lines or not lines[0].startswith("Quality"):
        raise DataError(f"{path}: expected a header line starting with 'Quality'")
    a, b, labels = [], [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 5 or fields[0] not in ("0", "1"):
            raise DataError(
                f"{path}:{number}: expected 5 tab-separated fields starting with 0 or 1, "
                f"got {len(fields)} fields starting with {fields[0][:10]!r}"
            )
        labels.append(float(fields[0]))
        a.append(fields[3])
        b.append(fields[4])
    return TextPairs(a, b, labels)


def parse_float(text: str, path: Path, line: int, field: str) -> float:
    """``float(text)`` or a :class:`DataError` naming the file, line and field."""
    try:
        return float(text)
    except ValueError as error:
        raise DataError(
            f"{path}:{line}: expected a number in field {field}, got {text!r}"
        ) from error


def read_stsb_sources(split: str = "test", data_dir: Path | None = None) -> LabelledData:
    """The distinct sentences of an STS-B split labelled by their source corpus (MSRvid,
    headlines, images, ...): a real text-classification task for few-shot evaluation."""
    path = split_file(data_dir, "stsbenchmark", STSB_SPLITS, split)
    texts: dict[str, str] = {}
    for line in read_text_lines(path):
        fields = line.split("\t")
        if len(fields) >= 7:
            for sentence in fields[5:7]:
                texts.setdefault(sentence, fields[1])
    classes = sorted(set(texts.values()))
    labels = [classes.index(source) for source in texts.values()]
    return LabelledData(list(texts), torch.tensor(labels), classes)


@dataclass
class TextSplits:
    """Train / validation / test pairs of a sentence-pair dataset, and how to read its targets:
    scores lie in ``[0, max_score]`` and ``score >= label_threshold`` means "same" (1)."""

    train: TextPairs
    val: TextPairs
    test: TextPairs
    max_score: float
    label_threshold: float


def read_text_splits(
    name: str, data_dir: Path | None = None, val_fraction: float = 0.1, seed: int = 0
) -> TextSplits:
    """``stsb``: train/dev/test as given, "same" = score >= 4 (mostly equivalent). ``mrpc``: a
    seeded ``val_fraction`` of train held out for validation (MRPC has no dev split)."""
    if name == "stsb":
        train, dev, test = (read_stsb(s, data_dir) for s in ("train", "dev", "test"))
        return TextSplits(train, dev, test, max_score=5.0, label_threshold=4.0)
    if name == "mrpc":
        full = read_mrpc("train", data_dir)
        order = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed))
        n_val = max(1, int(val_fraction * len(full)))
        train, val = full.subset(order[n_val:]), full.subset(order[:n_val])
        return TextSplits(train, val, read_mrpc("test", data_dir), 1.0, 0.5)
    raise DataError(f"unknown sentence-pair dataset {name!r}; expected 'stsb' or 'mrpc'")


class TextPairBatches:
    """Shuffled mini-batches ``(texts_a, texts_b, scores)`` of one or more :class:`TextPairs`.

    With several pair sets (e.g. STS-B train and MRPC train) every batch comes from one set, so
    a ranking loss only compares targets of one dataset; the batches of all sets are shuffled
    together. The order depends only on ``seed`` and the epoch set by :meth:`set_epoch`, so
    training is reproducible and resumable. With :meth:`set_shard` (data-parallel training) the
    batches are drawn with ``world_size * batch_size`` pairs and each process yields its share.
    """

    def __init__(
        self, pairs: TextPairs | Sequence[TextPairs], batch_size: int = 16, seed: int = 0
    ) -> None:
        self.sources = [pairs] if isinstance(pairs, TextPairs) else list(pairs)
        if not self.sources or any(len(source) == 0 for source in self.sources):
            raise DataError("text pair batches: a pair set is empty")
        self.batch_size = batch_size
        self.seed = seed
        self.epoch, self.rank, self.world_size = 0, 0, 1

    def set_epoch(self, epoch: int) -> None:
        """Choose the shuffling of epoch ``epoch``."""
        self.epoch = epoch

    def set_shard(self, rank: int, world_size: int) -> None:
        """Draw global batches of ``world_size * batch_size`` pairs and yield share ``rank``."""
        shard_bounds(0, rank, world_size)  # checks the rank
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        size = self.batch_size * self.world_size
        return sum(-(-len(source) // size) for source in self.sources)

    def __iter__(self) -> Iterator[tuple[list[str], list[str], Tensor]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        batches, size = [], self.batch_size * self.world_size
        for source in self.sources:
            order = torch.randperm(len(source), generator=generator)
            last = len(order) - self.world_size + 1  # no process gets an empty share
            batches += [(source, order[i : i + size]) for i in range(0, last, size)]
        if len(self.sources) > 1:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        for source, indices in batches:
            start, stop = shard_bounds(len(indices), self.rank, self.world_size)
            batch = source.subset(indices[start:stop])
            yield batch.a, batch.b, batch.scores


def read_labelled_texts(path: Path) -> tuple[list[str], list[str]]:
    """Texts and labels from a UTF-8 file of ``label<TAB>text`` lines (blank lines skipped)."""
    texts, labels = [], []
    for number, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        label, sep, text = line.partition("\t")
        if not sep or not label.strip() or not text.strip():
            raise DataError(f"{path}:{number}: expected 'label<TAB>text', got {line[:40]!r}")
        labels.append(label.strip())
        texts.append(text)
    if not texts:
        raise DataError(f"{path}: no labelled texts found")
    return texts, labels


def read_pair_file(path: Path) -> TextPairs:
    """Labelled sentence pairs from an MRPC release file (header ``Quality``) or a UTF-8 file of
    ``label<TAB>text a<TAB>text b`` lines with labels 0/1."""
    path = Path(path)
    lines = read_text_lines(path, encoding="utf-8-sig")
    if lines and lines[0].startswith("Quality"):
        return read_mrpc_file(path)
    a, b, labels = [], [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3 or fields[0] not in ("0", "1"):
            raise DataError(f"{path}:{number}: expected '0|1<TAB>text a<TAB>text b'")
        labels.append(float(fields[0]))
        a.append(fields[1])
        b.append(fields[2])
    return TextPairs(a, b, labels)
