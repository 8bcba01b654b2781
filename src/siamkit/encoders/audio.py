"""A small 2-D CNN over log-mel spectrograms (the items of :mod:`siamkit.data.audio`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from siamkit.encoders.base import Encoder
from siamkit.encoders.registry import ENCODERS
from siamkit.errors import ConfigError


@ENCODERS.register("audio_cnn")
class AudioCNN(Encoder):
    """``len(channels)`` blocks of [conv3x3, BN, ReLU, maxpool 2] over a (B, 1, n_mels, frames)
    log-mel batch, then mean- and max-pooling over frequency and time side by side, dropout and a
    linear projection to ``embedding_dim``.

    Global pooling makes the embedding insensitive to where in the (padded) window the word
    falls and lets any number of frames in; ``normalize`` puts the embeddings on the unit sphere.
    """

    in_channels = 1

    def __init__(
        self,
        channels: Sequence[int] = (32, 64, 128, 128),
        embedding_dim: int = 128,
        dropout: float = 0.1,
        normalize: bool = False,
    ) -> None:
        super().__init__(normalize)
        if not channels or min(channels) < 1 or embedding_dim < 1 or not 0 <= dropout < 1:
            raise ConfigError(
                "audio_cnn: expected channels >= 1, embedding_dim >= 1 and dropout in [0, 1); "
                f"got {list(channels)}, {embedding_dim}, {dropout}"
            )
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in channels:
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            c_in = c_out
        self.trunk = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(2 * c_in, embedding_dim)
        self.embedding_dim = embedding_dim

    def features(self, x: Tensor) -> Tensor:
        maps = self.trunk(x).flatten(2)  # (B, C, F * T)
        pooled = torch.cat([maps.mean(2), maps.amax(2)], dim=1)
        return self.projection(self.dropout(pooled))
