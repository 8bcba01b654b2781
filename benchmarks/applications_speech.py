"""Part ``speech`` of benchmarks/applications.py: FSDD spoken digits on voices never heard in
training (docs/speech.md).

- **keywords** (6 folds: each speaker held out once): 10-way 1-shot and 5-shot accuracy,
  enrolling K takes per digit of the held-out speaker and classifying all the others,
  ``EPISODES`` seeded episodes per fold, for ``configs/fsdd-keywords-pretrained.yaml`` (a head
  trained on Google's frozen pre-trained speech embedding;
  ``runs/pretrained/speech_embedding.safetensors`` from ``make speech-embedding-weights``) and
  ``configs/fsdd-keywords.yaml`` (the ``audio_cnn`` trained from scratch); figure
  ``fsdd_1shot_accuracy`` = the mean over folds of the pre-trained recipe's 1-shot accuracy.
  Beside them: the speech embedding's trunk as is (no training), the from-scratch model with
  *shifted enrollment* (a variant: each enrolled take's embedding averaged with those of its
  copies shifted by ``SHIFTS`` frames in time, the queries as they are; same episodes), and the
  pre-trained GE2E speaker encoder as is, to check that it does not tell words apart.
- **speakers** (3 folds: each pair of speakers held out once, training on the other 4): EER over
  every pair of the two unseen speakers' takes, for ``configs/fsdd-speakers.yaml`` (the
  ``audio_cnn`` trained from scratch), the pre-trained GE2E speaker encoder as it is (no
  training; ``runs/pretrained/ge2e_speaker.safetensors`` from ``make speaker-weights``), the same
  centred on the mean embedding of the 4 training speakers' takes (a variant, not a saved model),
  and ``configs/fsdd-speakers-pretrained.yaml`` (that encoder fine-tuned on the 4 speakers);
  figure ``fsdd_speaker_eer`` = the best mean over folds of the three model folders a user can
  load (``fsdd_speaker_eer_model`` names it).
- **text-to-speech** (two-tower models, 6 folds): recall@1 both ways between the ten digit words
  and the held-out speaker's 500 recordings, for ``configs/fsdd-text-speech-pretrained.yaml``
  (tower b on the frozen speech embedding) and ``configs/fsdd-text-speech.yaml`` (tower b an
  ``audio_cnn`` from scratch); figure ``text_speech_recall_at_1`` = the smaller of the two
  directions' means over folds, for the pre-trained recipe.

The baseline (MFCC mean + std, standardised, nearest neighbour; cosine for speakers) is scored on
the same episodes and pairs. Runs are kept in ``benchmarks/runs/applications_speech/<full|quick>/``
and resumed when interrupted.

    .venv/bin/python benchmarks/applications.py --parts speech [--quick]
    SPEECH_FOLDS="keywords:0,1,2 speakers:0,1,2 text-speech:0" ...   # a subset of the folds

``SPEECH_FOLDS`` restricts the folds of each task (default: all); the folds run are recorded.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

import siamkit
from benchmark_parts import PartResult
from benchmarks_common import REPOSITORY, markdown_table
from siamkit.data.datasets import build_dataset
from siamkit.data.fsdd import SPEAKER_PAIRS, SPEAKERS, list_recordings
from siamkit.data.paths import dataset_dir
from siamkit.encoders.conv import shifted
from siamkit.evaluation.embedding import embed_all
from siamkit.evaluation.speech_eval import (
    SHOTS,
    keyword_accuracy,
    mfcc_vectors,
    speaker_eer,
    standardized,
)
from siamkit.heads import CosineHead, EuclideanHead
from siamkit.recipe import build_network, load_recipe, run_recipe
from siamkit.siamese import SiameseNetwork
from siamkit.two_tower_recipe import two_tower_report

EPISODES = 1000
SEED = 0
SHIFTS = (-10, -5, 5, 10)  # frames (10 ms) of the shifted-enrollment variant
RUNS = REPOSITORY / "benchmarks" / "runs" / "applications_speech"
TARGETS = {"fsdd_1shot_accuracy": 0.95, "fsdd_speaker_eer": 0.05, "text_speech_recall_at_1": 0.90}
PRETRAINED = "fsdd-speakers-pretrained"
KEYWORDS = "fsdd-keywords-pretrained"  # the recipe of figure fsdd_1shot_accuracy
SCRATCH_KEYWORDS = "fsdd-keywords"  # audio_cnn from scratch (the recipe until 2026-12-02)
TEXT_SPEECH = "fsdd-text-speech-pretrained"  # the recipe of figure text_speech_recall_at_1
SCRATCH_TEXT_SPEECH = "fsdd-text-speech"
SPEAKER_MODELS = {  # EER column -> the model it measures (figure fsdd_speaker_eer: the best)
    "EER": "audio_cnn (fsdd-speakers.yaml)",
    "GE2E as is EER": "GE2E pre-trained, as is",
    "GE2E fine-tuned EER": "GE2E fine-tuned (fsdd-speakers-pretrained.yaml)",
}


def fold_recipe(config: str, fold: int, quick: bool) -> Any:
    """The recipe ``config`` on ``fold`` (quick: 2 epochs), ``init_weights`` made absolute."""
    recipe = load_recipe(REPOSITORY / "configs" / f"{config}.yaml")
    data = recipe.data.model_copy(update={"params": {**recipe.data.params, "fold": fold}})
    update: dict[str, Any] = {"data": data}
    if quick:
        update["training"] = recipe.training.model_copy(update={"epochs": 2})
    if recipe.init_weights:  # a missing file is load_init_weights' one-line error
        update["init_weights"] = str(REPOSITORY / recipe.init_weights)
    return recipe.model_copy(update=update)


def pretrained_as_is(fold: int, task: str = "speakers") -> tuple[SiameseNetwork, Any]:
    """The pre-trained speaker encoder with no training, and the ``task`` split of ``fold`` in
    its features (16 kHz mel power)."""
    recipe = fold_recipe(PRETRAINED, fold, quick=False)
    params = {**recipe.data.params, "task": task}
    return build_network(recipe)[0].eval(), build_dataset("fsdd", **params)


def train(config: str, fold: int, quick: bool) -> tuple[Any, Any, float]:
    """Train (or resume) the recipe ``config`` on ``fold``; quick runs train 2 epochs."""
    recipe = fold_recipe(config, fold, quick)
    out = RUNS / ("quick" if quick else "full") / f"{config}-fold{fold}"
    started = time.process_time()
    result = run_recipe(recipe, out, resume=(out / "checkpoint").is_dir(), show_progress=False)
    return recipe, result, time.process_time() - started


class Baseline:
    """MFCC vectors of every FSDD recording, computed once, looked up per held-out set."""

    def __init__(self) -> None:
        rec = list_recordings(dataset_dir("fsdd"))
        self.vectors = mfcc_vectors(rec.files)
        self.speakers = [rec.speaker_names[s] for s in rec.speakers.tolist()]

    def of(self, names: tuple[str, ...]) -> torch.Tensor:
        """Standardised MFCC vectors of these speakers' recordings, in the reader's order."""
        keep = [i for i, s in enumerate(self.speakers) if s in names]
        return standardized(self.vectors[keep])


def shifted_enrollment(
    network: SiameseNetwork, items: torch.Tensor, embeddings: torch.Tensor
) -> torch.Tensor:
    """Each take's unit embedding (``embeddings`` of ``items``) averaged with those of its copies
    moved by ``SHIFTS`` frames in time (zero-filled, i.e. silence), renormalised."""
    views = [embeddings]
    views += [embed_all(network, shifted(items, dx, 0)) for dx in SHIFTS]
    return torch.nn.functional.normalize(torch.stack(views).mean(0), dim=1)


def keywords(folds: list[int], quick: bool, baseline: Baseline) -> list[dict[str, Any]]:
    rows = []
    for fold in folds:
        row: dict[str, Any] = {"fold": fold, "held-out speaker": SPEAKERS[fold]}
        cpu, runs = 0.0, {}
        for prefix, config in (("", KEYWORDS), ("from scratch ", SCRATCH_KEYWORDS)):
            recipe, result, seconds = train(config, fold, quick)
            cpu += seconds
            test = build_dataset("fsdd", **{**recipe.data.params, "fold": fold}).test
            network = siamkit.load(result.model_dir).network
            emb = embed_all(network, test.items)
            runs[config] = network, test, emb
            for k, score in shot_scores(network, test, emb).items():
                row[f"{prefix}{k}-shot"] = score.mean
                if not prefix:
                    row[f"{k}-shot ci95"] = score.ci95
        row |= keyword_checks(fold, runs[SCRATCH_KEYWORDS], runs[KEYWORDS][1], baseline)
        row["cpu min (this process)"] = cpu / 60
        rows.append(row)
    return rows


def shot_scores(network: SiameseNetwork, test: Any, embeddings: torch.Tensor) -> dict[int, Any]:
    """10-way K-shot accuracy of ``network``'s head on the held-out speaker's ``test`` takes
    (``embeddings``: theirs) for each K of ``SHOTS``, on the benchmark's episodes."""
    return {
        k: keyword_accuracy(network.head, embeddings, test.labels, test.groups, k, EPISODES, SEED)
        for k in SHOTS
    }


