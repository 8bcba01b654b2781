"""Acceptance on real STS-B data: briefly training the seeds' Siamese LSTM with siamkit
(train-text recipe path, two epochs on STS-B train) raises dev Spearman over its start, and the
saved model folder reproduces the trained model.

(A brief MiniLM fine-tune was tried first: 800 pairs lowered dev Spearman 86.72 -> 86.55, and a
full epoch, +1.1 in the benchmark, does not fit the 3-minute budget on 2 shared cores.)"""

from __future__ import annotations

import pytest
import torch

import siamkit
from conftest import dataset_or_skip, training_seed, training_threads
from siamkit.data.text import read_stsb
from siamkit.recipe import parse_recipe, run_recipe
from siamkit.text import evaluate_sts
from siamkit.text.training import build_text_encoder

RECIPE = {
    "seed": 0,
    "data": {"name": "stsb"},
    "encoder": {"name": "text_rnn", "params": {"embedding_size": 300, "hidden_size": 300,
                                               "max_length": 64}},
    "loss": {"name": "cosent"},
    "batches": {"batch_size": 32},
    "training": {"epochs": 2, "optimizer": "adam", "lr": 1e-3, "grad_clip": 1.0},
}  # fmt: skip

# Measured spread: benchmarks/results/test_spread.md (seeds 0-1 at 1 thread finished in time).
BOUNDS = {
    "test_brief_training_improves_stsb_dev_spearman": {
        # best dev Spearman of 2 epochs minus the untrained start (52.9-55.2): trained 9.9-13.3
        # (seeds 0-1, 1 thread; seed 2 and 2 threads not measured in time); no training 0
        "dev_spearman_gain": (">", 5),
        # STS-B test: trained 57.3-58.0; the untrained encoder already scores 53-55 on
        # dev, so this only catches a broken evaluation: the gain is the learning check
        "test_spearman": (">", 50),
    },
}


@pytest.mark.acceptance
def test_brief_training_improves_stsb_dev_spearman(tmp_path, figures):
    folder = dataset_or_skip("stsbenchmark")
    recipe = parse_recipe(RECIPE | {"seed": training_seed(RECIPE["seed"])})
    recipe.training.threads = training_threads(recipe.training.threads)
    train, dev = read_stsb("train", folder), read_stsb("dev", folder)
    torch.manual_seed(recipe.seed)  # the same initial weights run_text_recipe starts from
    start = evaluate_sts(build_text_encoder(recipe, [train]), dev)["spearman"]
    result = run_recipe(recipe, tmp_path / "run", data_dir=folder, show_progress=False)
    tuned = max(e["spearman"] for e in result.history.epochs)
    print(f"STS-B dev Spearman: start {start:.2f} -> after 2 epochs {tuned:.2f}")
    figures.note("dev_spearman_start", start)
    figures.check("dev_spearman_gain", tuned - start)
    figures.check("test_spearman", result.test["spearman"])
    assert result.test["spearman"] <= 100
    reloaded = evaluate_sts(siamkit.load(result.model_dir), dev)["spearman"]
    assert reloaded == pytest.approx(tuned, abs=1e-3)
