"""Speech on voices never heard in training (FSDD): one-shot keyword spotting, speaker
verification and text-to-speech matching, with an MFCC nearest-neighbour baseline.

- **keywords** (10-way K-shot): each episode enrolls K takes of every digit of the held-out
  speaker and classifies all the other takes of that speaker (50 - K per digit) by the mean
  similarity to each digit's enrolled takes; accuracy is averaged over seeded episodes.
- **speakers**: every pair of the held-out speakers' takes (same speaker or not): EER.
- **text-to-speech** (a two-tower model): recall@1 both ways between the ten digit words and the
  held-out speaker's recordings (:mod:`siamkit.evaluation.cross_modal`).

The baseline represents a recording by the mean and standard deviation over time of its 20 MFCCs
(librosa, same frames as the log-mel features), standardised, and compares by Euclidean distance
(keywords) or cosine (speakers), on the same episodes and pairs.

``siamkit eval MODEL ../shared/datasets/fsdd`` runs the protocol of the model's recipe (its task
and held-out speaker(s)); a model not trained on FSDD is evaluated on every speaker (keywords:
episodes within one speaker at a time).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from siamkit.data.audio import read_wav
from siamkit.data.episodes import sample_episodes
from siamkit.data.fsdd import DIGIT_WORDS, NAME, Recordings, held_out, list_recordings
from siamkit.errors import DataError
from siamkit.evaluation.cross_modal import cross_modal_recall
from siamkit.evaluation.fewshot import FewShotResult, episode_accuracy, mean_ci95
from siamkit.evaluation.tasks import Report, register_evaluator
from siamkit.heads import CosineHead, EuclideanHead, Head

EPISODES = 1000
SHOTS = (1, 5)


def mfcc_vectors(
    files: Sequence[str | Path], sample_rate: int = 8000, n_mfcc: int = 20, hop_length: int = 80
) -> Tensor:
    """(N, 2 * n_mfcc): mean and standard deviation over time of each recording's MFCCs."""
    import librosa

    out = []
    for f in files:
        signal = read_wav(f, sample_rate)
        m = librosa.feature.mfcc(
            y=signal, sr=sample_rate, n_mfcc=n_mfcc, n_fft=256, hop_length=hop_length
        )
        out.append(np.concatenate([m.mean(1), m.std(1)]))
    return torch.from_numpy(np.stack(out).astype(np.float32))


def standardized(x: Tensor) -> Tensor:
    """Each column scaled to zero mean and unit variance (over the rows given)."""
    return (x - x.mean(0)) / x.std(0).clamp(min=1e-6)


