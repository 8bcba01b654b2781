"""Omniglot end to end on the real zips: a short recipe run, then one-shot on unseen alphabets."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import dataset_or_skip, training_seed, training_threads

pytestmark = pytest.mark.acceptance

# configs/omniglot-batch-hard.yaml, shortened to about 1.5 minutes of training on 2 busy cores.
RECIPE = {
    "seed": 0,
    "data": {"name": "omniglot", "params": {"size": 28, "rotations": True}},
    "encoder": {"name": "conv4", "params": {"input_size": 28, "channels": 64, "normalize": True}},
    "head": {"name": "euclidean"},
    "loss": {"name": "mined_triplet", "params": {"margin": 0.2, "mining": "batch_hard"}},
    "batches": {"batch_size": 128, "m_per_class": 2, "batches_per_epoch": 60},
    "training": {"epochs": 2, "lr": 0.001, "schedule": "cosine"},
    "evaluation": {
        "val_pairs": 1000,
        "test_pairs": 1000,
        "plots": False,
        "fewshot": [{"n_way": 5, "k_shot": 1, "episodes": 1000}],
    },
}

# Measured spread (benchmarks/results/test_spread.md): training seeds 0 and 1 with 1 thread
# (2-thread runs did not finish in time); broken models: `benchmarks/test_spread.py --baselines`.
BOUNDS = {
    "test_short_training_reaches_90_percent_5way_1shot_on_unseen_alphabets": {
        # 1000 seeded episodes on the unseen alphabets: trained 0.922-0.927; raw pixels 0.441,
        # the untrained Conv-4 0.548; 0.88 leaves room for other CPUs' kernels (two runs only
        # measured here, 0.005 apart) while failing any net that learnt little
        "5way_1shot": (">=", 0.88),
        # Lake's 20 official runs (400 trials) read from the raw PNGs: trained 0.733-0.745;
        # pixel matching about 0.23
        "official_runs": (">=", 0.6),
        # calibration (fitted by `siamkit train` on 5000 validation-alphabet pairs whose
        # negatives have the test alphabets' within-alphabet share), ECE on the 1000 test pairs:
        # trained 0.025 (seed 0, 2 threads) and 0.031 (seed 1, 1 thread); with the former
        # uniform 1000 calibration pairs 0.043-0.054 (test_spread.md); the sampling floor on 1000
        # pairs is about 0.015; a missing or broken calibration (the naive reading of the score)
        # scores 0.33-0.34, and after < before is asserted too
        "ece_after": ("<=", 0.07),
    },
}


def test_short_training_reaches_90_percent_5way_1shot_on_unseen_alphabets(tmp_path, figures):
    from siamkit.cli import main

    folder = dataset_or_skip("omniglot")
    config = tmp_path / "omniglot.yaml"
    recipe = RECIPE | {"seed": training_seed(RECIPE["seed"])}
    recipe["training"] = RECIPE["training"] | {"threads": training_threads(None)}
    config.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    assert main(["train", str(config), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    five_way = report["fewshot"]["5-way 1-shot"]
    assert five_way["episodes"] == 1000
    figures.check("5way_1shot", five_way["mean"], five_way)
    calibration = report["calibration"]
    figures.note("ece_before", calibration["before"]["ece"])
    figures.check("ece_after", calibration["after"]["ece"], calibration)
    assert calibration["after"]["ece"] < calibration["before"]["ece"]
    assert calibration["after"]["log_loss"] < calibration["before"]["log_loss"]
    # the saved model reads Lake's raw PNGs with its own preprocessing
    import siamkit
    from siamkit.evaluation.tasks import evaluate_path

    official = evaluate_path(siamkit.load(out / "model"), folder / "all_runs.zip").rows[0]
    assert official["trials"] == 400
    official_accuracy = float(official["accuracy"].split("±")[0])
    figures.check("official_runs", official_accuracy, official)
    assert main(["eval", str(out / "model"), str(folder / "all_runs.zip")]) == 0
