"""Omniglot (Lake et al. 2015) read from its official zips, decoded once into a uint8 cache.

``images_background.zip`` (30 alphabets, 964 characters) gives the training and validation
classes, ``images_evaluation.zip`` (20 alphabets, 659 characters) the test classes. Characters are
the classes and alphabets the groups. Images are decoded, inverted (strokes bright on black) and
resized once, then cached as a safetensors file keyed by the zip's sha256 and the image size, in
``$SIAMKIT_CACHE`` or ``~/.cache/siamkit``. Nothing is extracted next to the data.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor
from torchvision.transforms import v2

from siamkit.data.datasets import DATASETS
from siamkit.data.labelled import LabelledData, Splits
from siamkit.data.paths import cache_dir, dataset_dir
from siamkit.data.transforms import build_augmentation
from siamkit.errors import ConfigError, DataError

BACKGROUND_ZIP = "images_background.zip"
EVALUATION_ZIP = "images_evaluation.zip"
SIZES = (28, 56, 105)
CACHE_VERSION = 1  # bump when decoding changes, so stale caches are not reused
ROTATIONS = 4  # classes x4 by rotating whole characters by 0, 90, 180, 270 degrees


@dataclass(frozen=True)
class OmniglotImages:
    """The images of one zip: ``images`` (N, 1, S, S) uint8, strokes 255 on a 0 background."""

    images: Tensor
    labels: Tensor  # (N,) character index into ``characters``
    groups: Tensor  # (N,) alphabet index into ``alphabets``
    characters: list[str]  # "Alphabet/characterNN"
    alphabets: list[str]

    def to_labelled(self) -> LabelledData:
        """These images as :class:`LabelledData` (classes = characters, groups = alphabets)."""
        return LabelledData(self.images, self.labels, self.characters, self.groups, self.alphabets)


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def decode_png(data: bytes, size: int, name: str = "<bytes>") -> np.ndarray:
    """One Omniglot PNG -> (size, size) uint8, strokes bright (inverted).

    Resized like the core ``image`` preprocessor (PIL bilinear), so a model saved with
    ``{"name": "image", "params": {"size": [size, size], "invert": true}}`` sees the same pixels.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            grey = image.convert("L")
    except OSError as error:
        raise DataError(f"{name}: not a readable image ({error})") from error
    if grey.size != (size, size):
        grey = grey.resize((size, size), Image.Resampling.BILINEAR)
    return 255 - np.asarray(grey, dtype=np.uint8)


def png_members(archive: zipfile.ZipFile, path: Path) -> list[tuple[str, str, str]]:
    """(member, alphabet, character) of every PNG laid out as
    ``root/Alphabet/characterNN/x.png``."""
    found = []
    for member in archive.namelist():
        parts = PurePosixPath(member).parts
        if member.endswith(".png") and len(parts) == 4:
            found.append((member, parts[1], parts[2]))
    if not found:
        raise DataError(
            f"{path}: expected PNGs laid out as <root>/<Alphabet>/<characterNN>/<id>.png, "
            "found none"
        )
    return sorted(found)


def decode_zip(path: Path, size: int) -> OmniglotImages:
    """Decode every image of an Omniglot zip (no cache); classes are numbered in sorted order."""
    with zipfile.ZipFile(path) as archive:
        members = png_members(archive, path)
        images = np.stack([decode_png(archive.read(m), size, f"{path}:{m}") for m, _, _ in members])
    characters = sorted({f"{a}/{c}" for _, a, c in members})
    alphabets = sorted({a for _, a, _ in members})
    char_index = {name: i for i, name in enumerate(characters)}
    alpha_index = {name: i for i, name in enumerate(alphabets)}
    return OmniglotImages(
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.tensor([char_index[f"{a}/{c}"] for _, a, c in members]),
        groups=torch.tensor([alpha_index[a] for _, a, _ in members]),
        characters=characters,
        alphabets=alphabets,
    )


def _save(data: OmniglotImages, file: Path) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"images": data.images, "labels": data.labels, "groups": data.groups}
    names = json.dumps({"characters": data.characters, "alphabets": data.alphabets})
    tmp = file.with_suffix(f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"names": names})
    tmp.replace(file)  # atomic: a concurrent reader sees the old file or the complete new one


def _load(file: Path) -> OmniglotImages | None:
    """The cached images, or ``None`` when the cache file is missing or damaged."""
    try:
        with safe_open(str(file), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in ("images", "labels", "groups")}
            names = json.loads((handle.metadata() or {})["names"])
    except (OSError, SafetensorError, KeyError, ValueError):
        return None  # decode again
    return OmniglotImages(
        tensors["images"],
        tensors["labels"],
        tensors["groups"],
        names["characters"],
        names["alphabets"],
    )


