"""Import face-api.js's pre-trained face-recognition weights into :class:`FaceResNet`.

face-api.js (and its maintained fork, the npm package ``@vladmandic/face-api``, MIT licence)
ships dlib's face-recognition ResNet as TensorFlow.js weights: a JSON manifest naming every tensor
with its shape and 8-bit quantisation, and a binary file of the values. Both are plain data (no
code is executed or unpickled). :func:`convert_face_api` turns them into a safetensors file of
:class:`~siamkit.encoders.face_resnet.FaceResNet` weights that a recipe's ``init_weights`` loads::

    npm pack @vladmandic/face-api && tar xzf vladmandic-face-api-*.tgz
    siamkit convert-face-api package/model face_resnet.safetensors
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from siamkit.checkpoint import save_tensors
from siamkit.encoders.face_resnet import STAGES
from siamkit.errors import CheckpointError

MANIFEST = "face_recognition_model-weights_manifest.json"
BYTES = {"uint8": 1, "float32": 4}


def read_manifest_tensors(folder: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of ``folder``'s face-recognition manifest, de-quantised to float32."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise CheckpointError(f"{folder}: no {MANIFEST} (expected face-api's model/ folder)")
    try:
        groups = json.loads(manifest.read_text("utf-8"))
        tensors = {}
        for group in groups:
            data = b"".join((folder / name).read_bytes() for name in group["paths"])
            tensors.update(_group_tensors(group["weights"], data, manifest))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{manifest}: not a readable TF.js weights manifest: {error}"
        ) from error
    return tensors


def _group_tensors(entries: list[dict], data: bytes, manifest: Path) -> dict[str, np.ndarray]:
    tensors, offset = {}, 0
    for entry in entries:
        quantization = entry.get("quantization")
        dtype = quantization["dtype"] if quantization else entry["dtype"]
        if dtype not in BYTES:
            raise CheckpointError(f"{manifest}: {entry['name']}: unsupported dtype {dtype!r}")
        count = int(np.prod(entry["shape"]))
        end = offset + count * BYTES[dtype]
        if end > len(data):
            raise CheckpointError(f"{manifest}: the weights file ends inside {entry['name']!r}")
        values = np.frombuffer(data[offset:end], dtype=dtype).astype(np.float32)
        if quantization:
            values = values * quantization["scale"] + quantization["min"]
        tensors[entry["name"]] = values.reshape(entry["shape"])
        offset = end
    return tensors


def _folded_conv(tensors: dict[str, np.ndarray], prefix: str) -> dict[str, Tensor]:
    """A conv + per-channel scale layer as one ``Conv2d``: weight * s, bias * s + beta."""
    filters = torch.from_numpy(tensors[f"{prefix}/conv/filters"]).permute(3, 2, 0, 1)
    bias = torch.from_numpy(tensors[f"{prefix}/conv/bias"])
    scale = torch.from_numpy(tensors[f"{prefix}/scale/weights"])
    shift = torch.from_numpy(tensors[f"{prefix}/scale/biases"])
    return {"weight": filters * scale.view(-1, 1, 1, 1), "bias": bias * scale + shift}


def face_api_state_dict(folder: str | Path) -> dict[str, Tensor]:
    """:class:`FaceResNet` weights (128-d output, no projection) from face-api's model folder."""
    tensors = read_manifest_tensors(folder)
    try:
        layers = {"stem": _folded_conv(tensors, "conv32_down")}
        for name, _, _ in STAGES:
            for conv in ("conv1", "conv2"):
                layers[f"blocks.{name}.{conv}"] = _folded_conv(tensors, f"{name}/{conv}")
        fc = torch.from_numpy(tensors["fc"]).T
    except KeyError as error:
        raise CheckpointError(f"{folder}: the manifest has no tensor {error}") from error
    state = {
        f"{layer}.{key}": value for layer, parts in layers.items() for key, value in parts.items()
    }
    return {**state, "fc.weight": fc.contiguous()}


def convert_face_api(folder: str | Path, out: str | Path) -> Path:
    """Write face-api's face-recognition weights as a :class:`FaceResNet` safetensors file."""
    out = Path(out)
    save_tensors(out, face_api_state_dict(folder), {"source": f"face-api.js {MANIFEST}"})
    return out
