"""The AT&T (ORL) face database: 40 people x 10 grey 92x112 images, laid out as ``sN/Y.pgm``.

People are the classes. Splits are **people-disjoint**: a seeded permutation of the 40 people is
cut into a test window of ``test_people`` (which rotates with ``fold``), a validation window of
``val_people`` right after it (used to calibrate the decision threshold), and the training people
(the rest). With the defaults (12 test, 4 validation, 24 training) folds 0, 1 and 2 have disjoint
test people; any fold index is allowed (the window wraps around the permutation).

Images are read with the core ``image`` preprocessor (PIL bilinear resize to ``size``), and the
split carries that preprocessor's spec, so a saved model reads raw ``.pgm`` files exactly like its
training items.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from siamkit.data.datasets import DATASETS, read_image_folder
from siamkit.data.labelled import LabelledData, Splits
from siamkit.data.paths import dataset_dir
from siamkit.data.transforms import ImagePreprocessor
from siamkit.errors import ConfigError, DataError

NAME = "att_faces"
NATIVE_SIZE = (112, 92)  # (H, W) of the original images


def check_layout(root: Path) -> None:
    """Raise :class:`DataError` unless ``root`` holds ``sN/`` people folders with ``.pgm`` files."""
    people = [d for d in root.iterdir() if d.is_dir() and d.name.startswith("s")]
    if not people or not any(any(d.glob("*.pgm")) for d in people):
        raise DataError(
            f"{root}: expected the AT&T layout sN/Y.pgm (one folder per person), found no "
            "sN/ folders with .pgm images"
        )


def read_att_faces(
    root: str | Path, size: Sequence[int] = (56, 46), **framing: Any
) -> LabelledData:
    """Every image under ``root`` as uint8 (N, 1, H, W); labels index the ``sN`` folders;
    ``framing`` (``crop``, ``pad_square``) as in :class:`ImagePreprocessor`."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: AT&T faces folder not found")
    check_layout(root)
    return read_image_folder(root, size, "L", **framing)


def people_folds(
    n_people: int, test_people: int, val_people: int, fold: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train, val, test) person indices of ``fold``: disjoint, seeded, test window rotating."""
    if test_people < 2 or val_people < 2 or fold < 0:
        raise ConfigError(
            f"att_faces: test_people and val_people must be >= 2 and fold >= 0; got "
            f"test_people={test_people}, val_people={val_people}, fold={fold}"
        )
    if test_people + val_people > n_people - 2:
        raise ConfigError(
            f"att_faces: {test_people} test + {val_people} validation people leave fewer than "
            f"2 of the {n_people} people for training"
        )
    perm = torch.randperm(n_people, generator=torch.Generator().manual_seed(seed))
    start = fold * test_people
    window = (start + torch.arange(test_people + val_people)) % n_people
    test, val = perm[window[:test_people]], perm[window[test_people:]]
    train = perm[~torch.isin(perm, torch.cat([test, val]))]
    return train.sort().values, val.sort().values, test.sort().values


def _people(data: LabelledData, people: torch.Tensor) -> LabelledData:
    return data.subset(torch.isin(data.labels, people).nonzero().squeeze(1))


@DATASETS.register(NAME)
def att_faces(
    data_dir: Path | None = None,
    size: Sequence[int] = (56, 46),
    fold: int = 0,
    test_people: int = 12,
    val_people: int = 4,
    seed: int = 0,
    crop: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
    pad_square: bool = False,
) -> Splits:
    """AT&T faces split by person for ``fold`` (see the module docstring); ``size`` is (H, W);
    ``crop`` and ``pad_square`` frame the raw images first (see :class:`ImagePreprocessor`)."""
    if len(size) != 2 or min(size) < 8:
        raise ConfigError(f"att_faces size: expected (height, width) >= 8 px, got {list(size)}")
    preprocessor = ImagePreprocessor(size, "L", crop=crop, pad_square=pad_square)
    data = read_att_faces(dataset_dir(NAME, data_dir), size, crop=crop, pad_square=pad_square)
    n_people = len(data.classes or [])
    train, val, test = people_folds(n_people, test_people, val_people, fold, seed)
    return Splits(
        _people(data, train),
        _people(data, val),
        _people(data, test),
        preprocessor.spec.model_dump(),
    )
