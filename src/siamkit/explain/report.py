"""A few explained test pairs for a training run's report: the most confident right and the
worst wrong decision of each kind (genuine and impostor pairs), saved as PNGs in ``explained/``.

Cheap on purpose (it runs in every image recipe's training): integrated gradients with a few
steps and the blur baseline, on pairs already drawn and scored for the test report.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor

from siamkit.data.labelled import LabelledData
from siamkit.data.pairs import make_pairs
from siamkit.explain import explain_images
from siamkit.explain.render import save_pair_png
from siamkit.siamese import SiameseNetwork

METHOD, BASELINE, STEPS = "integrated_gradients", "blur", 8


def pick_examples(scores: Tensor, labels: Tensor, threshold: float) -> list[tuple[str, int]]:
    """(kind, pair index) for: a right genuine (highest score), a right impostor (lowest), a
    wrong genuine (false reject, lowest) and a wrong impostor (false accept, highest), where
    they exist."""
    same = scores >= threshold
    genuine = labels == 1
    kinds = [
        ("genuine-right", genuine & same, True),
        ("impostor-right", ~genuine & ~same, False),
        ("genuine-wrong", genuine & ~same, False),
        ("impostor-wrong", ~genuine & same, True),
    ]
    picked = []
    for name, where, highest in kinds:
        rows = where.nonzero().squeeze(1)
        if len(rows):
            values = scores[rows]
            picked.append((name, int(rows[values.argmax() if highest else values.argmin()])))
    return picked


def explain_test_pairs(
    network: SiameseNetwork,
    data: LabelledData,
    scores: Tensor,
    labels: Tensor,
    threshold: float,
    n_pairs: int,
    seed: int,
    folder: str | Path,
    count: int = 4,
) -> list[Path]:
    """Explain up to ``count`` of the test pairs that ``pair_scores(network, data, n_pairs,
    seed)`` drew and scored (``scores``, ``labels``); writes ``folder/<kind>.png`` and
    ``folder/explained.json``."""
    a, b, _ = make_pairs(data.labels, n_pairs, seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written, records = [], []
    for kind, row in pick_examples(scores.float(), labels, threshold)[:count]:
        i, j = int(a[row]), int(b[row])
        explanation = explain_images(
            network, data.items[i], data.items[j], METHOD, BASELINE, threshold, steps=STEPS
        )
        truth = "same class" if kind.startswith("genuine") else "different classes"
        verdict = "right" if kind.endswith("right") else "WRONG"
        caption = f"{kind}: truth {truth}, decision {verdict}; {METHOD} ({BASELINE} baseline)"
        written.append(
            save_pair_png(
                folder / f"{kind}.png",
                explanation.inputs,
                explanation.maps,
                explanation.score,
                threshold,
                caption,
            )  # fmt: skip
        )
        records.append({"kind": kind, "items": [i, j], **explanation.summary()})
    (folder / "explained.json").write_text(json.dumps(records, indent=2) + "\n")
    return written
