"""The demo end to end: it must beat the pixel-space baseline on digits it never saw."""

from __future__ import annotations

import pytest

from siamkit.demo import run_demo

pytestmark = pytest.mark.acceptance


def test_demo_beats_pixel_nearest_neighbour(tmp_path):
    summary = run_demo(tmp_path, show_progress=False)
    assert summary.siamese.mean > summary.baseline.mean
    assert summary.result.test["eer"] < 0.3
    report = (tmp_path / "report.md").read_text()
    assert "pixel nearest neighbour" in report
    for name in ("roc.png", "scores.png", "examples/six_a.png", "model/model.safetensors"):
        assert (tmp_path / name).is_file()
