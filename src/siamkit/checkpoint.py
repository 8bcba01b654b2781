"""Nested state (model, optimizer, scheduler, RNG) saved as safetensors + JSON, never pickled.

Tensors go into one ``.safetensors`` file under dotted keys; everything else (numbers, strings,
lists, dicts) goes into a JSON skeleton that points at those keys. Files are written to a temporary
name and renamed, so an interrupted save never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from siamkit.errors import CheckpointError

_TENSOR = "__tensor__"


def _flatten(obj: Any, key: str, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, Tensor):
        tensors[key] = obj.detach().cpu().contiguous()
        return {_TENSOR: key}
    if isinstance(obj, dict):
        items = [
            [_flatten(k, f"{key}.k{i}", tensors), _flatten(v, f"{key}.{i}", tensors)]
            for i, (k, v) in enumerate(obj.items())
        ]
        return {"__dict__": items}
    if isinstance(obj, list | tuple):
        return [_flatten(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise CheckpointError(f"cannot save a value of type {type(obj).__name__} at {key}")


def _unflatten(obj: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if "__float__" in obj:
            return float(obj["__float__"])
        return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None):
    """Save a flat dict of tensors as safetensors, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata)
    os.replace(tmp, path)


def load_tensors(path: Path) -> dict[str, Tensor]:
    """Load a safetensors file; raises :class:`CheckpointError` naming it when missing/corrupt."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a valid safetensors file ({error})") from error


def save_state(folder: Path, name: str, state: Any) -> None:
    """Save nested ``state`` as ``folder/name.safetensors`` + ``folder/name.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {}
    skeleton = _flatten(state, "s", tensors)
    save_tensors(folder / f"{name}.safetensors", tensors)
    atomic_write_text(folder / f"{name}.json", json.dumps(skeleton))


def load_state(folder: Path, name: str) -> Any:
    """Load what :func:`save_state` saved."""
    path = folder / f"{name}.json"
    try:
        skeleton = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise CheckpointError(f"{path}: file not found") from error
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: corrupt JSON ({error})") from error
    return _unflatten(skeleton, load_tensors(folder / f"{name}.safetensors"))


def load_weights(module: torch.nn.Module, tensors: dict[str, Tensor], source: Path) -> None:
    """Load ``tensors`` into ``module`` strictly; a mismatch raises :class:`CheckpointError`."""
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0:3]
        raise CheckpointError(
            f"{source}: weights do not match the model: {' '.join(first)}"
        ) from error
