"""Losses on embeddings. The label convention is the same everywhere: 1 = same, 0 = different.

Each loss has a ``kind`` saying what it consumes, so the trainer knows how to feed it:

- ``"pair"``: ``forward(e1, e2, y)`` with ``y`` a float tensor of 0/1 labels;
- ``"triplet"``: ``forward(anchor, positive, negative)``;
- ``"labelled"``: ``forward(embeddings, labels)`` on a class-labelled batch, mining pairs or
  triplets online inside the batch (pytorch-metric-learning miners), or comparing each
  embedding with learned class proxies (CosFace, ArcFace, normalised softmax, Proxy-Anchor).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, miners
from torch import Tensor, nn

from siamkit.errors import ConfigError, DataError
from siamkit.heads import LearnedHead, check_pair
from siamkit.registry import ComponentSpec, Registry
from siamkit.siamese import SiameseNetwork

LossKind = Literal["pair", "triplet", "labelled"]
LOSSES: Registry[Callable[..., nn.Module]] = Registry("loss")


def check_labels(y: Tensor, n: int) -> None:
    """Raise :class:`DataError` unless ``y`` holds ``n`` labels, each 0 or 1."""
    if y.shape != (n,):
        raise DataError(f"pair labels must have shape ({n},), got {tuple(y.shape)}")
    if not torch.all((y == 0) | (y == 1)):
        raise DataError("pair labels must be 0 (different) or 1 (same)")


class PairLoss(nn.Module):
    """Base class of losses on labelled pairs of embeddings."""

    kind: LossKind = "pair"

    def forward(self, e1: Tensor, e2: Tensor, y: Tensor) -> Tensor:  # noqa: D102
        check_pair(e1, e2)
        check_labels(y, e1.shape[0])
        return self.pair_loss(e1, e2, y.to(e1.dtype))

    def pair_loss(self, e1: Tensor, e2: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError


class ContrastiveLoss(PairLoss):
    """Hadsell, Chopra & LeCun (2006): ``mean(y d^2 + (1 - y) max(0, margin - d)^2) / 2``.

    ``d`` is the Euclidean distance between the two embeddings.
    """

    def __init__(self, margin: float = 2.0) -> None:
        super().__init__()
        self.margin = margin

    def pair_loss(self, e1: Tensor, e2: Tensor, y: Tensor) -> Tensor:
        d = F.pairwise_distance(e1, e2, eps=1e-9)
        return 0.5 * (y * d.pow(2) + (1 - y) * F.relu(self.margin - d).pow(2)).mean()


class HeadBCELoss(PairLoss):
    """Binary cross-entropy on the learned head's logits (Koch et al. 2015).

    With ``l2 > 0`` it adds ``l2 * sum(w^2)`` over the network's weight matrices and kernels
    (biases and norm layers excluded): Koch's regularised cross-entropy.
    """

    def __init__(self, head: LearnedHead, parameters: list[Tensor], l2: float = 0.0) -> None:
        super().__init__()
        self.head = head
        self.l2 = l2
        self._weights = [p for p in parameters if p.ndim > 1]

    def pair_loss(self, e1: Tensor, e2: Tensor, y: Tensor) -> Tensor:
        loss = F.binary_cross_entropy_with_logits(self.head.logits(e1, e2), y)
        if self.l2:
            loss = loss + self.l2 * sum(w.pow(2).sum() for w in self._weights)
        return loss


class CosineEmbeddingLoss(PairLoss):
    """``1 - cos`` for same pairs, ``max(0, cos - margin)`` for different ones (mean)."""

    def __init__(self, margin: float = 0.0) -> None:
        super().__init__()
        self.margin = margin

    def pair_loss(self, e1: Tensor, e2: Tensor, y: Tensor) -> Tensor:
        return F.cosine_embedding_loss(e1, e2, 2 * y - 1, margin=self.margin)


class InBatchRankingLoss(PairLoss):
    """Multiple-negatives ranking (Henderson et al. 2017): each positive pair's partner must
    outrank every other item of the batch, cross-entropy over ``scale * cos``. Negative pairs
    (y = 0) are ignored, the other items of the batch serve as negatives. ``symmetric`` also
    ranks each ``e1`` among the batch's ``e1`` items for its ``e2`` partner and averages both
    directions: the symmetric InfoNCE loss of two-tower models (CLIP; van den Oord et al. 2018).
    """

    def __init__(self, scale: float = 20.0, symmetric: bool = False) -> None:
        super().__init__()
        self.scale, self.symmetric = scale, symmetric

    def pair_loss(self, e1: Tensor, e2: Tensor, y: Tensor) -> Tensor:
        keep = y > 0.5
        if not keep.any():
            raise DataError("the in-batch ranking loss needs at least one positive pair per batch")
        a, b = F.normalize(e1[keep], dim=1), F.normalize(e2[keep], dim=1)
        logits = self.scale * a @ b.T
        target = torch.arange(len(a), device=a.device)
        loss = F.cross_entropy(logits, target)
        return (loss + F.cross_entropy(logits.T, target)) / 2 if self.symmetric else loss


class TripletLoss(nn.Module):
    """``mean(max(0, d(a, p) - d(a, n) + margin))`` with Euclidean distances."""

    kind: LossKind = "triplet"

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.loss = nn.TripletMarginLoss(margin=margin, eps=1e-9)

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:  # noqa: D102
        check_pair(anchor, positive)
        check_pair(anchor, negative)
        return self.loss(anchor, positive, negative)


class MinedTripletLoss(nn.Module):
    """Triplet margin loss on triplets mined online from a class-labelled batch.

    ``mining``: ``"batch_hard"`` (hardest positive and negative per anchor, Hermans et al.
    2017), ``"semi_hard"`` (negatives farther than the positive but within the margin, Schroff
    et al. 2015) or ``"all"`` (every valid triplet with a positive loss). Distances are taken
    between L2-normalised embeddings (pytorch-metric-learning's default, as in FaceNet), and the
    loss is averaged over the triplets whose loss is positive.
    """

    kind: LossKind = "labelled"

    def __init__(
        self, margin: float = 0.2, mining: str = "batch_hard", distance: str = "euclidean"
    ) -> None:
        super().__init__()
        dist = {"euclidean": distances.LpDistance, "cosine": distances.CosineSimilarity}.get(
            distance
        )
        if dist is None:
            raise ConfigError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
        if mining == "batch_hard":
            self.miner = miners.BatchHardMiner(distance=dist())
        elif mining in ("semi_hard", "all"):
            kind = "semihard" if mining == "semi_hard" else "all"
            self.miner = miners.TripletMarginMiner(
                margin=margin, type_of_triplets=kind, distance=dist()
            )
        else:
            raise ConfigError(f"mining must be batch_hard, semi_hard or all, got {mining!r}")
        self.loss = losses.TripletMarginLoss(margin=margin, distance=dist())

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:  # noqa: D102
        check_labelled(embeddings, labels)
        return self.loss(embeddings, labels, self.miner(embeddings, labels))


PROXY_LOSSES = {
    "cosface": losses.CosFaceLoss,
    "arcface": losses.ArcFaceLoss,
    "normalized_softmax": losses.NormalizedSoftmaxLoss,
    "proxy_anchor": losses.ProxyAnchorLoss,
}


class ProxyLoss(nn.Module):
    """A loss against one learned proxy (weight vector) per training class, from
    pytorch-metric-learning: ``cosface`` (Wang et al. 2018, margin 0.35, scale 64), ``arcface``
    (Deng et al. 2019, margin in degrees), ``normalized_softmax`` (Zhai & Wu 2019) or
    ``proxy_anchor`` (Kim et al. 2020). The proxies are the loss's parameters (the trainer
    optimises them with the network); at test time only the embeddings are used, so unseen
    classes compare as with any other loss. Labels must lie in ``0 .. num_classes - 1``.
    """

    kind: LossKind = "labelled"

    def __init__(self, name: str, num_classes: int, embedding_size: int, **params: Any) -> None:
        super().__init__()
        if name not in PROXY_LOSSES or num_classes < 2:
            raise ConfigError(
                f"proxy loss: expected one of {sorted(PROXY_LOSSES)} and num_classes >= 2, got "
                f"{name!r} and {num_classes}"
            )
        self.num_classes = num_classes
        self.loss = PROXY_LOSSES[name](num_classes, embedding_size, **params)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:  # noqa: D102
        check_labelled(embeddings, labels)
        if int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
            raise DataError(
                f"class labels must lie in 0..{self.num_classes - 1} (num_classes), got "
                f"{int(labels.min())}..{int(labels.max())}"
            )
        return self.loss(embeddings.float(), labels)


def check_labelled(embeddings: Tensor, labels: Tensor) -> None:
    """A clear error unless ``embeddings`` is (batch, dim) and ``labels`` is (batch,)."""
    if embeddings.ndim != 2 or labels.shape != (embeddings.shape[0],):
        raise DataError(
            f"labelled losses take (batch, dim) embeddings and (batch,) labels, got "
            f"{tuple(embeddings.shape)} and {tuple(labels.shape)}"
        )


@LOSSES.register("contrastive")
def _contrastive(network: SiameseNetwork, margin: float = 2.0) -> nn.Module:
    return ContrastiveLoss(margin)


@LOSSES.register("bce")
def _bce(network: SiameseNetwork, l2: float = 0.0) -> nn.Module:
    if not isinstance(network.head, LearnedHead):
        raise ConfigError(
            f"loss 'bce' trains the learned head; the network's head is "
            f"{type(network.head).__name__} (use head: learned)"
        )
    return HeadBCELoss(network.head, list(network.encoder.parameters()), l2)


@LOSSES.register("cosine_embedding")
def _cosine_embedding(network: SiameseNetwork, margin: float = 0.0) -> nn.Module:
    return CosineEmbeddingLoss(margin)


@LOSSES.register("ranking")
def _ranking(network: SiameseNetwork, scale: float = 20.0, symmetric: bool = False) -> nn.Module:
    return InBatchRankingLoss(scale, symmetric)


@LOSSES.register("triplet")
def _triplet(network: SiameseNetwork, margin: float = 1.0) -> nn.Module:
    return TripletLoss(margin)


@LOSSES.register("mined_triplet")
def _mined(network: SiameseNetwork, **params: Any) -> nn.Module:
    return MinedTripletLoss(**params)


def _register_proxy_losses() -> None:
    for name in PROXY_LOSSES:

        def build(network: SiameseNetwork, num_classes: int | None = None, _name=name, **params):
            if num_classes is None:
                raise ConfigError(
                    f"loss {_name!r} learns one proxy per training class: give num_classes "
                    "(siamkit train fills it in from the training labels)"
                )
            return ProxyLoss(_name, num_classes, network.encoder.embedding_dim, **params)

        LOSSES.register(name)(build)


_register_proxy_losses()


def build_loss(
    spec: ComponentSpec | dict[str, Any],
    network: SiameseNetwork,
    num_classes: int | None = None,
) -> nn.Module:
    """Build the loss named in ``spec`` for ``network``; its ``kind`` says what it consumes.

    ``num_classes`` (the training labels' range) is passed to the class-proxy losses
    (:data:`PROXY_LOSSES`) unless ``spec`` sets it.
    """
    spec = ComponentSpec.model_validate(spec)
    if spec.name in PROXY_LOSSES and num_classes is not None and "num_classes" not in spec.params:
        spec = ComponentSpec(name=spec.name, params={**spec.params, "num_classes": num_classes})
    return LOSSES.build(spec, network=network)
