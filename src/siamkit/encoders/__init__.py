"""Encoders map one input batch to embeddings (B, D). Built by name through :data:`ENCODERS`."""

from siamkit.encoders.registry import ENCODERS, build_encoder

# Importing the modules registers their encoders.
from siamkit.encoders import (  # noqa: E402,F401  isort: skip
    audio,
    conv,
    face_resnet,
    resnet,
    speaker,
    speech_embedding,
    text,
    transformer,
    vector,
)

__all__ = ["ENCODERS", "build_encoder"]
