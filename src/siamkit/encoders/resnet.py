"""torchvision ResNet trunks with a projection head."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from siamkit.encoders.base import Encoder
from siamkit.encoders.registry import ENCODERS


class ResNetEncoder(Encoder):
    """A torchvision ResNet (random init unless ``weights`` is given) whose classifier is
    replaced by a projection to ``embedding_dim``.

    ``in_channels`` other than 3 replaces the first convolution; ``small_input`` swaps the 7x7/2
    stem and its max-pool for a 3x3/1 stem, as is usual for images of 32-112 pixels.
    """

    def __init__(
        self,
        arch: str,
        in_channels: int = 3,
        embedding_dim: int = 128,
        weights: Any = None,
        small_input: bool = False,
        normalize: bool = False,
    ) -> None:
        super().__init__(normalize)
        import torchvision

        self.in_channels = in_channels
        net = torchvision.models.get_model(arch, weights=weights)
        if in_channels != 3 or small_input:
            kernel, stride, padding = (3, 1, 1) if small_input else (7, 2, 3)
            net.conv1 = nn.Conv2d(in_channels, 64, kernel, stride, padding, bias=False)
        if small_input:
            net.maxpool = nn.Identity()
        features = net.fc.in_features
        net.fc = nn.Identity()
        self.trunk = net
        self.projection = nn.Linear(features, embedding_dim)
        self.embedding_dim = embedding_dim

    def features(self, x: Tensor) -> Tensor:
        return self.projection(self.trunk(x))


def _register(arch: str) -> None:
    @ENCODERS.register(arch)
    def build(**params: Any) -> ResNetEncoder:
        return ResNetEncoder(arch, **params)

    build.__doc__ = f"A {arch} trunk with a projection head (see :class:`ResNetEncoder`)."


for _arch in ("resnet18", "resnet34", "resnet50"):
    _register(_arch)
