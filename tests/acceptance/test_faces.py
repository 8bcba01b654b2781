"""Faces on real AT&T data: the recipe trains on 24 people and, on 12 people it never saw, beats
raw-pixel matching clearly; the saved model folder + a gallery then identify enrolled people and
reject strangers from raw .pgm files at the calibrated open-set threshold."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import binom

import siamkit
from conftest import dataset_or_skip, training_seed, training_threads
from siamkit.data import build_dataset
from siamkit.evaluation.embedding import embed_all
from siamkit.evaluation.faces_eval import face_metrics
from siamkit.evaluation.image_folder_eval import class_files
from siamkit.gallery import Gallery
from siamkit.gallery.calibration import (
    calibrate_groups,
    calibrate_model,
    far_interval,
    impostor_cosines,
    probe_far,
)
from siamkit.gallery.crossfit import calibration_people
from siamkit.gallery.images import cosine_threshold, enroll_files, identify_files
from siamkit.gallery.openset import threshold_for_size
from siamkit.recipe import build_network, load_recipe, parse_recipe, run_recipe

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "faces.yaml"
FAR = 0.01  # the gallery threshold accepts at most 1% of the validation people's impostor pairs

# Measured spread (benchmarks/results/test_spread.md), 5 runs: training seeds 0-2 with 1 thread
# (the recipe's), seeds 0-1 with 2. Broken models: `python benchmarks/test_spread.py
# --baselines` (same people, same protocol).
BOUNDS = {
    "test_recipe_identifies_unseen_people_and_rejects_strangers": {
        # trained 0.907-0.928; raw pixels 0.831, untrained Conv-4 0.824
        "rank1": (">=", 0.87),
        # trained 0.069-0.085; raw pixels 0.113, untrained Conv-4 (flip-averaged) 0.098: EER
        # alone does not tell an untrained net, rank-1 and "identified" do; 0.11 keeps a margin of
        # 1.5x the seeds' spread above the worst trained run
        "eer": ("<=", 0.11),
        # enrolled people's probes identified at the calibrated threshold: trained 0.880-0.926;
        # untrained Conv-4 0.713, raw pixels 0.833 (the former bound of 2/3 let both pass)
        "identified": (">=", 0.80),
        # stranger_accept_rate: its bound is derived per run from the calibration, see below
    },
    "test_pretrained_face_resnet_fine_tunes_to_a_low_error_on_unseen_people": {
        # fine-tuned 0.014-0.022; random weights 0.176; the pre-trained net before fine-tuning
        # 0.022 (the check is that 2 epochs of fine-tuning keep it there)
        "eer": ("<=", 0.05),
        # fine-tuned 0.989-0.998; random weights 0.672, before fine-tuning 0.983
        "rank1": (">=", 0.93),
    },
    "test_pretrained_face_model_accepts_the_asked_share_of_strangers_at_the_gallery_size": {
        # enrolled people's probes identified at the size-6 threshold (FAR 1% per stranger
        # probe): 0.880 with 1 and with 2 threads (no training: seeds do not matter); the same
        # network with random weights at its own calibrated threshold 0.389; at the looser pair
        # threshold 0.935
        "identified": (">=", 0.80),
        # stranger_accept_rate: its bound is derived per run from the calibration, see the test
    },
}


def open_set(model, root: Path, names: list[str], folder: Path, threshold=None) -> dict[str, int]:
    """The 12 test people in two halves of 6; each half in turn is enrolled from one image per
    person and probed with their 9 other images, while every image of the other half probes as
    a stranger: 108 probes of enrolled people, 120 stranger probes (each against 6 people).
    ``threshold``: the cosine to use (default: the model's for a gallery of 6)."""
    by_person = {n: sorted((root / n).glob("*.pgm")) for n in names}
    half = len(names) // 2
    counts = {"probes": 0, "right": 0, "strangers": 0, "accepted": 0, "enrolled": half}
    for turn, (known, strangers) in enumerate([(names[:half], names[half:]),
                                               (names[half:], names[:half])]):  # fmt: skip
        with Gallery.open(folder / f"faces{turn}-{threshold}.gallery") as gallery:
            for n in known:
                enroll_files(model, gallery, n, by_person[n][:1])
            probes = [(n, path) for n in known for path in by_person[n][1:]]
            paths = [path for _, path in probes]
            answers = identify_files(model, gallery, paths, k=3, threshold=threshold)
            others = identify_files(
                model, gallery, [p for n in strangers for p in by_person[n]], k=3,
                threshold=threshold,
            )  # fmt: skip
        assert all(len(a.candidates) == 3 for a in answers + others)
        counts["probes"] += len(probes)
        counts["right"] += sum(a.identity == n for a, (n, _) in zip(answers, probes, strict=True))
        counts["strangers"] += len(others)
        counts["accepted"] += sum(a.identity is not None for a in others)
    return counts


@pytest.mark.acceptance
def test_recipe_identifies_unseen_people_and_rejects_strangers(tmp_path, figures):
    root = dataset_or_skip("att_faces")
    raw = load_recipe(CONFIG).model_dump(mode="json")
    raw["seed"] = training_seed(raw["seed"])
    raw["training"]["threads"] = training_threads(raw["training"]["threads"])
    raw["evaluation"]["plots"] = False
    recipe = parse_recipe(raw)  # fold 0: 24 training, 4 validation, 12 test people
    result = run_recipe(recipe, tmp_path / "run", show_progress=False)
    calibration = calibrate_model(result.model_dir, far=FAR)
    model = siamkit.load(result.model_dir)

    splits = build_dataset("att_faces", **recipe.data.params)
    names = [splits.test.classes[int(c)] for c in splits.test.class_ids()]
    assert not set(names) & {splits.train.classes[int(c)] for c in splits.train.class_ids()}
    files = class_files(root)
    keep = torch.isin(files.labels, torch.tensor([files.classes.index(n) for n in names]))
    test = files.subset(keep.nonzero().squeeze(1))
    embeddings = model.embed(test.items).numpy()
    metrics = face_metrics(embeddings, test.labels.numpy(), trials=5)
    figures.check("rank1", metrics["rank1"], metrics)
    figures.check("eer", metrics["eer"], metrics)

    threshold = cosine_threshold(model)
    assert threshold == model.config.extra["gallery_threshold"]["cosine"] == calibration["cosine"]
    assert np.isfinite(threshold) and 0 < threshold < 1
    # the former contract (1% of impostor pairs: the size-1 threshold), which the bounds below
    # were measured with; the per-size contract is checked on the pre-trained model further down
    counts = open_set(model, root, names, tmp_path, threshold=threshold)
    figures.check("identified", counts["right"] / counts["probes"], counts)
    # What the calibration promises: at most FAR of the 4 validation people's impostor pairs
    # (600 pairs) pass. The bound: the upper end of that rate's exact interval, one-sided 99.9%
    # (3.0%), times the 6 enrolled people (union bound: 17.9% per stranger probe), and the
    # count of the 120 stranger probes that this rate exceeds with probability 0.1% only: 35
    # (0.292). Measured 0.05-0.233 (seeds 0-2, threads 1-2: seed 0 gives 0.117 with 1 thread
    # and 0.233 with 2, the CPU sensitivity behind the Intel failure, 15 of 60 under the former
    # 1/6 bound); the 95% interval without the union bound (0.225) was crossed. At the model's
    # pair (EER) threshold, i.e. without calibration, 0.62; raw pixels at their own calibrated
    # threshold 0.225, untrained Conv-4 0.008. The pairs share 4 people, so even this interval
    # is narrower than the truth: the test people's own impostor pairs pass at 1.2-5.7%, not 1%
    # (recorded as test_pair_far); a wider validation split would make the check tighter.
    pairs = calibration["pairs"]
    _, pair_far = far_interval(math.floor(FAR * pairs), pairs, confidence=0.998)
    allowed = binom.ppf(0.999, counts["strangers"], probe_far(pair_far, counts["enrolled"]))
    rate, bound = counts["accepted"] / counts["strangers"], allowed / counts["strangers"]
    figures.check("stranger_accept_rate", rate, counts, bound=("<=", bound))
    # for the record: the rate at which the test people's own impostor pairs pass
    test_impostors = impostor_cosines(embeddings, test.labels.numpy())
    figures.note("test_pair_far", np.mean(test_impostors >= threshold))
    # for the record (no bound yet: its spread over seeds is not measured), what `identify` does
    # by default now: the threshold for a gallery of 6 from the 4 validation people (40 stranger
    # probes, extrapolated beyond 3 people, so it warns)
    sized = open_set(model, root, names, tmp_path)
    figures.note("sized_stranger_accept_rate", sized["accepted"] / sized["strangers"])
    figures.note("sized_identified", sized["right"] / sized["probes"])


PRETRAINED = Path(__file__).resolve().parents[2] / "configs" / "faces-pretrained.yaml"


@pytest.mark.acceptance
def test_pretrained_face_resnet_fine_tunes_to_a_low_error_on_unseen_people(tmp_path, figures):
    dataset_or_skip("att_faces")
    raw = load_recipe(PRETRAINED).model_dump(mode="json")
    weights = Path(raw["init_weights"])
    if not weights.is_file():
        pytest.skip(f"{weights} is missing: `make face-weights` fetches and converts it (npm)")
    raw["seed"] = training_seed(raw["seed"])
    raw["training"]["threads"] = training_threads(raw["training"]["threads"])
    raw["training"]["epochs"] = 2
    raw["evaluation"] |= {"plots": False, "keep": "last"}
    result = run_recipe(parse_recipe(raw), tmp_path / "run", show_progress=False)
    model = siamkit.load(result.model_dir)
    splits = build_dataset("att_faces", **model.config.extra["recipe"]["data"]["params"])
    embeddings = embed_all(model.network, splits.test.items).numpy()
    metrics = face_metrics(embeddings, splits.test.labels.numpy(), trials=5)
    figures.check("eer", metrics["eer"], metrics)  # fold 0's 12 test people
    figures.check("rank1", metrics["rank1"], metrics)


def strangers_at_threshold(x, y, threshold: float, folder: Path) -> dict[str, int]:
    """:func:`open_set`'s protocol on embeddings: two halves of 6 test people, each enrolled by
    its first image while the other half's 60 images probe as strangers."""
    names = np.unique(y)
    half = len(names) // 2
    counts = {"probes": 0, "right": 0, "strangers": 0, "accepted": 0, "enrolled": half}
    for turn, known in enumerate([names[:half], names[half:]]):
        first = np.array([np.flatnonzero(y == n)[0] for n in known])
        own = np.isin(y, known) & ~np.isin(np.arange(len(y)), first)
        with Gallery.open(folder / f"zeroshot{turn}.gallery") as gallery:
            for n, i in zip(known, first, strict=True):
                gallery.enroll(str(n), x[i : i + 1])
            answers = gallery.identify(x[own], k=1, threshold=threshold)
            others = gallery.identify(x[~np.isin(y, known)], k=1, threshold=threshold)
        counts["probes"] += len(answers)
        counts["right"] += sum(a.identity == str(t) for a, t in zip(answers, y[own], strict=True))
        counts["strangers"] += len(others)
        counts["accepted"] += sum(a.identity is not None for a in others)
    return counts


@pytest.mark.acceptance
def test_pretrained_face_model_accepts_the_asked_share_of_strangers_at_the_gallery_size(
    tmp_path, figures
):
    """The per-probe contract without cross-fitting: the pre-trained face ResNet (before any
    fine-tuning) never trained on AT&T people, so all 28 non-test people of fold 0 are fair
    calibration people (280 stranger probes, each against galleries of up to 27 people)."""
    dataset_or_skip("att_faces")
    recipe = load_recipe(PRETRAINED)
    if not Path(recipe.init_weights).is_file():
        pytest.skip(f"{recipe.init_weights} is missing: `make face-weights` fetches it (npm)")
    torch.set_num_threads(training_threads(1))
    network, _ = build_network(recipe)
    splits = build_dataset("att_faces", **recipe.data.params)
    people = calibration_people(splits)
    groups = [(embed_all(network, people.items).numpy(), people.labels.numpy())]
    found = calibrate_groups(groups, FAR, sizes=[1, 6])
    sized = threshold_for_size(found, 6)
    assert sized["trials"] == 280 and not sized["extrapolated"] and sized["size"] == 6
    assert sized["cosine"] > found["cosine"]  # stricter than the pair threshold
    x, y = embed_all(network, splits.test.items).numpy(), splits.test.labels.numpy()
    counts = strangers_at_threshold(x, y, sized["cosine"], tmp_path)
    figures.check("identified", counts["right"] / counts["probes"], counts)
    # The promise: FAR (1%) of stranger probes at a gallery of 6. The bound: the upper end of
    # the rate's exact interval from the calibration (3 of 280 stranger probes accepted; one-
    # sided 99.9%), and the count of the 120 test stranger probes that this rate exceeds with
    # probability 0.1% only (13 of 120: 0.108). No training, so seeds do not matter; threads 1
    # and 2 both give 0 of 120. These strangers are easy for this model: the pair threshold
    # (the former contract, recorded below) and even the calibration pairs' EER threshold
    # (0.921) accept 0 of 120 too, so this check guards the contract against a grossly broken
    # calibration only; benchmarks/trust_openset.py measures it on 3 folds with fine-tuning.
    _, high = far_interval(sized["accepted"], sized["trials"], confidence=0.998)
    allowed = binom.ppf(0.999, counts["strangers"], high)
    rate = counts["accepted"] / counts["strangers"]
    figures.check("stranger_accept_rate", rate, counts, bound=("<=", allowed / counts["strangers"]))
    figures.note("calibration_far_high", sized["far_high"])
    pair = strangers_at_threshold(x, y, found["cosine"], tmp_path / "pair")
    figures.note("pair_threshold_stranger_rate", pair["accepted"] / pair["strangers"])
