"""Attribution maps of a similarity score over the pixels of one image, the other image fixed.

The quantity explained is always the model's *score* of the pair (its head's similarity, higher
= more similar), never a class logit: ``attribute A with B fixed`` is the score as a function of
image A's pixels while B's embedding is held, and the other way round. A positive attribution
means "this region makes the two look alike"; removing it lowers the score.

Methods (all from Captum): ``occlusion`` (slide a patch of the baseline over the image and record
the drop in score; model-agnostic, no gradients), ``integrated_gradients`` (gradients integrated
along the straight path from the baseline to the image), ``saliency`` (the absolute gradient at
the image; cheap, unsigned) and ``gradient_shap`` (expected gradients from noisy baselines).

Baselines, the "absence of evidence" an input is compared with, in the model's input space (after
the saved preprocessing): ``black`` is the image's darkest value everywhere (a black image for
plain image models; for SigNet-preprocessed signatures, whose background is the darkest value
after inversion, the empty page), ``mean`` is the image's mean value everywhere, ``blur`` is the
image under a Gaussian blur (sigma = 1/8 of its shorter side), which removes detail but keeps
the coarse layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from siamkit.errors import ConfigError, DataError
from siamkit.siamese import SiameseNetwork

METHODS = ("occlusion", "integrated_gradients", "saliency", "gradient_shap")
BASELINES = ("black", "mean", "blur")

ScoreFunction = Callable[[Tensor], Tensor]


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """``value`` if it is one of ``choices``, else a :class:`ConfigError` naming them."""
    if value not in choices:
        raise ConfigError(f"{what} must be one of {', '.join(choices)}; got {value!r}")
    return value


def image_baseline(x: Tensor, kind: str = "blur") -> Tensor:
    """The baseline of a (1, C, H, W) or (C, H, W) image batch (see the module docstring)."""
    check_choice(kind, BASELINES, "baseline")
    if kind == "black":
        return torch.full_like(x, float(x.min()))
    if kind == "mean":
        return x.mean(dim=(-2, -1), keepdim=True).expand_as(x).clone()
    from torchvision.transforms.v2 import functional as TF

    sigma = max(min(x.shape[-2:]) / 8, 0.5)
    kernel = 2 * math.ceil(3 * sigma) + 1
    flat = x.reshape(-1, 1, *x.shape[-2:])
    blurred = TF.gaussian_blur(flat, [kernel, kernel], [sigma, sigma])
    return blurred.reshape(x.shape)


def score_against(network: SiameseNetwork, other: Tensor) -> ScoreFunction:
    """The pair score as a function of one side's input batch, the other side's embedding
    ``other`` (1, D) held fixed."""

    def score(x: Tensor) -> Tensor:
        embedding = network.embed(x)
        return network.head(embedding, other.expand(embedding.shape[0], -1))

    return score


def default_window(size: tuple[int, int]) -> tuple[int, int]:
    """Occlusion patch of about 1/7 of each side (at least 2 pixels)."""
    return max(2, round(size[0] / 7)), max(2, round(size[1] / 7))


def attribute_image(
    score: ScoreFunction,
    x: Tensor,
    method: str = "occlusion",
    baseline: str = "blur",
    window: tuple[int, int] | None = None,
    steps: int = 32,
    batch_size: int = 64,
    seed: int = 0,
) -> Tensor:
    """Attribution (H, W) of ``score`` at the image batch ``x`` (1, C, H, W), summed over channels.

    ``window`` is the occlusion patch (H, W) in pixels (default :func:`default_window`; the
    stride is half the patch); ``steps`` the integration steps of integrated gradients and the
    samples of gradient SHAP; ``batch_size`` how many perturbed images are scored at once.
    """
    from captum.attr import GradientShap, IntegratedGradients, Occlusion, Saliency

    check_choice(method, METHODS, "method")
    if x.ndim != 4 or x.shape[0] != 1:
        raise DataError(
            f"attribute_image expects one image batch (1, C, H, W), got {tuple(x.shape)}"
        )
    x = x.detach().float()
    base = image_baseline(x, baseline)
    with torch.enable_grad():
        if method == "occlusion":
            wh, ww = window or default_window(tuple(x.shape[-2:]))
            wh, ww = min(wh, x.shape[-2]), min(ww, x.shape[-1])
            result = Occlusion(score).attribute(
                x, sliding_window_shapes=(x.shape[1], wh, ww),
                strides=(x.shape[1], max(1, wh // 2), max(1, ww // 2)),
                baselines=base, perturbations_per_eval=batch_size,
            )  # fmt: skip
        elif method == "integrated_gradients":
            result = IntegratedGradients(score).attribute(
                x, baselines=base, n_steps=steps, internal_batch_size=batch_size
            )
        elif method == "saliency":
            result = Saliency(score).attribute(x.clone().requires_grad_(True), abs=True)
        else:
            generator = torch.Generator().manual_seed(seed)
            spread = float(x.std()) or 1.0
            noise = torch.randn((4, *x.shape[1:]), generator=generator) * 0.1 * spread
            result = GradientShap(score).attribute(
                x, baselines=base + noise, n_samples=steps, stdevs=0.1 * spread
            )
    return result.detach()[0].sum(dim=0)
