"""The demo end to end: it must beat the pixel-space baseline on digits it never saw."""

from __future__ import annotations

import pytest

from conftest import training_seed, training_threads
from siamkit import demo

pytestmark = pytest.mark.acceptance

# Measured spread (benchmarks/results/test_spread.md): seeds 0-2 with 1 thread, 0-1 with 2;
# broken model: `python benchmarks/test_spread.py --baselines`.
BOUNDS = {
    "test_demo_beats_pixel_nearest_neighbour": {
        # 4-way 1-shot accuracy minus pixel matching's on the same 1000 episodes (pixels
        # 0.792-0.797): trained 0.057-0.100; the untrained net -0.0002 (the former bound was > 0)
        "4way_1shot_over_pixels": (">", 0.03),
        # test pairs of the unseen digits: trained 0.113-0.139; the untrained net 0.195 (the
        # former bound of 0.3 let it pass)
        "eer": ("<", 0.17),
    },
}


def test_demo_beats_pixel_nearest_neighbour(tmp_path, figures, monkeypatch):
    recipe = demo.DEMO_RECIPE
    monkeypatch.setitem(recipe, "seed", training_seed(recipe["seed"]))
    threads = training_threads(recipe["training"].get("threads"))
    monkeypatch.setitem(recipe, "training", recipe["training"] | {"threads": threads})
    summary = demo.run_demo(tmp_path, show_progress=False)
    figures.note("pixel_4way_1shot", summary.baseline.mean)
    figures.check("4way_1shot_over_pixels", summary.siamese.mean - summary.baseline.mean)
    figures.check("eer", summary.result.test["eer"])
    report = (tmp_path / "report.md").read_text()
    assert "pixel nearest neighbour" in report
    for name in ("roc.png", "scores.png", "examples/six_a.png", "model/model.safetensors"):
        assert (tmp_path / name).is_file()
