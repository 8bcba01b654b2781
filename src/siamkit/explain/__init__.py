"""Explanations of a siamese model's decisions: which pixels or tokens make two inputs alike.

:func:`explain_pair` attributes the pair's *score* to each input with the other fixed (image
methods in :mod:`siamkit.explain.images`, tokens in :mod:`siamkit.explain.text`) and
:func:`save_explanation` writes the result (PNG overlays side by side with the score and the
decision, or highlighted HTML for text). :mod:`siamkit.explain.faithfulness` checks that a map
is faithful (deleting the most attributed patches lowers the score faster than deleting random
ones); :mod:`siamkit.explain.evidence` gives the enrolled templates behind an identification.

    >>> import siamkit
    >>> from siamkit.explain import explain_pair, save_explanation
    >>> model = siamkit.load("runs/faces/model")
    >>> explanation = explain_pair(model, "a.pgm", "b.pgm", method="occlusion")
    >>> save_explanation(explanation, "explained/")  # explanation.png, a.png, b.png, .json
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from siamkit.errors import DataError
from siamkit.explain.faithfulness import DeletionResult, auc_ratio, deletion_test
from siamkit.explain.images import (
    BASELINES,
    METHODS,
    attribute_image,
    image_baseline,
    score_against,
)
from siamkit.explain.text import TokenAttribution, attribute_text
from siamkit.siamese import SiameseNetwork

__all__ = [
    "BASELINES",
    "METHODS",
    "DeletionResult",
    "PairExplanation",
    "TextExplanation",
    "auc_ratio",
    "deletion_test",
    "explain_images",
    "explain_pair",
    "overlay_body",
    "pair_deletion",
    "save_explanation",
]


def decision_at(score: float, threshold: float | None) -> str | None:
    """ "same" when ``score`` reaches ``threshold``, else "different"; None without one."""
    if threshold is None:
        return None
    return "same" if score >= threshold else "different"


@dataclass
class PairExplanation:
    """Attribution maps (H, W) of an image pair's score: ``maps[0]`` for A with B fixed,
    ``maps[1]`` for B with A fixed; ``inputs`` are the preprocessed images (C, H, W)."""

    score: float
    threshold: float | None
    method: str
    baseline: str
    inputs: tuple[Tensor, Tensor]
    maps: tuple[Tensor, Tensor]
    names: tuple[str, str] = ("A", "B")

    @property
    def decision(self) -> str | None:
        """ "same" or "different" at the threshold; None without one."""
        return decision_at(self.score, self.threshold)

    def summary(self) -> dict[str, Any]:
        """A JSON-able record (no maps)."""
        return {
            "score": self.score,
            "threshold": self.threshold,
            "decision": self.decision,
            "method": self.method,
            "baseline": self.baseline,
            "inputs": list(self.names),
        }


@dataclass
class TextExplanation:
    """Token attributions of a text pair's score, each side with the other fixed."""

    score: float
    threshold: float | None
    sides: tuple[TokenAttribution, TokenAttribution]
    method: str = "layer_integrated_gradients"
    names: tuple[str, str] = field(default=("A", "B"))

    @property
    def decision(self) -> str | None:
        """ "same" or "different" at the threshold; None without one."""
        return decision_at(self.score, self.threshold)

    def summary(self) -> dict[str, Any]:
        """A JSON-able record with every token's attribution."""
        return {"score": self.score, "threshold": self.threshold, "decision": self.decision,
                "method": self.method,
                "tokens": [{"text": s.text, "tokens": s.tokens, "values": s.values}
                           for s in self.sides]}  # fmt: skip


def as_image(x: Tensor) -> Tensor:
    """A stored image (C, H, W) as the network reads it: uint8 scaled to [0, 1] as in training
    (see :func:`siamkit.data.batches.take`), float as it is."""
    return x.float() if x.is_floating_point() else x.float() / 255


def _is_text(network: SiameseNetwork) -> bool:
    return getattr(network.encoder, "input_ndim", 4) == 1


def explain_images(
    network: SiameseNetwork,
    a: Tensor,
    b: Tensor,
    method: str = "occlusion",
    baseline: str = "blur",
    threshold: float | None = None,
    **options: Any,
) -> PairExplanation:
    """Explain preprocessed images ``a`` and ``b`` (C, H, W; uint8 is scaled to [0, 1] as in
    training) with ``network``; ``options`` go to
    :func:`~siamkit.explain.images.attribute_image` (window, steps, batch_size, seed)."""
    network.eval()
    a, b = as_image(a), as_image(b)
    x, y = a.unsqueeze(0), b.unsqueeze(0)
    with torch.no_grad():
        ea, eb = network.embed(x), network.embed(y)
        score = float(network.head(ea, eb)[0])
    map_a = attribute_image(score_against(network, eb), x, method, baseline, **options)
    map_b = attribute_image(score_against(network, ea), y, method, baseline, **options)
    return PairExplanation(score, threshold, method, baseline, (a, b), (map_a, map_b))


