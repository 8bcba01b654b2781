"""Pictures of explanations: attribution maps over images (PNG, matplotlib) and token
attributions as highlighted HTML (every token escaped)."""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor


def _display(image: Tensor) -> np.ndarray:
    """A (C, H, W) model input scaled to [0, 1] for display: (H, W) grey or (H, W, 3) colour."""
    x = image.detach().float().cpu()
    x = (x - x.min()) / max(float(x.max() - x.min()), 1e-8)
    return x[0].numpy() if x.shape[0] == 1 else x[:3].permute(1, 2, 0).numpy()


def _draw(axis, image: Tensor, attribution: Tensor, title: str | None = None) -> None:
    shown = _display(image)
    axis.imshow(shown, cmap="gray" if shown.ndim == 2 else None, interpolation="nearest")
    values = attribution.detach().float().cpu().numpy()
    limit = float(np.abs(values).max()) or 1.0
    axis.imshow(values, cmap="bwr", vmin=-limit, vmax=limit, alpha=0.55, interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    if title:
        axis.set_title(title, fontsize=9)


def _figure(columns: int, height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(2.9 * columns, height))


def overlay_png(image: Tensor, attribution: Tensor) -> bytes:
    """One image with its attribution over it (red: evidence for similarity, blue: against),
    as PNG bytes."""
    figure = _figure(1)
    axis = figure.add_axes((0, 0, 1, 1))
    _draw(axis, image, attribution)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def decision_text(score: float, threshold: float | None) -> str:
    """ "score 0.812 >= threshold 0.372: same" (or without a threshold, the score alone)."""
    if threshold is None:
        return f"score {score:.3f} (no calibrated threshold)"
    same = score >= threshold
    return f"score {score:.3f} {'>=' if same else '<'} threshold {threshold:.3f}: " + (
        "same" if same else "different"
    )


def save_pair_png(
    path: str | Path,
    images: Sequence[Tensor],
    maps: Sequence[Tensor],
    score: float,
    threshold: float | None,
    caption: str = "",
) -> Path:
    """Both inputs side by side, each with its map overlaid, the score and decision as title."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = _figure(2, 3.5)
    axes = figure.subplots(1, 2)
    for axis, image, values, name in zip(
        axes, images, maps, ("A (B fixed)", "B (A fixed)"), strict=True
    ):
        _draw(axis, image, values, name)
    title = decision_text(score, threshold)
    figure.suptitle(f"{title}\n{caption}" if caption else title, fontsize=9)
    figure.subplots_adjust(top=0.8 if caption else 0.88)  # room for the two-line title
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _colour(value: float, limit: float) -> str:
    strength = min(abs(value) / limit, 1.0) if limit > 0 else 0.0
    rgb = "220, 40, 40" if value >= 0 else "40, 90, 220"
    return f"rgba({rgb}, {0.75 * strength:.3f})"


def tokens_html(tokens: Sequence[str], values: Sequence[float]) -> str:
    """Tokens as ``<span>`` elements shaded by attribution (red for, blue against), escaped."""
    limit = max((abs(v) for v in values), default=0.0)
    spans = [
        f'<span class="token" style="background: {_colour(v, limit)}" '
        f'title="{html.escape(f"{v:+.4f}", quote=True)}">{html.escape(t)}</span>'
        for t, v in zip(tokens, values, strict=True)
    ]
    return " ".join(spans)


def text_pair_html(
    sides: Sequence[tuple[str, Sequence[str], Sequence[float]]],
    score: float,
    threshold: float | None,
    method: str,
) -> str:
    """A standalone HTML page: each side's text with its tokens highlighted, and the decision."""
    rows = "\n".join(
        f"<p><b>{html.escape(name)}</b><br>{tokens_html(tokens, values)}</p>"
        for name, tokens, values in sides
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>siamkit explanation</title>'
        "<style>body{font-family:sans-serif;max-width:50em;margin:2em auto}"
        ".token{padding:0 2px;border-radius:3px}</style></head><body>\n"
        f"<h2>{html.escape(decision_text(score, threshold))}</h2>\n"
        f"<p>Token attributions of the similarity score ({html.escape(method)}): red tokens "
        "raise the score, blue ones lower it.</p>\n"
        f"{rows}\n</body></html>\n"
    )