def keyword_accuracy(
    head: Head,
    embeddings: Tensor,
    digits: Tensor,
    speakers: Tensor,
    k_shot: int,
    episodes: int = EPISODES,
    seed: int = 0,
    enrolled: Tensor | None = None,
) -> FewShotResult:
    """10-way ``k_shot`` accuracy: enroll K takes per digit of one speaker, classify every other
    take of that speaker; episodes are spread over the speakers present. ``enrolled``: other
    embeddings of the same takes to enroll with (default ``embeddings``)."""
    accuracies = []
    for s in torch.unique(speakers).tolist():
        idx = torch.nonzero(speakers == s).squeeze(1)
        labels = digits[idx]
        counts = torch.bincount(labels, minlength=len(DIGIT_WORDS))
        queries = int(counts[counts > 0].min()) - k_shot
        if queries < 1 or int((counts > 0).sum()) < 2:
            raise DataError(f"speaker {s}: too few takes for {k_shot}-shot episodes")
        n_way = int((counts > 0).sum())
        per = max(1, episodes // len(torch.unique(speakers)))
        eps = sample_episodes(labels, n_way, k_shot, queries, per, seed + s)
        support = None if enrolled is None else enrolled[idx]
        accuracies.append(episode_accuracy(head, embeddings[idx], eps, n_way, "mean", support))
    mean, ci = mean_ci95(torch.cat(accuracies))
    return FewShotResult(mean, ci, sum(len(a) for a in accuracies))


def speaker_eer(embeddings: Tensor, speakers: Tensor) -> dict[str, float]:
    """EER (and TAR at FAR 1%) over every pair of recordings: same speaker or not (cosine)."""
    from siamkit.evaluation.faces_eval import verification_metrics

    return verification_metrics(embeddings.numpy(), speakers.numpy())


def baseline_report(files: Sequence[Path], digits: Tensor, speakers: Tensor, task: str):
    """The MFCC baseline's figures for ``task`` on these recordings."""
    x = standardized(mfcc_vectors(files))
    if task == "speakers":
        return {f"mfcc baseline {k}": v for k, v in speaker_eer(x, speakers).items()}
    return {
        f"mfcc baseline 10-way {k}-shot": keyword_accuracy(EuclideanHead(), x, digits, speakers, k)
        for k in SHOTS
    }


# -- siamkit eval MODEL ../shared/datasets/fsdd ---------------------------------------------------


def is_fsdd(path: Path) -> bool:
    """A folder of FSDD-named recordings (``{digit}_{speaker}_{take}.wav``, or ``recordings/``)."""
    if not path.is_dir():
        return False
    try:
        list_recordings(path)
    except DataError:
        return False
    return True


def model_protocol(model: Any) -> tuple[str, int | None]:
    """The model's FSDD task and fold from its recipe; ("keywords", None) if not trained on
    FSDD."""
    recipe = model.config.extra.get("recipe", {})
    data = recipe.get("data", {})
    if data.get("name") != NAME:
        return "keywords", None
    params = data.get("params", {})
    return params.get("task", "keywords"), int(params.get("fold", 0))


def held_out_part(recordings: Recordings, names: Sequence[str]) -> Recordings:
    """The recordings of the speakers ``names``."""
    keep = [
        i
        for i, s in enumerate(recordings.speakers.tolist())
        if recordings.speaker_names[s] in names
    ]
    if not keep:
        raise DataError(f"no recordings of the held-out speaker(s) {list(names)}")
    idx = torch.tensor(keep)
    return Recordings(
        [recordings.files[i] for i in keep],
        recordings.digits[idx],
        recordings.speakers[idx],
        recordings.takes[idx],
        recordings.speaker_names,
    )


def evaluate_fsdd(model: Any, root: Path) -> Report:
    """The protocol of the model's task on its held-out speaker(s) (see the module docstring)."""
    task, fold = model_protocol(model)
    recordings = list_recordings(root)
    notes = []
    if fold is None:
        notes.append("the model was not trained on FSDD: every speaker is evaluated")
        names = recordings.speaker_names
    else:
        names = held_out("keywords" if model.two_tower else task, fold)  # type: ignore[arg-type]
        notes.append(f"held-out speaker(s), never heard in training: {', '.join(names)}")
    part = held_out_part(recordings, names)
    files = [str(f) for f in part.files]
    if model.two_tower:
        rows = text_speech_rows(model, files, part.digits)
        title = f"text-to-speech matching on {root.name}"
    else:
        x = model.embed(files)
        if task == "speakers":
            metrics: dict[str, Any] = speaker_eer(x, part.speakers)
        else:
            metrics = {
                f"10-way {k}-shot": keyword_accuracy(
                    model.network.head, x, part.digits, part.speakers, k
                )
                for k in SHOTS
            }
        metrics |= baseline_report(part.files, part.digits, part.speakers, task)
        rows = [
            {"metric": k, "value": str(v) if isinstance(v, FewShotResult) else v}
            for k, v in metrics.items()
        ]
        title = f"{task} on {root.name}"
    notes.append(f"{len(files)} recordings")
    return Report(title, rows, notes)


def text_speech_rows(model: Any, files: Sequence[str], digits: Tensor) -> list[dict[str, Any]]:
    """Recall@1 both ways between the digit words and the recordings."""
    words = list(model.config.extra.get("class_names", DIGIT_WORDS))
    keys = torch.unique(digits)
    a = model.embed([words[k] for k in keys.tolist()], tower="a")
    b = model.embed(list(files), tower="b")
    head = model.network.head if isinstance(model.network.head, Head) else CosineHead()
    report = cross_modal_recall(head, a, keys, b, digits)
    named = {
        "b_to_a_recall_at_1": "speech -> text recall@1",
        "a_to_b_recall_at_1": "text -> speech recall@1",
        "a_to_b_r_precision": "text -> speech R-precision",
    }
    return [{"metric": named.get(k, k), "value": v} for k, v in report.items()]


register_evaluator("FSDD spoken digits", is_fsdd, evaluate_fsdd)
