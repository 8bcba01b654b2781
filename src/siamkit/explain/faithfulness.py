"""Is an attribution map faithful? The deletion test, against random deletion.

Cut the image into a grid of patches, rank the patches by their summed attribution (most
evidence for similarity first), and replace them by the baseline in ``steps`` equal chunks,
scoring the pair after each chunk. A faithful map makes the score fall fastest: the area under
its deletion curve is smaller than under the curve of the same deletion in random order.

The areas are taken above the lowest score that either curve reaches (scores may be negative:
a euclidean head's are; and a fully deleted image may score above a half-deleted one), on a
[0, 1] axis of the deleted fraction, so they are in score units, never negative, and the ratio
``AUC(attributed) / AUC(random)`` is below 1 for a map that finds the evidence (0.7 = the area
left is 30% smaller than by chance) and about 1 for a map that knows nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from siamkit.errors import DataError
from siamkit.explain.images import ScoreFunction


@dataclass(frozen=True)
class DeletionResult:
    """Deletion curves of one image: ``attributed`` (steps + 1,) and the mean of ``random``
    orders, with the areas above the fully deleted image's score."""

    attributed: Tensor
    random: Tensor
    auc_attributed: float
    auc_random: float


def patch_grid(shape: tuple[int, int], patch: tuple[int, int]) -> Tensor:
    """Patch index (H, W) of every pixel for a grid of ``patch``-sized cells (edges smaller)."""
    height, width = shape
    if patch[0] < 1 or patch[1] < 1:
        raise DataError(f"deletion patch must be at least 1x1 pixels, got {patch}")
    rows = torch.arange(height) // patch[0]
    cols = torch.arange(width) // patch[1]
    return rows[:, None] * (int(cols.max()) + 1) + cols[None, :]


def patch_order(attribution: Tensor, grid: Tensor) -> Tensor:
    """Patches sorted by summed attribution, most positive first."""
    n = int(grid.max()) + 1
    sums = torch.zeros(n, dtype=torch.float64).index_add_(
        0, grid.flatten(), attribution.flatten().double()
    )
    return torch.argsort(sums, descending=True, stable=True)


def deletion_curve(
    score: ScoreFunction,
    x: Tensor,
    baseline: Tensor,
    order: Tensor,
    grid: Tensor,
    steps: int = 16,
) -> Tensor:
    """Scores (steps + 1,) of ``x`` (1, C, H, W) with the first k/steps of ``order``'s patches
    replaced by ``baseline``, k = 0..steps (one batch)."""
    n = len(order)
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    pixel_rank = rank[grid]  # (H, W): when each pixel is deleted
    cut = torch.tensor([round(k * n / steps) for k in range(steps + 1)])
    masks = (pixel_rank[None] < cut[:, None, None]).to(x.dtype)[:, None]  # (S+1, 1, H, W)
    batch = x * (1 - masks) + baseline * masks
    with torch.no_grad():
        return score(batch).float().cpu()


def curve_area(curve: Tensor, floor: float) -> float:
    """Area of ``curve`` above ``floor``, over a [0, 1] axis (trapezoid rule)."""
    shifted = (curve - floor).double()
    return float(torch.trapezoid(shifted, dx=1.0 / (len(curve) - 1)))


def compare_curves(attributed: Tensor, random: Tensor) -> DeletionResult:
    """Both areas above the lowest score either curve reaches (so both are >= 0)."""
    floor = float(torch.minimum(attributed.min(), random.min()))
    return DeletionResult(
        attributed, random, curve_area(attributed, floor), curve_area(random, floor)
    )


def deletion_test(
    score: ScoreFunction,
    x: Tensor,
    baseline: Tensor,
    attributions: dict[str, Tensor],
    patch: tuple[int, int],
    steps: int = 16,
    random_orders: int = 4,
    seed: int = 0,
) -> dict[str, DeletionResult]:
    """Deletion curve of each named attribution (H, W) of ``x`` (1, C, H, W) against the mean
    of ``random_orders`` random orders (drawn once, shared by every attribution)."""
    for name, attribution in attributions.items():
        if attribution.shape != x.shape[-2:]:
            raise DataError(
                f"attribution {name!r} of shape {tuple(attribution.shape)} does not match the "
                f"image {tuple(x.shape[-2:])}"
            )
    grid = patch_grid(tuple(x.shape[-2:]), patch)
    n = int(grid.max()) + 1
    generator = torch.Generator().manual_seed(seed)
    randoms = [
        deletion_curve(score, x, baseline, torch.randperm(n, generator=generator), grid, steps)
        for _ in range(random_orders)
    ]
    random = torch.stack(randoms).mean(dim=0)
    return {
        name: compare_curves(
            deletion_curve(score, x, baseline, patch_order(attribution, grid), grid, steps), random
        )
        for name, attribution in attributions.items()
    }


def auc_ratio(results: list[DeletionResult]) -> float:
    """Mean attributed area over mean random area, across images (a ratio of means, so images
    whose score hardly moves weigh little)."""
    if not results:
        raise DataError("auc_ratio needs at least one deletion result")
    attributed = sum(r.auc_attributed for r in results) / len(results)
    random = sum(r.auc_random for r in results) / len(results)
    if random <= 0:
        return float("nan")
    return attributed / random
