"""siamkit: Siamese (twin) neural networks on PyTorch, from pairs to a served gallery.

The public names are imported on first use (PEP 562), so ``import siamkit`` (and the command
line's ``siamkit --help``) does not load torch; ``siamkit.load``, ``siamkit.SiameseNetwork`` etc.
work as plain attributes.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from siamkit.model import Model, load, save_model
    from siamkit.siamese import SiameseNetwork

_LAZY = {
    "Model": "siamkit.model",
    "load": "siamkit.model",
    "save_model": "siamkit.model",
    "SiameseNetwork": "siamkit.siamese",
}
__all__ = ["Model", "SiameseNetwork", "__version__", "load", "save_model"]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access and cache the name here."""
    if name == "__version__":
        value: Any = _installed_version()
    elif name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'siamkit' has no attribute {name!r}")
    globals()[name] = value
    return value


def _installed_version() -> str:
    """The version in the installed package's metadata (pyproject.toml's)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("siamkit")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
