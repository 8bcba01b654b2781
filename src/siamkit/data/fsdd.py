"""The Free Spoken Digit Dataset (FSDD): 6 speakers x 10 digits x 50 takes, 8 kHz mono WAV,
named ``recordings/{digit}_{speaker}_{take}.wav``.

Splits are **speaker-disjoint** (leave speakers out), for two tasks:

- ``task: keywords`` (one-shot keyword spotting for a new voice): the classes are the **digits**;
  ``fold`` k (0-5) holds out speaker :data:`SPEAKERS`\\[k] for testing, the other five speakers
  train, and ``val_fraction`` of their takes (stratified by digit) validate. Each item's group is
  its speaker, so episodes can be drawn within one speaker.
- ``task: speakers`` (speaker verification): the classes are the **speakers**; ``fold`` k (0-2)
  holds out the pair :data:`SPEAKER_PAIRS`\\[k] for testing (verification among two voices never
  heard in training), the other four speakers train and ``val_fraction`` of their takes validate.
  Each item's group is its digit.

Every recording becomes a log-mel spectrogram (1, n_mels, frames) with the ``audio``
preprocessor (:class:`siamkit.data.audio.AudioPreprocessor`, whose spec the splits carry, so a
saved model reads raw WAV files the same way). The features of the whole dataset are computed once
per preprocessing setting and cached as a safetensors file in ``$SIAMKIT_CACHE`` (no pickles),
keyed by the file names and sizes and the settings.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from siamkit.checkpoint import load_tensors, save_tensors
from siamkit.data.audio import AudioPreprocessor
from siamkit.data.datasets import DATASETS
from siamkit.data.labelled import LabelledData, Splits
from siamkit.data.paths import cache_dir, dataset_dir
from siamkit.data.splits import split_items
from siamkit.errors import CheckpointError, ConfigError, DataError

NAME = "fsdd"
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
SPEAKER_PAIRS = (("george", "jackson"), ("lucas", "nicolas"), ("theo", "yweweler"))
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FILE_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")
CACHE_VERSION = 1
Task = Literal["keywords", "speakers"]


@dataclass
class Recordings:
    """Every recording of a folder: paths, digit, speaker (index into ``speakers``) and take."""

    files: list[Path]
    digits: Tensor
    speakers: Tensor
    takes: Tensor
    speaker_names: list[str]


def recordings_dir(root: Path) -> Path:
    """``root/recordings`` (the repository layout) or ``root`` itself if it holds the WAVs."""
    return root / "recordings" if (root / "recordings").is_dir() else root


def list_recordings(root: str | Path) -> Recordings:
    """The FSDD-named WAV files under ``root`` (or ``root/recordings``), sorted by name."""
    folder = recordings_dir(Path(root))
    if not folder.is_dir():
        raise DataError(f"{root}: FSDD folder not found")
    found = sorted((f, FILE_NAME.match(f.name)) for f in folder.iterdir())
    named = [(f, m) for f, m in found if m is not None]
    if not named:
        raise DataError(
            f"{folder}: no FSDD recordings (expected files named "
            "{digit}_{speaker}_{take}.wav)"
        )
    names = sorted({m.group(2) for _, m in named})
    return Recordings(
        [f for f, _ in named],
        torch.tensor([int(m.group(1)) for _, m in named]),
        torch.tensor([names.index(m.group(2)) for _, m in named]),
        torch.tensor([int(m.group(3)) for _, m in named]),
        names,
    )


def _cache_key(recordings: Recordings, pre: AudioPreprocessor) -> str:
    listing = [(f.name, f.stat().st_size) for f in recordings.files]
    blob = json.dumps([CACHE_VERSION, pre.params, listing]).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def features(recordings: Recordings, pre: AudioPreprocessor, cache: bool = True) -> Tensor:
    """Log-mel features (N, 1, n_mels, frames) of every recording, from the cache if computed
    before with the same files and settings."""
    path = cache_dir() / f"fsdd-{_cache_key(recordings, pre)}.safetensors"
    if cache and path.is_file():
        try:
            x = load_tensors(path)["features"]
            if len(x) == len(recordings.files):
                return x
        except (CheckpointError, KeyError):
            pass  # damaged cache: recompute
    x = pre([str(f) for f in recordings.files])
    if cache:
        save_tensors(path, {"features": x.contiguous()}, {"format": "siamkit-fsdd"})
    return x


def held_out(task: Task, fold: int) -> tuple[str, ...]:
    """The test speakers of ``fold`` for ``task``."""
    if task == "keywords":
        if not 0 <= fold < len(SPEAKERS):
            raise ConfigError(f"fsdd keywords: fold must be 0-{len(SPEAKERS) - 1}, got {fold}")
        return (SPEAKERS[fold],)
    if task == "speakers":
        if not 0 <= fold < len(SPEAKER_PAIRS):
            raise ConfigError(f"fsdd speakers: fold must be 0-{len(SPEAKER_PAIRS) - 1}, got {fold}")
        return SPEAKER_PAIRS[fold]
    raise ConfigError(f"fsdd task must be 'keywords' or 'speakers', got {task!r}")


def labelled(recordings: Recordings, items: Any, task: Task) -> LabelledData:
    """The recordings as classes of ``task``: digits grouped by speaker, or speakers grouped by
    digit."""
    if task == "keywords":
        return LabelledData(
            items,
            recordings.digits,
            list(DIGIT_WORDS),
            recordings.speakers,
            recordings.speaker_names,
        )
    return LabelledData(
        items, recordings.speakers, recordings.speaker_names, recordings.digits, list(DIGIT_WORDS)
    )


def speaker_split(
    data: LabelledData, speakers: Tensor, test_speakers: Tensor, val_fraction: float, seed: int
) -> Splits:
    """Test: every take of ``test_speakers``; train/val: the other speakers' takes, split
    ``1 - val_fraction`` / ``val_fraction`` stratified by class."""
    test_mask = torch.isin(speakers, test_speakers)
    if not test_mask.any() or test_mask.all():
        raise DataError("fsdd: the held-out speakers must have recordings, and not be everyone")
    known = split_items(
        data.subset(torch.nonzero(~test_mask).squeeze(1)), (1 - val_fraction, val_fraction, 0), seed
    )
    return Splits(known.train, known.val, data.subset(torch.nonzero(test_mask).squeeze(1)))


@DATASETS.register(NAME)
def fsdd(
    data_dir: Path | None = None,
    task: Task = "keywords",
    fold: int = 0,
    val_fraction: float = 0.1,
    seed: int = 0,
    cache: bool = True,
    **audio: int,
) -> Splits:
    """FSDD split by speaker for ``task`` and ``fold`` (see the module docstring); ``audio``
    settings (``n_mels``, ``frames``, ...) go to :class:`AudioPreprocessor`."""
    if not 0 < val_fraction < 1:
        raise ConfigError(f"fsdd val_fraction must be in (0, 1), got {val_fraction}")
    test_names = held_out(task, fold)
    pre = AudioPreprocessor(**audio)
    recordings = list_recordings(dataset_dir(NAME, data_dir))
    missing = [s for s in test_names if s not in recordings.speaker_names]
    if missing:
        raise DataError(f"fsdd: held-out speaker(s) {missing} have no recordings")
    data = labelled(recordings, features(recordings, pre, cache), task)
    test_ids = torch.tensor([recordings.speaker_names.index(s) for s in test_names])
    splits = speaker_split(data, recordings.speakers, test_ids, val_fraction, seed)
    splits.preprocess = pre.spec.model_dump()
    return splits