def explain_pair(
    model: Any, a: Any, b: Any, method: str = "occlusion", baseline: str = "blur", **options: Any
) -> PairExplanation | TextExplanation:
    """Explain the score of inputs ``a`` and ``b`` under a loaded :class:`~siamkit.model.Model`.

    Image models: ``a``/``b`` are whatever the model's preprocessing reads (paths, PIL images,
    arrays); ``method`` is one of :data:`METHODS`, ``baseline`` one of :data:`BASELINES`.
    Text models: ``a``/``b`` are strings, explained with layer integrated gradients (``method``
    and ``baseline`` are ignored; ``steps`` is honoured).
    """
    network = model.network.eval()
    if _is_text(network):
        if not isinstance(a, str) or not isinstance(b, str):
            raise DataError("a text model explains two texts (strings)")
        steps = int(options.get("steps", 32))
        with torch.no_grad():
            ea, eb = network.embed([a]), network.embed([b])
            score = float(network.head(ea, eb)[0])
        sides = (attribute_text(network, a, eb, steps), attribute_text(network, b, ea, steps))
        return TextExplanation(score, model.threshold, sides)
    images = model.prepare([a, b])
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise DataError("explanations need an image or text model; this model's inputs are vectors")
    explanation = explain_images(network, images[0], images[1], method, baseline,
                                 model.threshold, **options)  # fmt: skip
    explanation.names = (_name(a), _name(b))
    return explanation


def _name(source: Any) -> str:
    return Path(source).name if isinstance(source, str | Path) else type(source).__name__


def save_explanation(
    explanation: PairExplanation | TextExplanation, folder: str | Path, stem: str = "explanation"
) -> list[Path]:
    """Write ``stem``.png (both overlays side by side with the score and decision), ``stem``_a.png
    and ``stem``_b.png (one overlay each) and ``stem``.json; for text ``stem``.html and .json."""
    from siamkit.explain.render import overlay_png, save_pair_png, text_pair_html

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / f"{stem}.json"
    record.write_text(json.dumps(explanation.summary(), indent=2) + "\n")
    if isinstance(explanation, TextExplanation):
        page = folder / f"{stem}.html"
        sides = [
            (name, s.tokens, s.values)
            for name, s in zip(explanation.names, explanation.sides, strict=True)
        ]
        page.write_text(text_pair_html(sides, explanation.score, explanation.threshold,
                                       explanation.method))  # fmt: skip
        return [page, record]
    caption = f"{explanation.method}, {explanation.baseline} baseline: red raises the score"
    pair = save_pair_png(folder / f"{stem}.png", explanation.inputs, explanation.maps,
                         explanation.score, explanation.threshold, caption)  # fmt: skip
    written = [pair]
    for side, image, values in zip("ab", explanation.inputs, explanation.maps, strict=True):
        path = folder / f"{stem}_{side}.png"
        path.write_bytes(overlay_png(image, values))
        written.append(path)
    return [*written, record]


def overlay_body(explanation: PairExplanation) -> dict[str, Any]:
    """The explanation as a JSON body: the summary and one base64 PNG overlay per input
    (``a_png``, ``b_png``), as ``POST /v1/explain`` answers."""
    import base64

    from siamkit.explain.render import overlay_png

    body = {k: v for k, v in explanation.summary().items() if k != "inputs"}
    for side, image, values in zip("ab", explanation.inputs, explanation.maps, strict=True):
        body[f"{side}_png"] = base64.b64encode(overlay_png(image, values)).decode("ascii")
    return body


def pair_deletion(
    network: SiameseNetwork,
    a: Tensor,
    b: Tensor,
    methods: Sequence[str] = ("occlusion",),
    baseline: str = "blur",
    patch: tuple[int, int] | None = None,
    steps: int = 16,
    random_orders: int = 4,
    seed: int = 0,
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, list[DeletionResult]]:
    """The deletion test of both sides of the image pair ``a``, ``b`` (C, H, W), A's maps with B
    fixed then B's with A fixed, for each of ``methods`` (and ``"random"``: a map of noise, the
    control that must not pass). ``patch`` is the deleted cell (default 1/8 of each side);
    ``options[method]`` go to :func:`~siamkit.explain.images.attribute_image`."""
    network.eval()
    a, b = as_image(a), as_image(b)
    x, y = a.unsqueeze(0), b.unsqueeze(0)
    with torch.no_grad():
        ea, eb = network.embed(x), network.embed(y)
    size = tuple(x.shape[-2:])
    patch = patch or (max(1, round(size[0] / 8)), max(1, round(size[1] / 8)))
    results: dict[str, list[DeletionResult]] = {m: [] for m in methods}
    generator = torch.Generator().manual_seed(seed + 7919)
    for image, other in ((x, eb), (y, ea)):
        score = score_against(network, other)
        maps = {
            m: torch.rand(size, generator=generator)
            if m == "random"
            else attribute_image(score, image, m, baseline, seed=seed, **(options or {}).get(m, {}))
            for m in methods
        }
        tested = deletion_test(score, image, image_baseline(image, baseline), maps, patch, steps,
                               random_orders, seed)  # fmt: skip
        for m in methods:
            results[m].append(tested[m])
    return results
