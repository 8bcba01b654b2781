"""Speech on real FSDD recordings, voices never heard in training: a short training of the
keyword recipe learns one-shot keyword spotting for the held-out speaker far above the same
network untrained (the MFCC baseline is recorded beside it: this short run does not beat it),
and the saved model folder reads raw WAV files exactly as in training; a short two-tower
training matches spoken digits with their words both ways."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import siamkit
from conftest import dataset_or_skip, training_seed, training_threads
from siamkit.data.datasets import build_dataset
from siamkit.data.fsdd import SPEAKERS, list_recordings
from siamkit.encoders import build_encoder
from siamkit.evaluation.embedding import embed_all
from siamkit.evaluation.speech_eval import (
    held_out_part,
    keyword_accuracy,
    mfcc_vectors,
    standardized,
)
from siamkit.heads import EuclideanHead
from siamkit.recipe import load_recipe, parse_recipe, run_recipe
from siamkit.two_tower_recipe import two_tower_report

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FOLD = 4  # theo held out
EPISODES = 200
SMALL = {"channels": [16, 32, 32, 32], "embedding_dim": 64, "dropout": 0.1, "normalize": True}

BOUNDS = {
    "test_short_keyword_training_learns_a_new_voice": {
        # one run measured (seed 0, 1 thread, 39 s CPU for the whole module's first test): 0.561
        # after this short training (the full recipe reaches 0.754 on theo, the hardest of the
        # 6 voices: benchmarks/results/applications.md); the MFCC baseline 0.732 here, so
        # the short run does NOT beat it: the bound is the measured one, with a margin for CPUs.
        # Re-run 2026-12-02 (1 thread): seed 0 0.561, SIAMKIT_TEST_SEED=1 0.562 (gain 0.235 and
        # 0.236: so close that the seed may not reach every random draw; not investigated). The
        # recipe's channels (32-64-128-128 since the 6-fold run) are replaced by SMALL here.
        "one_shot": (">=", 0.45),
        # the same network untrained: chance is 0.10; the gain a working training must show
        "gain_over_untrained": (">=", 0.15),
    },
    "test_short_two_tower_training_matches_words_and_recordings": {
        # one run measured (seed 0, 1 thread): 0.632 and 1.0 (text -> speech has 10 queries
        # only); chance is 0.10 both ways, an untrained pair of towers scores near it. Only one
        # seed could be afforded on the shared machine: the margins are wide for that reason.
        # The module took 51.6 s user + 27.9 s sys of CPU (under heavy load; target <= 90 s).
        "speech_to_text_recall": (">=", 0.35),
        "text_to_speech_recall": (">=", 0.5),
    },
}


def short(config: str, epochs: int, batches: dict | None = None) -> object:
    raw = load_recipe(CONFIGS / config).model_dump(mode="json")
    raw["seed"] = training_seed(raw["seed"])
    raw["training"].update(epochs=epochs, threads=training_threads(raw["training"]["threads"]))
    raw["data"]["params"]["fold"] = FOLD
    if raw.get("encoder_b"):
        raw["encoder_b"]["params"] = SMALL
        raw["encoder"]["params"]["hidden_size"] = SMALL["embedding_dim"]  # one space
    else:
        raw["encoder"]["params"] = SMALL
    if batches:
        raw["batches"].update(batches)
    raw["evaluation"].update(val_pairs=500, test_pairs=500, fewshot=[], plots=False)
    return parse_recipe(raw)


@pytest.mark.acceptance
def test_short_keyword_training_learns_a_new_voice(tmp_path, figures):
    root = dataset_or_skip("fsdd")
    recipe = short("fsdd-keywords.yaml", epochs=5, batches={"batches_per_epoch": 25})
    result = run_recipe(recipe, tmp_path / "run", show_progress=False)
    model = siamkit.load(result.model_dir)
    test = build_dataset("fsdd", **recipe.data.params).test
    assert set(test.groups.tolist()) == {SPEAKERS.index("theo")}
    emb = embed_all(model.network, test.items)
    one_shot = keyword_accuracy(model.network.head, emb, test.labels, test.groups, 1, EPISODES)

    files = held_out_part(list_recordings(root), ("theo",)).files
    # the model folder reads raw WAV files exactly as the reader did (cached log-mel features)
    assert torch.allclose(model.embed([str(f) for f in files[:8]]), emb[:8], atol=1e-5)
    torch.manual_seed(0)
    untrained = siamkit.SiameseNetwork(build_encoder(recipe.encoder), model.network.head)
    raw = embed_all(untrained, test.items)
    chance = keyword_accuracy(model.network.head, raw, test.labels, test.groups, 1, EPISODES)
    mfcc = standardized(mfcc_vectors(files))
    base = keyword_accuracy(EuclideanHead(), mfcc, test.labels, test.groups, 1, EPISODES)
    figures.check("one_shot", one_shot.mean, one_shot)
    figures.check("gain_over_untrained", one_shot.mean - chance.mean, chance)
    figures.note("mfcc_one_shot", base.mean)


@pytest.mark.acceptance
def test_short_two_tower_training_matches_words_and_recordings(tmp_path, figures):
    root = dataset_or_skip("fsdd")
    recipe = short("fsdd-text-speech.yaml", epochs=2)
    result = run_recipe(recipe, tmp_path / "run", show_progress=False)
    model = siamkit.load(result.model_dir)
    assert model.two_tower
    test = build_dataset("fsdd", **recipe.data.params).test
    report = two_tower_report(model.network, test, model.threshold, 0)
    seven = sorted((root / "recordings").glob("7_theo_*.wav"))[0]
    scores = model.score(["seven", "three"], [str(seven), str(seven)])
    assert scores[0] > scores[1]  # the word and its recording, routed to their towers
    figures.check("speech_to_text_recall", report["b_to_a_recall_at_1"], report)
    figures.check("text_to_speech_recall", report["a_to_b_recall_at_1"], report)
