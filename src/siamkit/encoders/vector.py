"""Encoders for feature vectors (MLP) and 1-D signals (temporal convolutions)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from siamkit.encoders.base import Encoder
from siamkit.encoders.registry import ENCODERS
from siamkit.errors import DataError


@ENCODERS.register("mlp")
class MLPEncoder(Encoder):
    """Linear-ReLU(-dropout) layers of ``hidden`` sizes, then a linear map to ``embedding_dim``.

    Inputs of shape (B, ...) are flattened, so 8x8 images work as 64-d vectors.
    """

    input_ndim = 2

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (256, 256),
        embedding_dim: int = 64,
        dropout: float = 0.0,
        normalize: bool = False,
    ) -> None:
        super().__init__(normalize)
        self.in_features = in_features
        layers: list[nn.Module] = []
        n = in_features
        for width in hidden:
            layers += [nn.Linear(n, width), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            n = width
        layers.append(nn.Linear(n, embedding_dim))
        self.net = nn.Sequential(*layers)
        self.embedding_dim = embedding_dim

    def check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.ndim < 2 or x[0].numel() != self.in_features:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise DataError(f"MLPEncoder expects (batch, {self.in_features}) features, got {shape}")
        if x.shape[0] == 0:
            raise DataError("MLPEncoder got an empty batch")

    def features(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


@ENCODERS.register("conv1d")
class Conv1dEncoder(Encoder):
    """Temporal convolutions over (B, C, L) signals, global average pooling, linear projection."""

    input_ndim = 3

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128),
        kernel_size: int = 5,
        embedding_dim: int = 64,
        normalize: bool = False,
    ) -> None:
        super().__init__(normalize)
        self.in_channels = in_channels
        layers: list[nn.Module] = []
        c_in = in_channels
        for c in channels:
            layers += [
                nn.Conv1d(c_in, c, kernel_size, padding=kernel_size // 2),
                nn.BatchNorm1d(c),
                nn.ReLU(inplace=True),
            ]
            c_in = c
        self.trunk = nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.projection = nn.Linear(c_in, embedding_dim)
        self.embedding_dim = embedding_dim

    def features(self, x: Tensor) -> Tensor:
        return self.projection(self.trunk(x))
