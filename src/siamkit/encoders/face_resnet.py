"""dlib's face-recognition ResNet (King 2017: 128-d descriptors, 99.38% on LFW).

The architecture of dlib's ``dlib_face_recognition_resnet_model_v1`` as face-api.js runs it: a
7x7/2 stem and 3x3 max-pool, residual stages of 32, 64, 128 and 256 channels whose down-sampling
blocks use an unpadded 3x3/2 convolution beside a 2x2 average-pool shortcut (zero-padded to the
new channel count), global average pooling and a 256 -> 128 linear map. dlib's per-channel
affine "scale" layers are folded into the convolutions' weights and biases, so every unit is a
plain ``Conv2d``. Pre-trained weights come from face-api's files through
:mod:`siamkit.encoders.face_api` and a recipe's ``init_weights``; with random weights the net
can also be trained from scratch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siamkit.encoders.base import Encoder
from siamkit.encoders.registry import ENCODERS
from siamkit.errors import ConfigError, DataError

MIN_SIZE = 131  # the last unpadded 3x3/2 convolution needs a 3x3 input
MEAN_RGB = (122.782, 117.001, 104.298)  # dlib's training-set mean, on the 0-255 scale
STAGES: tuple[tuple[str, int, bool], ...] = (
    # (name, channels, downsample) in face-api.js's naming
    ("conv32_1", 32, False), ("conv32_2", 32, False), ("conv32_3", 32, False),
    ("conv64_down", 64, True), ("conv64_1", 64, False), ("conv64_2", 64, False),
    ("conv64_3", 64, False),
    ("conv128_down", 128, True), ("conv128_1", 128, False), ("conv128_2", 128, False),
    ("conv256_down", 256, True), ("conv256_1", 256, False), ("conv256_2", 256, False),
    ("conv256_down_out", 256, True),
)  # fmt: skip


class ResidualBlock(nn.Module):
    """conv-relu-conv plus the input (stride 1), or plus its 2x2 average pool with zero channels
    appended (``downsample``: the first convolution is an unpadded 3x3/2)."""

    def __init__(self, in_channels: int, channels: int, downsample: bool) -> None:
        super().__init__()
        stride, padding = (2, 0) if downsample else (1, 1)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        out = self.conv2(F.relu(self.conv1(x)))
        if not self.downsample:
            return F.relu(out + x)
        shortcut = F.avg_pool2d(x, 2)
        # odd sizes: the unpadded conv is one pixel short of the pool; pad it at the far edges
        out = F.pad(out, (0, shortcut.shape[3] - out.shape[3], 0, shortcut.shape[2] - out.shape[2]))
        shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, out.shape[1] - shortcut.shape[1]))
        return F.relu(out + shortcut)


class FaceResNet(Encoder):
    """dlib's face ResNet on RGB (or grey, repeated to RGB) images in [0, 1] of any size >= 131
    pixels (dlib: 150x150 aligned face chips); 128-d embeddings, or ``embedding_dim`` through an
    extra linear projection."""

    def __init__(
        self,
        in_channels: int = 3,
        embedding_dim: int = 128,
        normalize: bool = True,
    ) -> None:
        super().__init__(normalize)
        if in_channels not in (1, 3):
            raise ConfigError(f"face_resnet: in_channels must be 1 or 3, got {in_channels}")
        self.in_channels = in_channels
        self.stem = nn.Conv2d(3, 32, 7, 2, 0)
        blocks, channels = {}, 32
        for name, width, downsample in STAGES:
            blocks[name] = ResidualBlock(channels, width, downsample)
            channels = width
        self.blocks = nn.ModuleDict(blocks)
        self.fc = nn.Linear(256, 128, bias=False)
        self.projection = nn.Linear(128, embedding_dim) if embedding_dim != 128 else None
        self.embedding_dim = embedding_dim
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1) / 255, False)

    def features(self, x: Tensor) -> Tensor:  # noqa: D102
        if min(x.shape[-2:]) < MIN_SIZE:
            raise DataError(
                f"face_resnet needs images of at least {MIN_SIZE}x{MIN_SIZE} pixels (dlib: "
                f"150x150), got shape {tuple(x.shape)}"
            )
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        out = F.max_pool2d(F.relu(self.stem(x - self.mean)), 3, 2)
        for block in self.blocks.values():
            out = block(out)
        out = self.fc(out.mean((2, 3)))
        return self.projection(out) if self.projection is not None else out


@ENCODERS.register("face_resnet")
def face_resnet(**params: object) -> FaceResNet:
    """dlib's face-recognition ResNet (see :class:`FaceResNet`)."""
    return FaceResNet(**params)  # type: ignore[arg-type]
