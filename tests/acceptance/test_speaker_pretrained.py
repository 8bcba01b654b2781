"""The pre-trained GE2E speaker encoder (Resemblyzer's weights, converted by `make
speaker-weights`) on real FSDD data, with no training: verification between george and jackson
(fold 0's held-out pair of configs/fsdd-speakers-pretrained.yaml), every pair of their 1,000 takes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_limits

from conftest import dataset_or_skip, training_threads
from siamkit.data.audio import AudioPreprocessor
from siamkit.data.fsdd import SPEAKER_PAIRS, list_recordings
from siamkit.evaluation.embedding import embed_all
from siamkit.evaluation.speech_eval import held_out_part, speaker_eer
from siamkit.recipe import build_network, load_recipe

REPOSITORY = Path(__file__).resolve().parents[2]
RECIPE = REPOSITORY / "configs" / "fsdd-speakers-pretrained.yaml"

BOUNDS = {
    "test_pretrained_speaker_encoder_tells_unseen_speakers_apart_without_training": {
        # No training, so no seed: 0.1582 with 1 thread and with 2 (499,500 pairs). The same
        # LSTM with random weights (build_network without init_weights): 0.427-0.446 (torch
        # seeds 0-2); the MFCC baseline 0.260, the audio_cnn trained on the 4 other speakers
        # 0.189 (docs/speech.md). 0.21 is 5 points above the measured figure and fails a random,
        # untrained or mis-converted encoder.
        "eer": ("<=", 0.21),
    },
}


@pytest.mark.acceptance
def test_pretrained_speaker_encoder_tells_unseen_speakers_apart_without_training(figures):
    root = dataset_or_skip("fsdd")
    torch.set_num_threads(training_threads(1))  # no training: 1 thread as the recipes train
    recipe = load_recipe(RECIPE)
    weights = REPOSITORY / recipe.init_weights
    if not weights.is_file():
        pytest.skip(f"{weights} is missing: `make speaker-weights` fetches and converts it (PyPI)")
    recipe = recipe.model_copy(update={"init_weights": str(weights)})
    params = {k: v for k, v in recipe.data.params.items()
              if k not in ("task", "fold", "val_fraction", "seed")}  # fmt: skip
    pair = held_out_part(list_recordings(root), SPEAKER_PAIRS[0])
    with threadpool_limits(1):  # numpy's BLAS threads only spin on 1,000 small matrices
        items = AudioPreprocessor(**params)([str(f) for f in pair.files])
    network = build_network(recipe)[0]
    metrics = speaker_eer(embed_all(network, items), pair.speakers)
    figures.check("eer", metrics["eer"], metrics)
