"""Shared fixtures: tiny synthetic data for unit tests, and the real datasets for acceptance."""

from __future__ import annotations

import pytest
import torch

from siamkit.data.labelled import LabelledData
from siamkit.data.paths import datasets_root


@pytest.fixture
def blobs() -> LabelledData:
    """6 classes x 10 vectors of dim 8, well separated: a fast stand-in for a real dataset."""
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(6, 8, generator=gen) * 4
    labels = torch.arange(6).repeat_interleave(10)
    items = centers[labels] + 0.3 * torch.randn(60, 8, generator=gen)
    return LabelledData(items, labels, [f"c{i}" for i in range(6)])


def dataset_or_skip(name: str):
    """The folder of a real dataset, or skip the test naming what is missing."""
    folder = datasets_root() / name
    if not folder.is_dir():
        pytest.skip(f"dataset folder {folder} is missing (set SIAMKIT_DATA to the datasets root)")
    return folder