def keyword_checks(
    fold: int,
    scratch_run: tuple[SiameseNetwork, Any, torch.Tensor],
    trunk_test: Any,
    baseline: Baseline,
) -> dict[str, float]:
    """The baselines and variants of the keywords table on ``fold``: MFCC nearest neighbour,
    the speech embedding's trunk as is (no training; ``trunk_test``: the pre-trained recipe's
    test split), the from-scratch model with shifted enrollment (``scratch_run``: its network,
    test split and test embeddings), and the GE2E speaker encoder as is."""
    scratch, test, emb = scratch_run
    enrolled = shifted_enrollment(scratch, test.items, emb)
    mfcc = baseline.of((SPEAKERS[fold],))
    trunk_emb = embed_all(untrained_trunk(fold), trunk_test.items)
    speaker_net, split = pretrained_as_is(fold, "keywords")
    speaker_emb = embed_all(speaker_net, split.test.items)
    row: dict[str, float] = {}
    for k in SHOTS:
        episodes = (test.labels, test.groups, k, EPISODES, SEED)
        row[f"mfcc {k}-shot"] = keyword_accuracy(EuclideanHead(), mfcc, *episodes).mean
        row[f"trunk as is {k}-shot"] = keyword_accuracy(CosineHead(), trunk_emb, *episodes).mean
        row[f"scratch, shifted enrollment {k}-shot"] = keyword_accuracy(
            scratch.head, emb, *episodes, enrolled
        ).mean
    row["GE2E as is 1-shot"] = keyword_accuracy(
        CosineHead(), speaker_emb, split.test.labels, split.test.groups, 1, EPISODES, SEED
    ).mean
    return row


