"""Open-set thresholds per stranger probe at the gallery's size: the best-impostor calibration
on synthetic scores whose answer is known, the per-size table, the warning, old model folders and
the cross-fitted calibration through the CLI."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy.stats import norm

import siamkit
from siamkit.cli import main
from siamkit.errors import DataError
from siamkit.gallery.calibration import calibrate_groups
from siamkit.gallery.crossfit import person_folds
from siamkit.gallery.images import cosine_threshold, sized_gallery_threshold
from siamkit.gallery.openset import (
    ProbeScores,
    probe_scores,
    size_table,
    stranger_far,
    support_warning,
    threshold_at_stranger_far,
    threshold_for_size,
)
from tests.unit.test_faces import SIZE, tiny_model, write_faces

FAR = 0.01


@pytest.fixture(scope="module")
def independent():
    """20000 stranger probes, each with 8 other people scored independently N(0, 1)."""
    rng = np.random.default_rng(0)
    return ProbeScores(rng.standard_normal((20000, 8, 1)).astype(np.float32))


@pytest.mark.parametrize("size", [1, 3, 6])
def test_threshold_accepts_far_of_the_stranger_probes_at_that_size(independent, size):
    t = threshold_at_stranger_far([independent], FAR, size)
    # the answer: the best of `size` N(0, 1) impostors passes t with probability FAR
    assert t == pytest.approx(norm.ppf((1 - FAR) ** (1 / size)), abs=0.03)
    fresh = np.random.default_rng(1).standard_normal((400_000, size)).max(axis=1)
    assert np.mean(fresh >= t) == pytest.approx(FAR, abs=0.0015)  # 20000 probes: sd 0.0007


def test_the_pair_threshold_accepts_about_g_times_more_strangers(independent):
    pair = threshold_at_stranger_far([independent], FAR, 1)
    assert stranger_far([independent], pair, 6) == pytest.approx(1 - (1 - FAR) ** 6, abs=0.003)
    assert threshold_at_stranger_far([independent], FAR, 6) > pair


def test_extrapolated_sizes_follow_independent_comparisons(independent):
    t = threshold_at_stranger_far([independent], FAR, 20)  # beyond the 8 people per probe
    assert t == pytest.approx(norm.ppf((1 - FAR) ** (1 / 20)), abs=0.05)
    assert size_table([independent], FAR, [20])[0]["extrapolated"]


def test_stranger_far_is_exact_over_every_gallery_and_enrolled_image():
    rng = np.random.default_rng(2)
    group = ProbeScores(rng.random((3, 5, 2)).astype(np.float32))
    t, size = 0.6, 3
    brute = []
    for probe in group.scores:
        for people in itertools.combinations(range(5), size):
            for images in itertools.product(range(2), repeat=size):
                brute.append(max(probe[q, i] for q, i in zip(people, images, strict=True)) >= t)
    assert stranger_far([group], t, size) == pytest.approx(np.mean(brute))


def test_probe_scores_pair_every_image_with_every_other_person():
    x = np.random.default_rng(3).standard_normal((7, 4))
    y = np.array([0, 0, 1, 1, 1, 2, 2])
    group = probe_scores(x, y)
    assert group.scores.shape == (7, 2, 3)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert group.scores[0, 0, :3] == pytest.approx(unit[2:5] @ unit[0], abs=1e-6)
    assert np.isnan(group.scores[0, 1, 2])  # person 2 has 2 images
    with pytest.raises(DataError, match="needs >= 2 people"):
        probe_scores(x[:2], y[:2])


def test_table_grows_with_the_gallery_and_is_interpolated_between_sizes(independent):
    calibration = {"sizes": size_table([independent], FAR, [1, 4, 8, 16])}
    cosines = [r["cosine"] for r in calibration["sizes"]]
    assert cosines == sorted(cosines) and cosines[0] < cosines[-1]
    exact = threshold_for_size(calibration, 4)
    assert exact["cosine"] == cosines[1] and not exact["interpolated"]
    between = threshold_for_size(calibration, 6)
    assert cosines[1] < between["cosine"] < cosines[2] and between["interpolated"]
    assert between["size"] == 8  # the interval of the next calibrated size up
    beyond = threshold_for_size(calibration, 40)
    assert beyond["cosine"] == cosines[-1] and "more than the largest" in beyond["warning"]
    assert threshold_for_size(calibration, 0)["size"] == 1
    with pytest.raises(DataError, match="no per-size table"):
        threshold_for_size({"cosine": 0.5}, 3)


def test_warns_when_the_data_cannot_support_the_rate():
    rng = np.random.default_rng(4)
    group = ProbeScores(rng.standard_normal((300, 6, 1)).astype(np.float32))
    strict = size_table([group], 0.001, [2])[0]
    assert strict["trials"] == 300 and not strict["supported"]
    assert "300 stranger probes" in support_warning(strict)
    loose = size_table([group], 0.05, [2])[0]
    assert loose["supported"] and support_warning(loose) is None
    assert loose["far_low"] <= loose["accepted"] / 300 <= loose["far_high"]


def test_old_model_folders_keep_their_single_threshold(tmp_path):
    old = {"gallery_threshold": {"cosine": 0.7, "far": 0.01, "people": 4, "pairs": 600}}
    model = siamkit.load(tiny_model(tmp_path / "old", extra=old))
    assert sized_gallery_threshold(model, 6) is None
    assert cosine_threshold(model, 6) == cosine_threshold(model) == 0.7


def test_calibrated_groups_store_the_table_and_warning():
    rng = np.random.default_rng(5)
    groups = [(rng.standard_normal((20, 16)), np.repeat(np.arange(5), 4)) for _ in range(2)]
    found = calibrate_groups(groups, FAR, [1, 2, 6])
    assert found["trials"] == 40 and found["people"] == 10 and found["groups"] == 2
    assert found["cosine"] == found["sizes"][0]["cosine"]
    assert [r["size"] for r in found["sizes"]] == [1, 2, 6]
    assert found["sizes"][2]["extrapolated"] and not found["sizes"][1]["extrapolated"]
    assert "40 stranger probes" in found["warning"]  # 0 of 40 accepted: up to 8.8%
    json.dumps(found)  # stored in config.json


def test_person_folds_cover_everyone_once():
    import torch

    parts = person_folds(torch.arange(28).repeat_interleave(2), 4, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(28))
    assert [len(p) for p in parts] == [7, 7, 7, 7]
    with pytest.raises(DataError, match="folds must be in"):
        person_folds(torch.arange(6), 4, seed=0)


def test_cross_fitted_calibration_via_the_cli_then_identify_uses_the_gallery_size(tmp_path, capsys):
    root = write_faces(tmp_path / "att", people=10, images=3)
    params = {"size": SIZE, "test_people": 2, "val_people": 2}
    recipe = {
        "data": {"name": "att_faces", "params": params},
        "data_dir": str(root),
        "encoder": {"name": "conv4", "params": {"input_size": SIZE, "channels": 8,
                                                "embedding_dim": 8, "normalize": True}},
        "head": {"name": "cosine"},
        "loss": {"name": "mined_triplet", "params": {"margin": 0.2, "mining": "all"}},
        "batches": {"batch_size": 8, "m_per_class": 2, "batches_per_epoch": 1},
        "training": {"epochs": 1, "threads": 1},
    }  # fmt: skip
    model = tiny_model(tmp_path / "m", extra={"recipe": recipe})
    work = tmp_path / "work"
    args = ["gallery-threshold", str(model), "--far", "0.05", "--folds", "2"]
    assert main([*args, "--work-dir", str(work)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "24 stranger probes of 8 people" in out and "warning" in out
    assert sorted(p.name for p in work.glob("fold*.npz")) == ["fold0.npz", "fold1.npz"]
    stored = siamkit.load(model).config.extra["gallery_threshold"]
    assert stored["folds"] == 2 and stored["trials"] == 24
    gallery = str(tmp_path / "g")
    for p in (1, 2, 3):
        assert main(["enroll", str(model), gallery, "--name", f"p{p}",
                     str(root / f"s{p}/1.pgm")]) == 0  # fmt: skip
    assert main(["identify", str(model), gallery, str(root / "s4/1.pgm")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    expected = threshold_for_size(stored, 3)["cosine"]
    assert f"threshold {expected:.4f}" in out
    assert "threshold for a gallery of 3 people" in out


def test_the_size_one_threshold_is_the_former_pair_threshold():
    from siamkit.gallery.calibration import impostor_cosines, threshold_at_far

    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((40, 8)), np.repeat(np.arange(4), 10)
    found = calibrate_groups([(x, y)], FAR, [1])
    assert found["cosine"] == threshold_at_far(impostor_cosines(x, y), FAR)
    assert found["pairs"] == 600
