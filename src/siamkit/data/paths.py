"""Where data lives: the shared datasets folder and siamkit's cache."""

from __future__ import annotations

import os
from pathlib import Path

from siamkit.errors import DataError

_REPO_ROOT = Path(__file__).resolve().parents[3]


def datasets_root() -> Path:
    """``$SIAMKIT_DATA`` if set, else ``../shared/datasets`` beside the repository."""
    env = os.environ.get("SIAMKIT_DATA")
    return Path(env) if env else _REPO_ROOT.parent / "shared" / "datasets"


def dataset_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """The folder of dataset ``name`` (``data_dir`` wins when given); raises when it is missing."""
    path = Path(data_dir) if data_dir else datasets_root() / name
    if not path.is_dir():
        raise DataError(
            f"dataset folder {path} not found; pass --data-dir or set SIAMKIT_DATA to the folder "
            f"that holds {name}/"
        )
    return path


def cache_dir() -> Path:
    """``$SIAMKIT_CACHE`` or ``~/.cache/siamkit``, created if needed."""
    path = Path(os.environ.get("SIAMKIT_CACHE", Path.home() / ".cache" / "siamkit"))
    path.mkdir(parents=True, exist_ok=True)
    return path
