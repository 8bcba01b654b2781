"""One-shot drug discovery on real Tox21: a short run of configs/tox21.yaml trains on the first 9
assays and, on the 3 assays it never saw, ranks the molecules of 10+/10- episodes clearly better
than the same network untrained; ``siamkit eval``'s evaluator reports the episode ROC-AUCs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("rdkit")

import siamkit  # noqa: E402
from conftest import dataset_or_skip, training_seed, training_threads  # noqa: E402
from siamkit.data.molecules import assay_split, molecules_path, read_molecules  # noqa: E402
from siamkit.encoders import build_encoder  # noqa: E402
from siamkit.evaluation.molecules_eval import (  # noqa: E402
    embed_molecules,
    embedding_scorers,
    episode_aucs,
    held_out_rows,
    summarise,
)
from siamkit.evaluation.tasks import evaluate_path  # noqa: E402
from siamkit.recipe import parse_recipe, read_yaml, run_recipe  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tox21.yaml"
EPISODES = 5  # per held-out assay (15 episodes of 10+/10-)
# CPU time of this module (user + sys, 1 training thread, on the loaded 2-core machine): 38-72 s
# over 3 runs (fingerprints ~3 s, training ~25 s, the evaluator's 180 episodes most of the
# rest); with SIAMKIT_TEST_THREADS=2 it was 148 s, spinning threads on the busy cores.

BOUNDS = {
    "test_short_tox21_training_beats_the_untrained_network_on_unseen_assays": {
        # 4 epochs x 40 batches; 15 episodes of 10+/10- on SR-HSE, SR-MMP, SR-p53. Measured:
        # seeds 0, 1, 2 with 1 thread 0.716, 0.762, 0.761; seed 0 with 2 threads 0.716 (the
        # same). The same network untrained scores 0.561-0.592, chance 0.5; the full recipe
        # (20 epochs) about 0.77. 0.66 is ~2x the seeds' spread below the worst trained run.
        "trained_auc": (">=", 0.66),
        # trained minus untrained on the same episodes: 0.155, 0.170, 0.175 (2 threads: 0.155);
        # an untrained or broken network scores ~0
        "margin_over_untrained": (">=", 0.05),
    },
}


@pytest.mark.acceptance
def test_short_tox21_training_beats_the_untrained_network_on_unseen_assays(
    tmp_path, monkeypatch, figures
):
    folder = dataset_or_skip("molecules")
    monkeypatch.setenv("SIAMKIT_CACHE", str(tmp_path / "cache"))  # fingerprints: ~3 s
    raw = read_yaml(CONFIG)
    raw["seed"] = training_seed(raw["seed"])
    raw["training"].update(epochs=4, threads=training_threads(1))
    raw["batches"]["batches_per_epoch"] = 40
    raw["evaluation"].update(val_pairs=200, test_pairs=200)
    recipe = parse_recipe(raw)
    result = run_recipe(recipe, tmp_path / "run", show_progress=False)

    data = read_molecules(molecules_path("tox21", folder))
    assert data.skipped == 8  # the aluminium salts RDKit refuses, counted, not fatal
    _, held_out = assay_split(len(data.tasks))
    assert [data.tasks[t] for t in held_out] == ["SR-HSE", "SR-MMP", "SR-p53"]
    rows = held_out_rows(data, held_out)
    model = siamkit.load(result.model_dir)
    trained = embed_molecules(model.network.eval().embed, data, rows)
    torch.manual_seed(recipe.seed)
    untrained = embed_molecules(build_encoder(recipe.encoder).eval(), data, rows)
    scorers = {
        "trained": embedding_scorers(trained, ["mean"])["mean"],
        "untrained": embedding_scorers(untrained, ["mean"])["mean"],
    }
    aucs = episode_aucs(data, held_out, scorers, 10, 10, EPISODES, seed=recipe.seed)
    ours, base = summarise(aucs["trained"])["mean"], summarise(aucs["untrained"])["mean"]
    figures.check("trained_auc", ours)
    figures.check("margin_over_untrained", ours - base)

    # the evaluator of `siamkit eval MODEL ../shared/datasets/molecules`
    report = evaluate_path(model, folder)
    ten = [r for r in report.rows if r["support"] == "10+/10-" and r["scorer"] == "mean"]
    assert len(ten) == 1 and np.isfinite(ten[0]["roc_auc"]) and ten[0]["roc_auc"] > 0.5
    assert any("8 SMILES" in n for n in report.notes)