class PooledTrunk(torch.nn.Module):
    """The speech embedding's pre-trained trunk with no trained head: its vectors over time
    mean- and max-pooled side by side, L2-normalised (what training the head starts from)."""

    def __init__(self, encoder: Any) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.nn.functional.normalize(self.encoder.pooled(x), dim=1)


def untrained_trunk(fold: int) -> SiameseNetwork:
    """The pre-trained trunk of ``KEYWORDS`` on ``fold`` as is (:class:`PooledTrunk`)."""
    recipe = fold_recipe(KEYWORDS, fold, quick=False)
    return SiameseNetwork(PooledTrunk(build_network(recipe)[0].encoder), CosineHead()).eval()


def speakers(folds: list[int], quick: bool, baseline: Baseline) -> list[dict[str, Any]]:
    rows = []
    for fold in folds:
        recipe, result, cpu = train("fsdd-speakers", fold, quick)
        test = build_dataset("fsdd", **{**recipe.data.params, "fold": fold}).test
        model = siamkit.load(result.model_dir)
        ours = speaker_eer(embed_all(model.network, test.items), test.labels)
        base = speaker_eer(baseline.of(SPEAKER_PAIRS[fold]), test.labels)
        row = {
            "fold": fold, "held-out speakers": " + ".join(SPEAKER_PAIRS[fold]),
            "EER": ours["eer"], "TAR@FAR1%": ours["tar_at_far_1pct"], "mfcc EER": base["eer"],
            "pairs": ours["pairs"], "cpu min (this process)": cpu / 60,
        }  # fmt: skip
        rows.append(row | pretrained_speakers(fold, quick))
    return rows


