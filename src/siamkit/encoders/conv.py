"""Small CNN encoders of the literature: Conv-4, the Koch et al. (2015) net and SigNet."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siamkit.encoders.base import Encoder, flat_size
from siamkit.encoders.registry import ENCODERS
from siamkit.errors import ConfigError


def _size(input_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(input_size, int):
        return (input_size, input_size)
    h, w = input_size
    return (int(h), int(w))


@ENCODERS.register("conv4")
class Conv4(Encoder):
    """Conv-4 (Vinyals et al. 2016; Snell et al. 2017): 4 x [conv3x3, BN, ReLU, maxpool 2].

    The flattened feature map is the embedding unless ``embedding_dim`` asks for a linear
    projection to that size. Test-time augmentation (eval mode only, so it applies wherever the
    model is used: ``embed``, ``verify``, galleries): ``flip_average`` averages each image's
    features with those of its horizontal mirror; ``shift_average`` = s > 0 also averages over
    four copies shifted by s pixels left, right, up and down (zero fill).
    """

    def __init__(
        self,
        in_channels: int = 1,
        input_size: int | Sequence[int] = 28,
        channels: int = 64,
        blocks: int = 4,
        embedding_dim: int | None = None,
        normalize: bool = False,
        flip_average: bool = False,
        shift_average: int = 0,
    ) -> None:
        super().__init__(normalize)
        if shift_average < 0:
            raise ConfigError(f"conv4 shift_average: expected pixels >= 0, got {shift_average}")
        self.in_channels = in_channels
        self.flip_average, self.shift_average = flip_average, shift_average
        layers: list[nn.Module] = []
        c_in = in_channels
        for _ in range(blocks):
            layers += [
                nn.Conv2d(c_in, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = channels
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        n = flat_size(self.trunk, in_channels, _size(input_size))
        self.projection = nn.Identity() if embedding_dim is None else nn.Linear(n, embedding_dim)
        self.embedding_dim = n if embedding_dim is None else embedding_dim

    def features(self, x: Tensor) -> Tensor:
        if self.training:
            return self.projection(self.trunk(x))
        views = self.test_views(x)
        return torch.stack([self.projection(self.trunk(view)) for view in views]).mean(0)

    def test_views(self, x: Tensor) -> list[Tensor]:
        """The image, its mirror (``flip_average``) and its shifted copies (``shift_average``)."""
        views = [x, x.flip(-1)] if self.flip_average else [x]
        s = self.shift_average
        return views + [shifted(x, dx, dy) for dx, dy in ((s, 0), (-s, 0), (0, s), (0, -s)) if s]


def shifted(x: Tensor, dx: int, dy: int) -> Tensor:
    """``x`` (..., H, W) moved ``dx`` pixels right and ``dy`` down, zero-filled."""
    height, width = x.shape[-2:]
    pad = max(abs(dx), abs(dy))
    padded = F.pad(x, (pad, pad, pad, pad))
    return padded[..., pad - dy : pad - dy + height, pad - dx : pad - dx + width]


@ENCODERS.register("koch")
class KochNet(Encoder):
    """The siamese convnet of Koch, Zemel & Salakhutdinov (2015) for 105x105 Omniglot images.

    64@10x10, pool, 128@7x7, pool, 128@4x4, pool, 256@4x4, then a dense sigmoid layer (4096 in
    the paper). ``width`` scales every channel count, for CPU-sized variants.
    """

    def __init__(
        self,
        in_channels: int = 1,
        input_size: int | Sequence[int] = 105,
        embedding_dim: int = 4096,
        width: float = 1.0,
        normalize: bool = False,
    ) -> None:
        super().__init__(normalize)
        self.in_channels = in_channels
        c = [max(1, round(n * width)) for n in (64, 128, 128, 256)]
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, c[0], 10), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c[0], c[1], 7), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c[1], c[2], 4), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c[2], c[3], 4), nn.ReLU(inplace=True),
            nn.Flatten(),
        )  # fmt: skip
        n = flat_size(self.trunk, in_channels, _size(input_size))
        self.dense = nn.Sequential(nn.Linear(n, embedding_dim), nn.Sigmoid())
        self.embedding_dim = embedding_dim

    def features(self, x: Tensor) -> Tensor:
        return self.dense(self.trunk(x))


@ENCODERS.register("signet")
class SigNet(Encoder):
    """SigNet (Dey et al. 2017) for offline signatures, 155x220 greyscale in the paper.

    96@11x11, LRN, pool 3/2; 256@5x5, LRN, pool 3/2, dropout; 384@3x3; 256@3x3; pool 3/2,
    dropout; FC 1024, dropout; FC ``embedding_dim`` (128). ``width`` scales channel and FC sizes
    and ``first_stride`` the first convolution, for a compact CPU variant.
    """

    def __init__(
        self,
        in_channels: int = 1,
        input_size: int | Sequence[int] = (155, 220),
        embedding_dim: int = 128,
        width: float = 1.0,
        first_stride: int = 1,
        dropout: float = 0.3,
        normalize: bool = False,
    ) -> None:
        super().__init__(normalize)
        self.in_channels = in_channels
        c = [max(1, round(n * width)) for n in (96, 256, 384, 256, 1024)]
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, c[0], 11, stride=first_stride), nn.ReLU(inplace=True),
            nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0), nn.MaxPool2d(3, 2),
            nn.Conv2d(c[0], c[1], 5, padding=2), nn.ReLU(inplace=True),
            nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0), nn.MaxPool2d(3, 2),
            nn.Dropout2d(dropout),
            nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c[2], c[3], 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2), nn.Dropout2d(dropout),
            nn.Flatten(),
        )  # fmt: skip
        n = flat_size(self.trunk, in_channels, _size(input_size))
        self.dense = nn.Sequential(
            nn.Linear(n, c[4]),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(c[4], embedding_dim),
        )
        self.embedding_dim = embedding_dim

    def features(self, x: Tensor) -> Tensor:
        return self.dense(self.trunk(x))
