"""``siamkit threshold``: a trained folder's threshold re-set by a rule on validation pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import siamkit
from siamkit.cli import main
from siamkit.encoders import build_encoder
from siamkit.errors import CheckpointError
from siamkit.heads import HEADS
from siamkit.thresholding import pair_threshold_support, rethreshold_folder
from tests.unit.test_cli import RECIPE


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("threshold")
    config = folder / "digits.yaml"
    small = {**RECIPE, "training": {"epochs": 1}}  # the threshold needs a model, not a good one
    small["evaluation"] = {"val_pairs": 1000, "test_pairs": 300, "plots": False}
    config.write_text(yaml.safe_dump(small))
    assert main(["train", str(config), "--out", str(folder / "run")]) == 0
    return folder / "run" / "model"


def test_rule_sets_the_threshold_on_validation_pairs_and_keeps_its_promise(trained, capsys):
    before = siamkit.load(trained).threshold
    strict = rethreshold_folder(trained, "far<=0.01")
    loose = rethreshold_folder(trained, "far<=0.2")
    assert strict["previous"] == pytest.approx(before)
    assert strict["threshold"] > loose["threshold"]  # fewer impostors accepted: higher bar
    for report, far in ((strict, 0.01), (loose, 0.2)):
        val = report["validation"]
        assert val["accepted"] / val["trials"] <= far  # the rule holds on the validation pairs
        assert val["far_low"] <= val["accepted"] / val["trials"] <= val["far_high"]
    saved = siamkit.load(trained)
    assert saved.threshold == pytest.approx(loose["threshold"])  # the last rule is stored
    assert saved.config.extra["threshold_rule"] == "far<=0.2"
    assert saved.config.extra["threshold_support"]["trials"] == loose["validation"]["trials"]
    assert main(["threshold", str(trained), "--rule", "frr<=0.05"]) == 0
    shown = capsys.readouterr().out
    assert "threshold by frr<=0.05" in shown and "saved in" in shown
    assert main(["threshold", str(trained), "--rule", "tar>=0.9"]) == 1
    err = capsys.readouterr().err
    assert "tar>=0.9" in err and len(err.strip().splitlines()) == 1
    # the rest of config.json is kept: the recipe and the calibration map survive
    extra = json.loads((trained / "config.json").read_text())["extra"]
    assert "recipe" in extra and "calibration" in extra


def test_support_warns_when_the_pairs_cannot_promise_the_rate():
    rng = np.random.default_rng(0)
    labels = np.repeat([1, 0], 100)
    scores = np.concatenate([rng.normal(1, 1, 100), rng.normal(-1, 1, 100)])
    few = pair_threshold_support(scores, labels, 1.5, "far<=0.001")  # 100 impostors: too few
    assert few["supported"] is False and "100 impostor validation pairs" in few["warning"]
    eer = pair_threshold_support(scores, labels, 0.0, "eer")
    assert eer["supported"] is None and eer["warning"] is None and eer["far"] is None
    assert eer["accepted"] == int((scores[100:] >= 0.0).sum())


def test_a_folder_without_its_recipe_is_refused(tmp_path):
    spec = {"name": "mlp", "params": {"in_features": 4, "hidden": [8], "embedding_dim": 4}}
    net = siamkit.SiameseNetwork(build_encoder(spec), HEADS.build({"name": "cosine"}))
    torch.manual_seed(0)
    folder = siamkit.save_model(tmp_path / "model", net, spec, {"name": "cosine"})
    with pytest.raises(CheckpointError, match="no recipe.*choose_threshold"):
        rethreshold_folder(folder, "eer")


def test_a_two_tower_model_is_refused_with_a_pointer_to_python(tmp_path):
    from siamkit.errors import ConfigError
    from siamkit.two_tower import TwoTowerNetwork

    spec = {"name": "mlp", "params": {"in_features": 4, "hidden": [8], "embedding_dim": 4}}
    other = {"name": "mlp", "params": {"in_features": 3, "hidden": [8], "embedding_dim": 4}}
    net = TwoTowerNetwork(
        build_encoder(spec), build_encoder(other), HEADS.build({"name": "cosine"})
    )
    folder = siamkit.save_model(
        tmp_path / "model", net, spec, {"name": "cosine"}, encoder_b=other,
        extra={"recipe": {"data": "digits", "encoder": "conv4"}},
    )  # fmt: skip
    with pytest.raises(ConfigError, match="two-tower.*fit_calibrator"):
        rethreshold_folder(folder, "eer")