def pretrained_speakers(fold: int, quick: bool) -> dict[str, Any]:
    """EERs of the pre-trained speaker encoder on ``fold``: as is, centred on the training
    speakers' mean embedding, and fine-tuned by ``configs/fsdd-speakers-pretrained.yaml``."""
    network, split = pretrained_as_is(fold)
    test = split.test
    as_is = embed_all(network, test.items)
    centre = embed_all(network, split.train.items).mean(0)
    centred = torch.nn.functional.normalize(as_is - centre, dim=1)
    _, result, cpu = train(PRETRAINED, fold, quick)
    tuned_network = siamkit.load(result.model_dir).network
    tuned = embed_all(tuned_network, test.items)
    tuned_centre = embed_all(tuned_network, split.train.items).mean(0)
    tuned_centred = torch.nn.functional.normalize(tuned - tuned_centre, dim=1)
    tuned_metrics = speaker_eer(tuned, test.labels)
    return {
        "GE2E as is EER": speaker_eer(as_is, test.labels)["eer"],
        "GE2E as is, centred EER": speaker_eer(centred, test.labels)["eer"],
        "GE2E fine-tuned EER": tuned_metrics["eer"],
        "GE2E fine-tuned TAR@FAR1%": tuned_metrics["tar_at_far_1pct"],
        "GE2E fine-tuned, centred EER": speaker_eer(tuned_centred, test.labels)["eer"],
        "fine-tuning cpu min": cpu / 60,
    }


def text_speech(folds: list[int], quick: bool) -> list[dict[str, Any]]:
    rows = []
    for fold in folds:
        row: dict[str, Any] = {"fold": fold, "held-out speaker": SPEAKERS[fold]}
        cpu = 0.0
        for prefix, config in (("", TEXT_SPEECH), ("from scratch ", SCRATCH_TEXT_SPEECH)):
            recipe, result, seconds = train(config, fold, quick)
            cpu += seconds
            test = build_dataset("fsdd", **{**recipe.data.params, "fold": fold}).test
            model = siamkit.load(result.model_dir)
            report = two_tower_report(model.network, test, model.threshold, SEED)
            row |= {
                f"{prefix}speech -> text R@1": report["b_to_a_recall_at_1"],
                f"{prefix}text -> speech R@1": report["a_to_b_recall_at_1"],
            }
            if not prefix:
                row["text -> speech R-precision"] = report["a_to_b_r_precision"]
                row["pair EER"] = report["eer"]
        row["cpu min (this process)"] = cpu / 60
        rows.append(row)
    return rows


def chosen_folds(task: str, count: int, quick: bool) -> list[int]:
    """The folds of ``task`` to run: fold 0 when quick, else ``SPEECH_FOLDS``'s or all."""
    if quick:
        return [0]
    for item in os.environ.get("SPEECH_FOLDS", "").split():
        name, _, folds = item.partition(":")
        if name == task:
            return [int(f) for f in folds.split(",") if f]
    return list(range(count))


