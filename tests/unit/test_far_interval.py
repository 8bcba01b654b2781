"""The Clopper-Pearson interval of a false-accept rate and the open-set rate per probe."""

from __future__ import annotations

import numpy as np
import pytest

from siamkit.errors import DataError
from siamkit.gallery.calibration import far_interval, probe_far


def test_interval_matches_the_exact_binomial_definition():
    from scipy.stats import binom

    low, high = far_interval(6, 600, confidence=0.95)
    assert low < 6 / 600 < high
    # the exact interval's ends are where seeing >= 6 (resp. <= 6) accepts has 2.5% probability
    assert binom.sf(5, 600, low) == pytest.approx(0.025, rel=1e-6)
    assert binom.cdf(6, 600, high) == pytest.approx(0.025, rel=1e-6)


def test_interval_covers_the_true_rate_at_least_as_often_as_promised():
    rng = np.random.default_rng(0)
    far, trials = 0.02, 300
    seen = rng.binomial(trials, far, size=2000)
    covered = [lo <= far <= hi for lo, hi in (far_interval(int(k), trials) for k in seen)]
    assert np.mean(covered) >= 0.95


def test_interval_ends_at_zero_and_one():
    assert far_interval(0, 50)[0] == 0.0
    assert far_interval(50, 50)[1] == 1.0
    assert far_interval(0, 50)[1] == pytest.approx(1 - 0.025 ** (1 / 50))
    narrow, wide = far_interval(10, 1000), far_interval(1, 100)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


@pytest.mark.parametrize(
    ("accepted", "trials", "confidence"),
    [(-1, 10, 0.95), (11, 10, 0.95), (0, 0, 0.95), (1, 10, 1.0)],
)
def test_interval_refuses_impossible_counts(accepted, trials, confidence):
    with pytest.raises(DataError, match="far_interval"):
        far_interval(accepted, trials, confidence)


def test_probe_far_is_the_union_bound_over_the_enrolled():
    assert probe_far(0.01, 6) == pytest.approx(0.06)
    assert probe_far(0.01, 6) > 1 - 0.99**6  # independent comparisons accept less often
    assert probe_far(0.3, 6) == 1.0
    assert probe_far(0.0, 6) == 0.0 and probe_far(0.2, 0) == 0.0
    with pytest.raises(DataError, match="probe_far"):
        probe_far(1.5, 3)
