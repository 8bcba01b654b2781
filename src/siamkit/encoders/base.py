"""The common shape of siamkit's encoders: input check, trunk, optional L2 normalisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siamkit.errors import DataError


class Encoder(nn.Module):
    """Base class: subclasses set ``embedding_dim``, ``input_ndim`` and implement ``features``.

    ``forward`` checks the batch's rank (and channel count for images), runs ``features`` and,
    when ``normalize`` is set, L2-normalises the embeddings onto the unit sphere.
    """

    embedding_dim: int
    input_ndim: int = 4  # (B, C, H, W) by default
    in_channels: int | None = None

    def __init__(self, normalize: bool = False) -> None:
        super().__init__()
        self.normalize = normalize

    def features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def pretrained(self) -> nn.Module:
        """The part a recipe's ``init_weights`` file fills (strictly): the whole encoder, unless
        a subclass keeps a freshly initialised head on top of a pre-trained trunk."""
        return self

    def check_input(self, x: Tensor) -> None:
        """Raise :class:`DataError` when ``x`` is not a batch of the expected shape."""
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise DataError(f"{name} expects a tensor batch, got {type(x).__name__}")
        if x.ndim != self.input_ndim:
            raise DataError(
                f"{name} expects a batch of rank {self.input_ndim}, got shape {tuple(x.shape)}"
            )
        if self.in_channels is not None and x.shape[1] != self.in_channels:
            raise DataError(
                f"{name} expects {self.in_channels} input channel(s), got shape {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise DataError(f"{name} got an empty batch")

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        self.check_input(x)
        out = self.features(x)
        return F.normalize(out, dim=1) if self.normalize else out


def flat_size(trunk: nn.Module, in_channels: int, input_size: tuple[int, int]) -> int:
    """Number of features ``trunk`` produces for one image of ``input_size`` (H, W)."""
    with torch.no_grad():
        was_training = trunk.training
        trunk.eval()
        n = trunk(torch.zeros(1, in_channels, *input_size)).flatten(1).shape[1]
        trunk.train(was_training)
    return n
