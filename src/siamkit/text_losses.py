"""Losses for pairs with a graded similarity score (STS-B: 0-5), and scores -> 0/1 labels.

The seed example minimised the cosine of every pair and ignored the label. Here the score drives
the loss: :class:`CosineRegressionLoss` regresses ``cos(e1, e2)`` on ``score / max_score``
(Reimers & Gurevych 2019) and :class:`CoSENTLoss` ranks the pairs of a batch by cosine in the
order of their scores (Su 2022). Both have ``kind = "pair"`` (``forward(e1, e2, y)``), so the core
trainer :func:`siamkit.training.fit` feeds them like any pair loss; ``y`` is a score in
``[0, max_score]`` (use ``max_score=1`` for 0/1 labels). For losses that need 0/1 labels
(``contrastive``, in-batch ``ranking`` in :mod:`siamkit.losses`) :func:`binarize` thresholds the
scores, keeping 1 = same. The two losses are registered in :data:`siamkit.losses.LOSSES` as
``cosine_regression`` and ``cosent``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siamkit.errors import DataError
from siamkit.losses import LOSSES
from siamkit.siamese import SiameseNetwork


def check_scores(e1: Tensor, e2: Tensor, scores: Tensor, max_score: float) -> None:
    """Raise :class:`DataError` unless there is one score in ``[0, max_score]`` per pair."""
    if e1.shape != e2.shape or e1.ndim != 2:
        raise DataError(
            f"scored pair losses take two (batch, dim) embeddings of one shape, got "
            f"{tuple(e1.shape)} and {tuple(e2.shape)}"
        )
    if scores.shape != (e1.shape[0],):
        raise DataError(f"expected {e1.shape[0]} scores, got shape {tuple(scores.shape)}")
    if not torch.isfinite(scores).all() or scores.min() < 0 or scores.max() > max_score:
        raise DataError(
            f"expected scores in [0, {max_score}], got [{scores.min():.3g}, {scores.max():.3g}]"
        )


class ScoredPairLoss(nn.Module):
    """Base class: ``forward(e1, e2, scores)`` with scores in ``[0, max_score]``."""

    kind = "pair"

    def __init__(self, max_score: float = 5.0) -> None:
        super().__init__()
        if max_score <= 0:
            raise DataError(f"max_score must be positive, got {max_score}")
        self.max_score = max_score

    def forward(self, e1: Tensor, e2: Tensor, scores: Tensor) -> Tensor:  # noqa: D102
        scores = scores.to(e1)
        check_scores(e1, e2, scores, self.max_score)
        return self.scored_loss(F.cosine_similarity(e1, e2, dim=1), scores / self.max_score)

    def scored_loss(self, cosine: Tensor, target: Tensor) -> Tensor:
        """The loss from each pair's cosine and its target in [0, 1]."""
        raise NotImplementedError


class CosineRegressionLoss(ScoredPairLoss):
    """Mean squared error between ``cos(e1, e2)`` and ``score / max_score``."""

    def scored_loss(self, cosine: Tensor, target: Tensor) -> Tensor:  # noqa: D102
        return F.mse_loss(cosine, target)


class CoSENTLoss(ScoredPairLoss):
    """``log(1 + sum over score_i > score_j of exp(scale * (cos_j - cos_i)))``.

    Only the order of the scores matters, which matches the Spearman metric of STS tasks. A batch
    whose scores are all equal gives ``log(1) = 0`` (nothing to rank).
    """

    def __init__(self, max_score: float = 5.0, scale: float = 20.0) -> None:
        super().__init__(max_score)
        self.scale = scale

    def scored_loss(self, cosine: Tensor, target: Tensor) -> Tensor:  # noqa: D102
        diff = self.scale * (cosine[None, :] - cosine[:, None])  # [i, j] = cos_j - cos_i
        ordered = target[:, None] > target[None, :]  # score_i > score_j
        terms = torch.cat([diff.new_zeros(1), diff[ordered]])
        return torch.logsumexp(terms, dim=0)


def binarize(scores: Tensor, threshold: float) -> Tensor:
    """0/1 labels (1 = same) from graded scores: 1 where ``score >= threshold``."""
    return (torch.as_tensor(scores) >= threshold).float()


@LOSSES.register("cosine_regression")
def _cosine_regression(network: SiameseNetwork, max_score: float = 5.0) -> nn.Module:
    return CosineRegressionLoss(max_score)


@LOSSES.register("cosent")
def _cosent(network: SiameseNetwork, max_score: float = 5.0, scale: float = 20.0) -> nn.Module:
    return CoSENTLoss(max_score, scale)