def read_zip(path: Path | str, size: int = 28, cache: bool = True) -> OmniglotImages:
    """Images of one Omniglot zip at ``size`` px, from the cache when the zip was decoded before."""
    path = Path(path)
    if size not in SIZES:
        raise ConfigError(f"omniglot image size: expected one of {SIZES}, got {size}")
    if not path.is_file():
        raise DataError(f"{path}: Omniglot zip not found")
    if not cache:
        return decode_zip(path, size)
    file = cache_dir() / "omniglot" / f"{sha256(path)}-{size}px-v{CACHE_VERSION}.safetensors"
    data = _load(file)
    if data is None:
        data = decode_zip(path, size)
        _save(data, file)
    return data


def rotate_classes(data: LabelledData) -> LabelledData:
    """Four times the classes: each character rotated by 0/90/180/270 degrees is a new class.

    Vinyals et al. (2016) and Snell et al. (2017) train on these; class ``c`` rotated ``r``
    quarter turns becomes class ``r * n_classes + c``, in the same group (alphabet).
    """
    n = int(data.labels.max()) + 1 if len(data) else 0
    items = torch.cat([torch.rot90(data.items, r, dims=(-2, -1)) for r in range(ROTATIONS)])
    labels = torch.cat([data.labels + r * n for r in range(ROTATIONS)])
    groups = None if data.groups is None else data.groups.repeat(ROTATIONS)
    classes = None
    if data.classes is not None:
        classes = [f"{c}@{90 * r}" for r in range(ROTATIONS) for c in data.classes]
    return LabelledData(items, labels, classes, groups, data.group_names)


def carve_validation(
    data: LabelledData, by: str, fraction: float, seed: int
) -> tuple[LabelledData, LabelledData]:
    """Split the background set into (train, val) by whole ``alphabets`` or by ``characters``."""
    if by not in ("alphabets", "characters"):
        raise ConfigError(f"omniglot validation: expected 'alphabets' or 'characters', got {by!r}")
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"omniglot val_fraction: expected a value in [0, 1), got {fraction}")
    keys = data.groups if by == "alphabets" else data.labels
    units = torch.unique(keys)
    order = units[torch.randperm(len(units), generator=torch.Generator().manual_seed(seed))]
    held = order[: round(fraction * len(units))]
    is_val = torch.isin(keys, held)
    return data.subset(torch.nonzero(~is_val).squeeze(1)), data.subset(
        torch.nonzero(is_val).squeeze(1)
    )


@DATASETS.register("omniglot")
def omniglot(
    data_dir: Path | None = None,
    size: int = 28,
    rotations: bool = False,
    validation: str = "alphabets",
    val_fraction: float = 0.15,
    seed: int = 0,
    cache: bool = True,
) -> Splits:
    """Omniglot splits: train/val from the background alphabets, test = the evaluation alphabets.

    ``items`` are uint8 (N, 1, size, size) images, strokes 255 on 0; ``groups`` are alphabets.
    ``validation`` carves ``val_fraction`` of the background ``alphabets`` (or ``characters``)
    out for validation; ``rotations`` adds the rotated-class augmentation to the training split.
    """
    folder = dataset_dir("omniglot", data_dir)
    background = read_zip(folder / BACKGROUND_ZIP, size, cache).to_labelled()
    test = read_zip(folder / EVALUATION_ZIP, size, cache).to_labelled()
    train, val = carve_validation(background, validation, val_fraction, seed)
    if rotations:
        train = rotate_classes(train)
    return Splits(train, val, test, preprocess=preprocess_spec(size))


def preprocess_spec(size: int) -> dict[str, object]:
    """How a raw Omniglot PNG becomes an item like the reader's: grey, resized, inverted."""
    return {"name": "image", "params": {"size": [size, size], "mode": "L", "invert": True}}


# Koch et al.'s (2015) random affine distortions as a recipe ``augmentation`` entry: rotation
# +-10 degrees, shear +-0.3 rad (~17 degrees) along x and y, scale 0.8-1.2, and a shift of +-2 px
# at 105 px (a fraction of the image, so the same entry works at 28 and 56 px).
KOCH_AFFINE: dict[str, Any] = {
    "name": "RandomAffine",
    "params": {
        "degrees": 10.0,
        "translate": [2 / 105, 2 / 105],
        "scale": [0.8, 1.2],
        "shear": [-17.0, 17.0, -17.0, 17.0],
    },
}


def koch_affine() -> v2.Compose:
    """The :data:`KOCH_AFFINE` distortions as a transform for one (1, S, S) image."""
    return build_augmentation([KOCH_AFFINE])
