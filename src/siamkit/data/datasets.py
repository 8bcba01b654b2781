"""Dataset readers by name. A reader is ``factory(data_dir=None, **params) -> Splits``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siamkit.data.labelled import LabelledData, Splits
from siamkit.data.splits import split_classes, split_items
from siamkit.data.transforms import ImagePreprocessor
from siamkit.errors import DataError
from siamkit.registry import Registry

DATASETS: Registry[Callable[..., Splits]] = Registry("dataset")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".gif", ".webp"}


def load_digits_data(size: int = 8) -> LabelledData:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes) as uint8 (N, 1, size, size)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) * (255 / 16)).round().to(torch.uint8)
    x = x.unsqueeze(1)
    if size != 8:
        x = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bilinear")
        x = x.round().clamp(0, 255).to(torch.uint8)
    return LabelledData(x, torch.from_numpy(digits.target), [str(c) for c in range(10)])


@DATASETS.register("digits")
def digits(
    data_dir: Path | None = None,
    size: int = 8,
    train_classes: Sequence[int] = (0, 1, 2, 3, 4, 5),
    val_fraction: float = 0.2,
    seed: int = 0,
) -> Splits:
    """Digits: ``train_classes`` for training (``val_fraction`` of their images held out for
    validation), every other class for testing."""
    data = load_digits_data(size)
    seen = torch.isin(data.labels, torch.tensor(list(train_classes)))
    known = split_items(
        data.subset(seen.nonzero().squeeze(1)), (1 - val_fraction, val_fraction, 0), seed
    )
    return Splits(known.train, known.val, data.subset((~seen).nonzero().squeeze(1)))


def read_image_folder(
    root: str | Path, size: Sequence[int], mode: str = "L", **framing: Any
) -> LabelledData:
    """A folder-per-class image tree (``root/<class>/<image>``) as uint8 (N, C, H, W);
    ``framing`` (``crop``, ``pad_square``) goes to :class:`ImagePreprocessor`."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    files = [
        (f, label)
        for label, d in enumerate(class_dirs)
        for f in sorted(d.iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise DataError(
            f"{root}: no images found in class sub-folders (expected root/<class>/<image>)"
        )
    pre = ImagePreprocessor(size, mode, **framing)
    x = torch.stack([pre.one(f) for f, _ in files]).mul(255).round().to(torch.uint8)
    return LabelledData(
        x, torch.tensor([label for _, label in files]), [d.name for d in class_dirs]
    )


@DATASETS.register("image_folder")
def image_folder(
    data_dir: Path | None = None,
    size: Sequence[int] = (28, 28),
    mode: str = "L",
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    **_: Any,
) -> Splits:
    """A folder-per-class tree split by class (classes of val/test never seen in training)."""
    if data_dir is None:
        raise DataError("dataset 'image_folder' needs data_dir (the folder of class folders)")
    return split_classes(read_image_folder(data_dir, size, mode), fractions, seed)


def register_readers() -> None:
    """Import the reader modules (they register their datasets; imported on first use because
    they pull in scikit-learn, torchvision and pytorch-metric-learning)."""
    import siamkit.data.faces  # noqa: F401
    import siamkit.data.fsdd  # noqa: F401
    import siamkit.data.molecules  # noqa: F401
    import siamkit.data.omniglot  # noqa: F401
    import siamkit.data.signatures  # noqa: F401


def build_dataset(name: str, data_dir: str | Path | None = None, **params: Any) -> Splits:
    """Read dataset ``name`` with its reader's ``params``."""
    register_readers()
    return DATASETS.build(
        {"name": name, "params": params}, data_dir=Path(data_dir) if data_dir else None
    )
