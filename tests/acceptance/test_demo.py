"""The demo end to end: it must beat the pixel-space baseline on digits it never saw."""

from __future__ import annotations

import pytest

from conftest import training_seed, training_threads
from siamkit import demo

pytestmark = pytest.mark.acceptance


def test_demo_beats_pixel_nearest_neighbour(tmp_path, figures, monkeypatch):
    recipe = demo.DEMO_RECIPE
    monkeypatch.setitem(recipe, "seed", training_seed(recipe["seed"]))
    threads = training_threads(recipe["training"].get("threads"))
    monkeypatch.setitem(recipe, "training", recipe["training"] | {"threads": threads})
    summary = demo.run_demo(tmp_path, show_progress=False)
    figures.note("pixel_4way_1shot", summary.baseline.mean)
    figures.check("4way_1shot_over_pixels", summary.siamese.mean - summary.baseline.mean, ">", 0)
    figures.check("eer", summary.result.test["eer"], "<", 0.3)
    report = (tmp_path / "report.md").read_text()
    assert "pixel nearest neighbour" in report
    for name in ("roc.png", "scores.png", "examples/six_a.png", "model/model.safetensors"):
        assert (tmp_path / name).is_file()
