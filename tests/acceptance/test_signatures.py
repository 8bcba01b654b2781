"""Signatures end to end on SigComp2011: a short training of the default recipe on one fold's
training writers, thresholds from its validation writers, skilled forgeries of unseen writers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import dataset_or_skip, training_seed, training_threads

pytestmark = pytest.mark.acceptance

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "signatures.yaml"
EPOCHS, BATCHES_PER_EPOCH = 2, 24  # about two minutes of training at 155x220 on two cores

# Measured spread (benchmarks/results/test_spread.md): training seeds 0 and 1 with 1 thread
# (2-thread runs did not finish in time); broken models: `benchmarks/test_spread.py --baselines`.
BOUNDS = {
    "test_short_training_beats_25_percent_skilled_eer_on_unseen_writers": {
        # fold 0's test writers, K = 5 references: trained 0.089 / 0.098 / 0.166 (seeds 0 / 1 / 2,
        # 1 thread; seed 2 crossed the former bound of 0.16) and 0.094 / 0.094 (seeds 0-1,
        # 2 threads); the untrained Conv-4 through the same protocol 0.219 (shift-averaged random
        # features already tell writers apart), which the bound of 0.25 before that let pass. The
        # bound sits between the worst trained run and the untrained net, with little room on
        # either side: a brief training on 2 cores is noisy here.
        "skilled_eer": ("<=", 0.19),
        # writer identity is learnt, not forgery cues: trained 0.993-0.995; untrained 0.981, so
        # this only catches a collapsed model (skilled_eer is the check that training worked)
        "random_auc": (">", 0.8),
    },
}


def test_short_training_beats_25_percent_skilled_eer_on_unseen_writers(tmp_path, capsys, figures):
    from siamkit.cli import main
    from siamkit.data.signatures import read_signature_tree, writer_folds
    from siamkit.evaluation.signature_eval import (
        evaluate_fold,
        preprocess_of,
        save_signature_model,
        train_fold,
    )
    from siamkit.recipe import load_recipe

    folder = dataset_or_skip("signatures")
    recipe = load_recipe(CONFIG)
    recipe = recipe.model_copy(
        update={
            "seed": training_seed(recipe.seed),
            # every core: the recipe's one thread is for benchmark jobs running side by side
            "training": recipe.training.model_copy(
                update={"epochs": EPOCHS, "threads": training_threads(os.cpu_count())}
            ),
            "batches": recipe.batches.model_copy(update={"batches_per_epoch": BATCHES_PER_EPOCH}),
        }
    )
    data = read_signature_tree(folder)
    split = writer_folds(data.writer_ids(), n_folds=5, n_val=8, seed=0)[0]
    assert not set(split.test) & (set(split.train) | set(split.val))
    images = preprocess_of(recipe)(data.paths)
    fold = train_fold(recipe, data, images, split, tmp_path / "run", show_progress=False)
    result = evaluate_fold(fold.network, images, data, split, test_ks=(5,))
    # the aggregate (mean, max or centroid of the K references) is picked on the validation
    # writers, as in benchmarks/signatures.py
    aggregate = result.aggregate
    skilled = {r["aggregate"]: r for r in result.rows if r["forgery"] == "skilled"}
    random = {r["aggregate"]: r for r in result.rows if r["forgery"] == "random"}
    figures.check("skilled_eer", skilled[aggregate]["eer"], skilled)
    figures.check("random_auc", random[aggregate]["auc"], random)

    # the saved model applies SigNet preprocessing to raw files in eval and verify
    model = save_signature_model(
        tmp_path / "model", fold, recipe, result.thresholds, split, result.normalisation
    )
    capsys.readouterr()
    assert main(["eval", str(model), str(folder)]) == 0
    assert "skilled" in capsys.readouterr().out
    writer = split.test[0]
    genuine = sorted(str(p) for p in (folder / "genuine" / writer).iterdir())
    assert main(["verify", str(model), genuine[0], "--references", *genuine[1:6]]) == 0
    assert "decision" in capsys.readouterr().out
