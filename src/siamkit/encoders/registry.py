"""The registry of encoders by name."""

from __future__ import annotations

from typing import Any

from torch import nn

from siamkit.registry import ComponentSpec, Registry

ENCODERS: Registry[nn.Module] = Registry("encoder")


def build_encoder(spec: ComponentSpec | dict[str, Any], **extra: Any) -> nn.Module:
    """Build an encoder from ``{"name": ..., "params": {...}}`` (plus keyword ``extra`` such as a
    vocabulary or ``assets_dir``); it exposes ``embedding_dim``."""
    return ENCODERS.build(spec, **extra)
