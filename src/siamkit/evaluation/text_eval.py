"""``siamkit eval MODEL FOLDER`` for sentence-pair folders: an STS Benchmark folder (STS protocol
on dev and test) or an MRPC folder (threshold chosen on train, accuracy/F1 on test)."""

from __future__ import annotations

from pathlib import Path

from siamkit.data.text import MRPC_SPLITS, STSB_SPLITS, read_mrpc, read_stsb
from siamkit.evaluation.tasks import Report, register_evaluator
from siamkit.model import Model
from siamkit.text.paraphrase import paraphrase_report, paraphrase_threshold
from siamkit.text.similarity import evaluate_sts


def is_stsb(path: Path) -> bool:
    """A folder holding the STS Benchmark files (sts-dev.csv and sts-test.csv)."""
    return path.is_dir() and all((path / STSB_SPLITS[s]).is_file() for s in ("dev", "test"))


def is_mrpc(path: Path) -> bool:
    """A folder holding the MRPC release files (train and test)."""
    return path.is_dir() and all((path / name).is_file() for name in MRPC_SPLITS.values())


def evaluate_stsb(model: Model, folder: Path) -> Report:
    """Spearman and Pearson (x 100) of cosine vs gold on STS-B dev and test."""
    rows = [{"split": split, **evaluate_sts(model, read_stsb(split, folder))}
            for split in ("dev", "test")]  # fmt: skip
    return Report(f"STS Benchmark ({folder})", rows, ["correlations x 100, cosine vs gold 0-5"])


def evaluate_mrpc(model: Model, folder: Path) -> Report:
    """Paraphrase detection at a threshold chosen on MRPC train; accuracy and F1 on test."""
    threshold = paraphrase_threshold(model, read_mrpc("train", folder))
    report = paraphrase_report(model, read_mrpc("test", folder), threshold)
    notes = ["threshold chosen for accuracy on the train pairs; F1 of the paraphrase class"]
    return Report(f"MRPC paraphrase detection ({folder})", [report], notes)


register_evaluator("stsbenchmark", is_stsb, evaluate_stsb)
register_evaluator("mrpc", is_mrpc, evaluate_mrpc)
