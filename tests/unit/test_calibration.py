"""Calibrated probabilities: the map is monotone, recovers a known logistic, its interval covers
the truth, the metrics match hand-computed values, and model folders store it as JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import siamkit
from siamkit.calibration import (
    Calibrator,
    brier_score,
    calibration_report,
    expected_calibration_error,
    fit_calibrator,
    log_loss,
    naive_probability,
    saved_calibration,
    store_calibration,
)
from siamkit.encoders import build_encoder
from siamkit.errors import CheckpointError, ConfigError, DataError
from siamkit.heads import HEADS
from siamkit.siamese import SiameseNetwork


def logistic(s, a=2.0, b=-0.5):
    return 1 / (1 + np.exp(-(a * s + b)))


def pairs(n, seed=0, truth=logistic):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=n)
    return s, (rng.random(n) < truth(s)).astype(int)


def plateau(s):
    """Not a logistic curve: 5% below -1, 50% between -1 and 1, 95% above."""
    return np.where(s < -1, 0.05, np.where(s > 1, 0.95, 0.5))


@pytest.mark.parametrize("method", ["platt", "isotonic"])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_map_and_its_band_never_decrease(method, seed):
    s, y = pairs(600, seed, truth=lambda s: 0.5 + 0.4 * np.sin(3 * s))  # noisy, non-monotone
    calibrator = fit_calibrator(s, y, methods=[method], resamples=30, seed=seed)
    grid = np.linspace(-5, 5, 2001)
    result = calibrator.probability(grid)
    for values in result:
        assert np.all(np.diff(values) >= -1e-12)
    assert np.all((result.low <= result.p) & (result.p <= result.high))
    assert np.all((result.p > 0) & (result.p < 1))


def test_platt_recovers_a_known_logistic_and_is_chosen_for_it():
    s, y = pairs(6000, seed=3)
    calibrator = fit_calibrator(s, y, resamples=20)
    assert calibrator.method == "platt"
    assert calibrator.params["a"] == pytest.approx(2.0, abs=0.15)
    assert calibrator.params["b"] == pytest.approx(-0.5, abs=0.1)


def test_isotonic_is_chosen_when_the_curve_is_not_logistic():
    s, y = pairs(3000, seed=4, truth=plateau)
    calibrator = fit_calibrator(s, y, resamples=20)
    assert calibrator.selection["isotonic"] < calibrator.selection["platt"]
    assert calibrator.method == "isotonic"
    assert calibrator.predict([0.0])[0] == pytest.approx(0.5, abs=0.08)


def test_the_interval_contains_the_truth_in_simulation():
    points = np.array([-1.0, 0.0, 1.0])
    covered, widths = [], []
    for seed in range(12):  # independent calibration sets of 400 pairs
        s, y = pairs(400, seed=100 + seed)
        result = fit_calibrator(s, y, methods=["platt"], resamples=40, seed=seed)
        low, high = result.interval(points)
        covered += list((low <= logistic(points)) & (logistic(points) <= high))
        widths += list(high - low)
    assert np.mean(covered) >= 0.7  # a 5-95% band: about 90% expected
    assert np.mean(widths) < 0.2  # and not trivially wide


def test_ece_brier_and_log_loss_on_a_hand_checkable_example():
    p = [0.1, 0.1, 0.9, 0.9]
    y = [0, 1, 1, 1]
    # bins 1 (0.0667-0.133): mean p 0.1, half same -> gap 0.4; bin 13: mean p 0.9, all same
    # -> gap 0.1; weighted: (2 * 0.4 + 2 * 0.1) / 4 = 0.25
    assert expected_calibration_error(p, y) == pytest.approx(0.25)
    assert brier_score(p, y) == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4)
    expected = -(np.log(0.9) + np.log(0.1) + 2 * np.log(0.9)) / 4
    assert log_loss(p, y) == pytest.approx(expected)
    assert expected_calibration_error([1.0, 0.0], [1, 0]) == 0.0  # 1.0 falls in the last bin


def test_naive_probabilities_follow_each_heads_range():
    assert naive_probability([-1.0, 0.0, 1.0], "cosine").tolist() == [0.0, 0.5, 1.0]
    assert naive_probability([0.0, -1.0, -3.0], "euclidean").tolist() == [1.0, 0.5, 0.0]
    assert naive_probability([0.2], "learned").tolist() == [0.2]
    with pytest.raises(DataError, match="head 'bilinear'"):
        naive_probability([0.2], "bilinear")


def test_calibration_improves_a_miscalibrated_score():
    s, y = pairs(4000, seed=6)
    cosine = np.tanh(s / 4)  # ranks well, but (s + 1) / 2 is far from P(same)
    calibrator = fit_calibrator(cosine[:2000], y[:2000], resamples=20)
    report = calibration_report(calibrator, cosine[2000:], y[2000:], "cosine")
    assert report["after"]["ece"] < report["before"]["ece"] / 2
    assert report["after"]["log_loss"] < report["before"]["log_loss"]


@pytest.mark.parametrize("truth", [logistic, plateau])
def test_json_round_trip_gives_the_same_probabilities(truth):
    s, y = pairs(500, seed=7, truth=truth)
    calibrator = fit_calibrator(s, y, resamples=20)
    back = Calibrator.from_json(json.loads(json.dumps(calibrator.to_json())))
    grid = np.linspace(-4, 4, 50)
    for mine, theirs in zip(calibrator.probability(grid), back.probability(grid), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    with pytest.raises(CheckpointError, match="not a valid calibration map"):
        Calibrator.from_json({"method": "platt", "params": {"a": 1.0}})


def test_too_few_pairs_of_one_kind_is_a_clear_error():
    with pytest.raises(DataError, match="at least 5 same and different pairs; got 2 same"):
        fit_calibrator([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], [0, 0, 0, 0, 0, 1, 1])


ENCODER = {"name": "mlp", "params": {"in_features": 4, "hidden": [], "embedding_dim": 3}}


def test_a_model_folder_without_calibration_loads_and_says_so(tmp_path):
    torch.manual_seed(0)
    net = SiameseNetwork(build_encoder(ENCODER), HEADS.build({"name": "cosine"}))
    folder = siamkit.save_model(tmp_path / "model", net, ENCODER, {"name": "cosine"})
    model = siamkit.load(folder)
    assert model.calibration() is None
    with pytest.raises(CheckpointError, match="not calibrated.*siamkit calibrate MODEL"):
        model.probability(torch.tensor([0.5]))

    s, y = pairs(400, seed=8)
    pair_map = fit_calibrator(np.tanh(s), y, resamples=10)
    per_k = {k: {"mean": fit_calibrator(np.tanh(s) + k, y, resamples=10)} for k in (1, 5)}
    store_calibration(folder, pairs=pair_map, by_k=per_k)
    model = siamkit.load(folder)
    p, low, high = model.probability(torch.tensor([0.0, 0.5]))
    np.testing.assert_allclose(p, pair_map.predict([0.0, 0.5]))
    assert np.all(low <= p) and np.all(p <= high)
    # reference sets: the nearest saved K; no map for an aggregate that was not saved
    np.testing.assert_allclose(model.probability([5.5], k=4).p, per_k[5]["mean"].predict([5.5]))
    assert model.calibration(k=3, aggregate="max") is None
    assert saved_calibration({"calibration": pair_map.to_json()}, k=1) is not None


def test_threshold_rules_by_target_on_validation_pairs():
    from siamkit.evaluation.verification import choose_threshold, rates_at
    from siamkit.recipe_schema import parse_recipe

    s, y = pairs(2000, seed=9)
    assert rates_at(s, y, choose_threshold(s, y, "far<=0.05"))["far"] <= 0.05
    assert rates_at(s, y, choose_threshold(s, y, "frr<=0.1"))["frr"] <= 0.1
    looser = choose_threshold(s, y, "far<=0.2")
    assert looser < choose_threshold(s, y, "far<=0.05")  # a looser target accepts more
    assert rates_at(s, y, looser)["far"] == pytest.approx(0.2, abs=0.01)
    f1 = choose_threshold(s, y, "f1")
    assert f1 <= choose_threshold(s, y, "accuracy") + 1e-9  # F1 favours accepting "same"
    recipe = {"data": "digits", "encoder": "conv4", "evaluation": {"threshold_rule": "far<=0.01"}}
    assert parse_recipe(recipe).evaluation.threshold_rule == "far<=0.01"
    for bad in ("far<=2", "far<0.01", "tar>=0.9"):
        recipe["evaluation"] = {"threshold_rule": bad}
        with pytest.raises(ConfigError, match="evaluation.threshold_rule.*far<=X or frr<=X"):
            parse_recipe(recipe, "bad.yaml")


def grouped_labels(classes=40, per_class=5, groups=4):
    labels = np.repeat(np.arange(classes), per_class)
    return labels, labels % groups  # class c is in group c % groups


def test_within_group_share_is_the_share_uniform_negative_pairs_have():
    from siamkit.data.pairs import make_pairs, within_group_share

    # classes 0 and 1 in group 0, class 2 alone in group 1: anchors of 0 or 1 find 2 of their 4
    # other-class items in their group, anchors of class 2 none: (4 * 1/2 + 2 * 0) / 6
    assert within_group_share([0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 1, 1]) == pytest.approx(1 / 3)
    labels, groups = grouped_labels(classes=30, per_class=4, groups=3)
    a, b, y = make_pairs(torch.as_tensor(labels), 6000, seed=1)
    negative = (y == 0).numpy()
    drawn = np.mean(groups[a.numpy()[negative]] == groups[b.numpy()[negative]])
    assert drawn == pytest.approx(within_group_share(labels, groups), abs=0.03)
    with pytest.raises(DataError, match="at least 2 classes"):
        within_group_share([3, 3], [0, 0])


@pytest.mark.parametrize("share", [0.0, 0.3, 0.8])
def test_regroup_negatives_draws_the_asked_share_and_keeps_the_labels(share):
    from siamkit.data.pairs import make_pairs, regroup_negatives

    labels, groups = grouped_labels()
    a, b, y = (t.numpy() for t in make_pairs(torch.as_tensor(labels), 4000, seed=2))
    new_b = regroup_negatives(labels, groups, a, b, y, share, seed=3)
    negative, positive = y == 0, y == 1
    assert np.array_equal(new_b[positive], b[positive])
    assert np.all(labels[a[negative]] != labels[new_b[negative]])  # still different classes
    within = np.mean(groups[a[negative]] == groups[new_b[negative]])
    assert within == pytest.approx(share, abs=0.03)
    with pytest.raises(DataError, match="share must be within"):
        regroup_negatives(labels, groups, a, b, y, 1.5)


def test_calibration_pairs_of_grouped_classes_match_the_test_splits_share():
    from siamkit.calibrate_model import CALIBRATION_PAIRS, draw_calibration_pairs
    from siamkit.data.labelled import LabelledData, Splits
    from siamkit.data.pairs import within_group_share

    torch.manual_seed(0)
    net = SiameseNetwork(build_encoder(ENCODER), HEADS.build({"name": "euclidean"}))

    def part(classes, groups, seed, per_class=4):
        labels, group = grouped_labels(classes, per_class, groups)
        items = torch.randn(len(labels), 4, generator=torch.Generator().manual_seed(seed))
        return LabelledData(items, torch.as_tensor(labels), groups=torch.as_tensor(group))

    # validation: 24 classes of 20 items in 2 groups (enough distinct pairs); test: 20 groups
    splits = Splits(part(2, 1, 0), part(24, 2, 1, per_class=20), part(40, 20, 2))
    (scores, y), drawn = draw_calibration_pairs(net, splits, 100, seed=0)
    assert len(y) == len(scores) == drawn["calibration_pairs_asked"] == CALIBRATION_PAIRS
    assert drawn["val_within_group_share"] == pytest.approx(
        within_group_share(*grouped_labels(24, 20, 2))
    )
    assert drawn["within_group_share"] == pytest.approx(
        within_group_share(*grouped_labels(40, 4, 20))
    )
    assert drawn["within_group_share"] < 0.1 < 0.4 < drawn["val_within_group_share"]
    ungrouped = Splits(*(LabelledData(p.items, p.labels) for p in splits.__dict__.values()
                         if isinstance(p, LabelledData)))  # fmt: skip
    (_, y_plain), plain = draw_calibration_pairs(net, ungrouped, 100, seed=0)
    assert "within_group_share" not in plain and len(y_plain) == CALIBRATION_PAIRS
