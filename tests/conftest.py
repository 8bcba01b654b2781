"""Shared fixtures: tiny synthetic data for unit tests, and the real datasets for acceptance.

Acceptance tests can be re-run with another training seed or thread count without editing them,
which is how ``benchmarks/test_spread.py`` measures the spread of what they assert:

- ``SIAMKIT_TEST_SEED``: the training seed (:func:`training_seed`; default: the recipe's own);
- ``SIAMKIT_TEST_THREADS``: torch threads for every test and the recipes' training
  (:func:`training_threads`; default: unchanged, i.e. what each recipe or test says);
- ``SIAMKIT_FIGURES``: a JSON file to which the ``figures`` fixture adds every asserted figure
  (test id -> name -> value, comparison, bound). While it is set, a figure outside its bound
  fails the test at its end, after the remaining figures were recorded too.

An acceptance module declares its bounds in one place, ``BOUNDS = {test function: {figure:
(comparison, bound)}}``, each with the measured spread and what a broken model scores in a
comment beside it; ``figures.check(name, value)`` compares against it.
"""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from siamkit.data.labelled import LabelledData
from siamkit.data.paths import datasets_root

COMPARISONS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


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


def _env_int(name: str, minimum: int) -> int | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise pytest.UsageError(f"{name}={text!r}: expected an integer") from None
    if value < minimum:
        raise pytest.UsageError(f"{name}={value}: expected an integer >= {minimum}")
    return value


def training_seed(default: int) -> int:
    """The training seed of an acceptance test: ``SIAMKIT_TEST_SEED`` if set, else ``default``."""
    seed = _env_int("SIAMKIT_TEST_SEED", 0)
    return default if seed is None else seed


def training_threads(default: int | None) -> int | None:
    """Training threads of an acceptance test: ``SIAMKIT_TEST_THREADS`` if set, else
    ``default`` (``None``: leave torch's setting alone)."""
    threads = _env_int("SIAMKIT_TEST_THREADS", 1)
    return default if threads is None else threads


@pytest.fixture(autouse=True)
def _torch_threads() -> Iterator[None]:
    """Each test starts with ``SIAMKIT_TEST_THREADS`` threads (if set) and leaves torch's thread
    count as it found it: training sets the recipe's count and would leak it into later tests."""
    before = torch.get_num_threads()
    threads = training_threads(None)
    if threads is not None:
        torch.set_num_threads(threads)
    yield
    torch.set_num_threads(before)


class Figures:
    """The figures a test asserts, checked against their bounds and recorded by name."""

    def __init__(self, path: Path | None, bounds: dict[str, tuple[str, float]]) -> None:
        self.path = path
        self.bounds = bounds
        self.values: dict[str, dict] = {}
        self.failures: list[str] = []

    def check(
        self,
        name: str,
        value: float,
        context: object = "",
        bound: tuple[str, float] | None = None,
    ) -> None:
        """Record ``value`` and assert ``value <comparison> bound``, the bound being the test
        module's ``BOUNDS[test][name]`` unless given (deferred to the test's end while figures
        are being collected, so that one miss does not hide the other figures)."""
        if bound is None and name not in self.bounds:
            raise KeyError(f"no bound for figure {name!r}: add it to the module's BOUNDS")
        op, limit = self.bounds[name] if bound is None else bound
        value, bound = float(value), float(limit)
        self.values[name] = {"value": value, "op": op, "bound": bound}
        if not COMPARISONS[op](value, bound):
            message = f"{name} = {value:.6g}, expected {op} {bound:.6g} {context}".strip()
            if self.path is None:
                raise AssertionError(message)
            self.failures.append(message)

    def note(self, name: str, value: float) -> None:
        """Record a figure that explains the others but is not asserted."""
        self.values[name] = {"value": float(value), "op": None, "bound": None}

    def save(self, test_id: str) -> None:
        if self.path is None or not self.values:
            return
        data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        data[test_id] = self.values
        self.path.write_text(json.dumps(data, indent=2) + "\n")


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    """Check and record a test's asserted figures (see the module docstring)."""
    path = os.environ.get("SIAMKIT_FIGURES", "").strip()
    bounds = getattr(request.module, "BOUNDS", {}).get(request.node.originalname, {})
    recorder = Figures(Path(path) if path else None, bounds)
    yield recorder
    recorder.save(request.node.nodeid)
    if recorder.failures:
        pytest.fail("; ".join(recorder.failures), pytrace=False)