def mean(rows: list[dict[str, Any]], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def run(quick: bool) -> PartResult:
    """Every fold of the three tasks (quick: fold 0 of each, 2 epochs)."""
    baseline = Baseline()
    folds = {
        "keywords": chosen_folds("keywords", len(SPEAKERS), quick),
        "speakers": chosen_folds("speakers", len(SPEAKER_PAIRS), quick),
        "text-speech": chosen_folds("text-speech", len(SPEAKERS), quick),
    }
    kw = keywords(folds["keywords"], quick, baseline)
    sp = speakers(folds["speakers"], quick, baseline)
    ts = text_speech(folds["text-speech"], quick)
    speech_to_text, text_to_speech = mean(ts, "speech -> text R@1"), mean(ts, "text -> speech R@1")
    speaker_eers = {name: mean(sp, column) for column, name in SPEAKER_MODELS.items()}
    best = min(speaker_eers, key=speaker_eers.__getitem__)
    figures = {
        "fsdd_1shot_accuracy": mean(kw, "1-shot"),
        "fsdd_speaker_eer": speaker_eers[best],
        "text_speech_recall_at_1": min(speech_to_text, text_to_speech),
    }
    details = {
        "fsdd_speaker_eer_model": best,
        "speaker_eer_by_model": speaker_eers,
        "ge2e_centred_speaker_eer": mean(sp, "GE2E as is, centred EER"),
        "ge2e_tuned_centred_speaker_eer": mean(sp, "GE2E fine-tuned, centred EER"),
        "ge2e_as_is_1shot_accuracy": mean(kw, "GE2E as is 1-shot"),
        "fsdd_5shot_accuracy": mean(kw, "5-shot"),
        "scratch_1shot_accuracy": mean(kw, "from scratch 1-shot"),
        "scratch_5shot_accuracy": mean(kw, "from scratch 5-shot"),
        "trunk_as_is_1shot_accuracy": mean(kw, "trunk as is 1-shot"),
        "trunk_as_is_5shot_accuracy": mean(kw, "trunk as is 5-shot"),
        "shifted_enrollment_1shot_accuracy": mean(kw, "scratch, shifted enrollment 1-shot"),
        "shifted_enrollment_5shot_accuracy": mean(kw, "scratch, shifted enrollment 5-shot"),
        "mfcc_1shot_accuracy": mean(kw, "mfcc 1-shot"),
        "mfcc_5shot_accuracy": mean(kw, "mfcc 5-shot"),
        "mfcc_speaker_eer": mean(sp, "mfcc EER"),
        "speech_to_text_recall_at_1": speech_to_text,
        "text_to_speech_recall_at_1": text_to_speech,
        "scratch_speech_to_text_recall_at_1": mean(ts, "from scratch speech -> text R@1"),
        "scratch_text_to_speech_recall_at_1": mean(ts, "from scratch text -> speech R@1"),
        "keywords": kw, "speakers": sp, "text_speech": ts,
        "episodes_per_fold": EPISODES, "targets": TARGETS, "folds_run": folds,
    }  # fmt: skip
    return PartResult(figures, markdown(figures, details, quick), details, SEED)


def markdown(figures: dict[str, float], details: dict[str, Any], quick: bool) -> str:
    met = {
        k: (v <= TARGETS[k] if k == "fsdd_speaker_eer" else v >= TARGETS[k])
        for k, v in figures.items()
    }
    summary = [
        {"task": "one-shot keyword spotting, new voice (10-way 1-shot; "
                 "fsdd-keywords-pretrained.yaml)",
         "siamkit": f"{100 * figures['fsdd_1shot_accuracy']:.2f}%",
         "MFCC baseline": f"{100 * details['mfcc_1shot_accuracy']:.2f}%",
         "target": ">= 95%", "met": met["fsdd_1shot_accuracy"]},
        {"task": "keyword spotting, 10-way 5-shot",
         "siamkit": f"{100 * details['fsdd_5shot_accuracy']:.2f}%",
         "MFCC baseline": f"{100 * details['mfcc_5shot_accuracy']:.2f}%", "target": "-",
         "met": "-"},
        {"task": "keywords 1-shot / 5-shot, the audio_cnn trained from scratch "
                 "(fsdd-keywords.yaml, the recipe before)",
         "siamkit": f"{100 * details['scratch_1shot_accuracy']:.2f}% / "
                    f"{100 * details['scratch_5shot_accuracy']:.2f}%",
         "MFCC baseline": "", "target": "", "met": ""},
        {"task": "keywords 1-shot / 5-shot, the speech embedding's trunk as is (no training)",
         "siamkit": f"{100 * details['trunk_as_is_1shot_accuracy']:.2f}% / "
                    f"{100 * details['trunk_as_is_5shot_accuracy']:.2f}%",
         "MFCC baseline": "", "target": "", "met": ""},
        {"task": "keywords 1-shot / 5-shot, the from-scratch model with the enrolled takes "
                 "averaged with their copies shifted in time (variant)",
         "siamkit": f"{100 * details['shifted_enrollment_1shot_accuracy']:.2f}% / "
                    f"{100 * details['shifted_enrollment_5shot_accuracy']:.2f}%",
         "MFCC baseline": "", "target": "", "met": ""},
        {"task": "speaker verification EER, 2 unseen speakers",
         "siamkit": f"{100 * figures['fsdd_speaker_eer']:.2f}% "
                    f"({details['fsdd_speaker_eer_model']})",
         "MFCC baseline": f"{100 * details['mfcc_speaker_eer']:.2f}%",
         "target": "<= 5%", "met": met["fsdd_speaker_eer"]},
        *[{"task": f"speaker EER: {name}", "siamkit": f"{100 * eer:.2f}%", "MFCC baseline": "",
           "target": "", "met": ""} for name, eer in details["speaker_eer_by_model"].items()],
        {"task": "speaker EER: GE2E as is, centred on the training speakers' mean (variant)",
         "siamkit": f"{100 * details['ge2e_centred_speaker_eer']:.2f}%", "MFCC baseline": "",
         "target": "", "met": ""},
        {"task": "speaker EER: GE2E fine-tuned, centred the same way (variant)",
         "siamkit": f"{100 * details['ge2e_tuned_centred_speaker_eer']:.2f}%",
         "MFCC baseline": "", "target": "", "met": ""},
        {"task": "keywords 10-way 1-shot with the GE2E speaker encoder as is (trained to "
                 "ignore words; a check)",
         "siamkit": f"{100 * details['ge2e_as_is_1shot_accuracy']:.2f}%",
         "MFCC baseline": f"{100 * details['mfcc_1shot_accuracy']:.2f}%", "target": "-",
         "met": "-"},
        {"task": "text-to-speech recall@1, min of both ways (fsdd-text-speech-pretrained.yaml)",
         "siamkit": f"{100 * figures['text_speech_recall_at_1']:.2f}% (speech->text "
                    f"{100 * details['speech_to_text_recall_at_1']:.2f}%, text->speech "
                    f"{100 * details['text_to_speech_recall_at_1']:.2f}%)",
         "MFCC baseline": "-", "target": ">= 90% both ways", "met": met["text_speech_recall_at_1"]},
        {"task": "text-to-speech recall@1, tower b an audio_cnn from scratch "
                 "(fsdd-text-speech.yaml, the recipe before)",
         "siamkit": f"speech->text {100 * details['scratch_speech_to_text_recall_at_1']:.2f}%, "
                    f"text->speech {100 * details['scratch_text_to_speech_recall_at_1']:.2f}%",
         "MFCC baseline": "-", "target": "", "met": ""},
    ]  # fmt: skip
    parts = [
        "FSDD (6 speakers x 10 digits x 50 takes), every figure on voices never heard in "
        "training; means over the folds. "
        + ("**Quick run** (fold 0, 2 epochs). " if quick else "")
        + "Folds run: "
        + "; ".join(f"{k} {v}" for k, v in details["folds_run"].items())
        + " (of 6, 3 and 6). Protocols: docs/speech.md. The CPU column is this process's: a "
        "run trained beforehand (same recipe and folder, resumed from its last checkpoint) shows "
        "only its evaluation.\n",
        markdown_table(summary),
        "\n### keywords (10-way, leave one speaker out)\n",
        markdown_table(details["keywords"]),
        "\n### speakers (verification among 2 held-out speakers, trained on the other 4)\n",
        markdown_table(details["speakers"]),
        "\n### text-to-speech (two towers, leave one speaker out)\n",
        markdown_table(details["text_speech"]),
    ]
    return "\n".join(parts) + "\n"
