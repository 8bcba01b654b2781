"""Verification: same / different decisions from scores. ROC AUC, EER, a threshold chosen on
validation pairs, and accuracy / FAR / FRR at that threshold. Decisions are ``score >= t``."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import Tensor

from siamkit.data.labelled import LabelledData
from siamkit.data.pairs import make_pairs
from siamkit.errors import DataError
from siamkit.evaluation.embedding import embed_all
from siamkit.siamese import SiameseNetwork


def _arrays(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.int64).ravel()
    if s.shape != y.shape:
        raise DataError(f"{len(s)} scores but {len(y)} labels")
    if not np.isfinite(s).all():
        raise DataError("scores contain NaN or infinite values")
    if set(np.unique(y)) != {0, 1}:
        raise DataError("verification needs both genuine (1) and impostor (0) pairs")
    return s, y


def equal_error_rate(scores: Any, labels: Any) -> tuple[float, float]:
    """(EER, threshold at the EER): the point where false accepts equal false rejects."""
    s, y = _arrays(scores, labels)
    fpr, tpr, thresholds = roc_curve(y, s)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    # Interpolate between the two ROC points around the crossing for a stable estimate.
    j = min(i + 1, len(fpr) - 1)
    d_i, d_j = fnr[i] - fpr[i], fnr[j] - fpr[j]
    w = d_i / (d_i - d_j) if d_i != d_j and np.sign(d_i) != np.sign(d_j) else 0.0
    eer = fpr[i] + w * (fpr[j] - fpr[i])
    threshold = float(np.clip(thresholds[i], s.min(), s.max()))
    return float(eer), threshold


def rates_at(scores: Any, labels: Any, threshold: float) -> dict[str, float]:
    """Accuracy, FAR (impostors accepted) and FRR (genuine rejected) of ``score >= threshold``."""
    s, y = _arrays(scores, labels)
    accept = s >= threshold
    return {
        "accuracy": float((accept == (y == 1)).mean()),
        "far": float(accept[y == 0].mean()),
        "frr": float((~accept[y == 1]).mean()),
    }


TARGET_RULE = re.compile(r"^(far|frr)<=(0?\.\d+|1e-\d+)$")
"""``far<=X`` / ``frr<=X``: a rate target with X in (0, 1), e.g. ``far<=0.01``."""
THRESHOLD_RULES = ("eer", "accuracy", "f1", "far<=X", "frr<=X")


def check_threshold_rule(rule: str) -> str:
    """``rule`` if it is ``eer``, ``accuracy``, ``f1``, ``far<=X`` or ``frr<=X`` (0 < X < 1),
    else a :class:`DataError` naming the accepted forms."""
    if rule in ("eer", "accuracy", "f1"):
        return rule
    match = TARGET_RULE.match(rule.replace(" ", ""))
    if match is None or not 0 < float(match.group(2)) < 1:
        raise DataError(
            f"threshold rule {rule!r}: expected eer, accuracy, f1, far<=X or frr<=X with "
            "0 < X < 1 (e.g. far<=0.01)"
        )
    return rule.replace(" ", "")


def choose_threshold(scores: Any, labels: Any, rule: str = "eer") -> float:
    """A decision threshold (``score >= t`` is "same") from validation pairs, never test pairs:
    at the EER (``"eer"``), where accuracy or the F1 of "same" is highest (``"accuracy"``,
    ``"f1"``), the lowest threshold whose false accept rate is at most X (``"far<=0.01"``:
    as many genuine accepted as the FAR target allows), or the highest whose false reject rate
    is at most X (``"frr<=0.05"``)."""
    rule = check_threshold_rule(rule)
    if rule == "eer":
        return equal_error_rate(scores, labels)[1]
    s, y = _arrays(scores, labels)
    candidates = np.unique(s)
    accept = s[None, :] >= candidates[:, None]  # (thresholds, pairs)
    if rule in ("accuracy", "f1"):
        hits = (accept & (y == 1)).sum(1)
        if rule == "accuracy":
            value = hits + (~accept & (y == 0)).sum(1)
        else:
            value = 2 * hits / np.maximum(accept.sum(1) + (y == 1).sum(), 1)
        return float(candidates[int(np.argmax(value))])
    kind, target = rule.split("<=")
    if kind == "far":
        far = accept[:, y == 0].mean(1)
        ok = np.flatnonzero(far <= float(target))
        # no score reaches the target: above every score, nothing is accepted (FAR 0)
        return float(candidates[ok[0]]) if len(ok) else float(np.nextafter(s.max(), np.inf))
    frr = (~accept[:, y == 1]).mean(1)
    return float(candidates[np.flatnonzero(frr <= float(target))[-1]])


def tar_at_far(scores: Any, labels: Any, far: float) -> float:
    """True accept rate at the largest threshold whose false accept rate is <= ``far``."""
    s, y = _arrays(scores, labels)
    fpr, tpr, _ = roc_curve(y, s)
    return float(tpr[fpr <= far].max())


def verification_report(
    scores: Any, labels: Any, threshold: float | None = None
) -> dict[str, float]:
    """AUC, EER (and its threshold) and accuracy/FAR/FRR at ``threshold`` (default: the EER
    threshold of these very pairs, which is optimistic: pass one chosen on validation pairs)."""
    s, y = _arrays(scores, labels)
    eer, eer_threshold = equal_error_rate(s, y)
    t = eer_threshold if threshold is None else float(threshold)
    return {
        "auc": float(roc_auc_score(y, s)),
        "eer": eer,
        "eer_threshold": eer_threshold,
        "threshold": t,
        **rates_at(s, y, t),
        "pairs": float(len(y)),
    }


def pair_scores(
    network: SiameseNetwork,
    data: LabelledData,
    n_pairs: int,
    seed: int = 0,
    embeddings: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Scores and labels of ``n_pairs`` balanced pairs drawn from ``data`` (embedded once, or
    given as ``embeddings`` of ``data.items``)."""
    a, b, y = make_pairs(data.require_nonempty("the evaluation set").labels, n_pairs, seed)
    emb = embed_all(network, data.items) if embeddings is None else embeddings
    with torch.no_grad():
        scores = network.head.to(emb.device)(emb[a], emb[b])
    return scores.float(), y


def verification_validator(data: LabelledData, n_pairs: int = 2000, seed: int = 0):
    """A ``validate`` callable for :func:`siamkit.training.fit`: AUC and EER on fixed pairs."""

    def validate(network: SiameseNetwork) -> dict[str, float]:
        device = next(network.parameters()).device
        network.head.to("cpu")
        scores, y = pair_scores(network, data, n_pairs, seed)
        network.head.to(device)
        report = verification_report(scores, y)
        return {"auc": report["auc"], "eer": report["eer"]}

    return validate
