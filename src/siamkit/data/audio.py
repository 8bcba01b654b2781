"""Audio input for training and ``siamkit.load``: WAV files -> log-mel batches (B, 1, n_mels,
frames) as tensors, the items of speech models. The features themselves (decoding,
resampling, the mel spectrogram and its scales, framing, every setting and error) are
:class:`siamkit.audio_features.LogMelFeatures`, shared with the torch-free runtime of exported
models.

The :class:`AudioPreprocessor` is saved with a model (preprocessor ``audio``), so ``siamkit
verify MODEL a.wav b.wav`` and ``siamkit.load(...).embed([...])`` read WAV files exactly as in
training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from siamkit.audio_features import (  # noqa: F401  re-exported: the reader's public names
    AUDIO_SUFFIXES,
    DB_FLOOR,
    FLOOR,
    SCALES,
    SILENCE,
    TOP_DB,
    LogMelFeatures,
    raise_volume,
    read_wav,
    write_wav,
)
from siamkit.data.transforms import PREPROCESSORS
from siamkit.errors import DataError
from siamkit.registry import ComponentSpec


class AudioPreprocessor(LogMelFeatures):
    """WAV files (or mono float arrays at ``sample_rate``) -> log-mel batches (B, 1, n_mels,
    frames) as float tensors; the settings are :class:`LogMelFeatures`'."""

    @property
    def spec(self) -> ComponentSpec:
        """The spec that rebuilds this preprocessor."""
        return ComponentSpec(name="audio", params=self.params)

    def one(self, source: Any) -> Tensor:
        """One WAV path or mono array (or 1-D tensor) -> (1, n_mels, frames) float tensor."""
        if isinstance(source, Tensor):
            source = source.detach().cpu().numpy()
        return torch.from_numpy(super().one(source))

    def __call__(self, sources: Sequence[Any]) -> Tensor:
        if len(sources) == 0:
            raise DataError("no inputs to preprocess")
        return torch.stack([self.one(s) for s in sources])


@PREPROCESSORS.register("audio")
def _audio(**params: Any) -> AudioPreprocessor:
    return AudioPreprocessor(**params)
