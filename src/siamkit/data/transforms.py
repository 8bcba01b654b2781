"""Augmentation (torchvision transforms.v2, by name) and preprocessors that turn raw inputs
(files, PIL images, arrays) into model batches. A preprocessor is saved with the model, so
``verify`` and the server apply exactly the steps used in training."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from siamkit.errors import ConfigError, DataError
from siamkit.imaging import (  # noqa: F401  (MAX_IMAGE_PIXELS, open_image re-exported)
    MAX_IMAGE_PIXELS,
    checked_framing,
    open_image,
)
from siamkit.registry import ComponentSpec, Registry

if TYPE_CHECKING:
    from torchvision.transforms import v2

PREPROCESSORS: Registry[Any] = Registry("preprocessor")


def build_augmentation(specs: Sequence[ComponentSpec | dict[str, Any]] | None) -> v2.Compose | None:
    """A ``v2.Compose`` of transforms named after torchvision's classes, e.g.
    ``[{"name": "RandomAffine", "params": {"degrees": 10}}]``; ``None`` for no augmentation."""
    if not specs:
        return None
    from torchvision.transforms import v2

    steps = []
    for raw in specs:
        spec = raw if isinstance(raw, ComponentSpec) else ComponentSpec.model_validate(raw)
        cls = getattr(v2, spec.name, None)
        if not isinstance(cls, type):
            raise ConfigError(
                f"unknown augmentation {spec.name!r}: not a torchvision.transforms.v2 class"
            )
        try:
            steps.append(cls(**spec.params))
        except TypeError as error:
            raise ConfigError(
                f"augmentation {spec.name!r}: bad params {spec.params}: {error}"
            ) from error
    return v2.Compose(steps)


class ImagePreprocessor:
    """Read images as ``mode`` ("L" grey or "RGB"), frame them, resize to ``size`` (H, W),
    optionally invert (dark ink on white -> bright on black), and return a float batch
    (B, C, H, W) in [0, 1].

    Framing (off by default): ``crop`` trims the given fractions of the height or width from the
    (top, bottom, left, right) edges, and ``pad_square`` centres the result on a black square, so
    that e.g. loosely cropped face photos match the framing a pre-trained face model expects.
    """

    def __init__(
        self,
        size: Sequence[int],
        mode: str = "L",
        invert: bool = False,
        crop: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
        pad_square: bool = False,
    ) -> None:
        self.size, self.crop = checked_framing(size, mode, crop)
        self.mode, self.invert, self.pad_square = mode, invert, pad_square

    @property
    def spec(self) -> ComponentSpec:
        """The spec that rebuilds this preprocessor."""
        params: dict[str, Any] = {"size": list(self.size), "mode": self.mode, "invert": self.invert}
        if any(self.crop) or self.pad_square:
            params |= {"crop": list(self.crop), "pad_square": self.pad_square}
        return ComponentSpec(name="image", params=params)

    def frame(self, x: Tensor) -> Tensor:
        """Apply ``crop`` and ``pad_square`` to a (C, H, W) image."""
        height, width = x.shape[-2:]
        top, bottom, left, right = self.crop
        x = x[..., round(top * height) : height - round(bottom * height),
              round(left * width) : width - round(right * width)]  # fmt: skip
        if self.pad_square:
            height, width = x.shape[-2:]
            side = max(height, width)
            across, down = side - width, side - height
            x = F.pad(x, (across // 2, across - across // 2, down // 2, down - down // 2))
        return x

    def one(self, source: Any) -> Tensor:
        """One input -> (C, H, W) float tensor."""
        if isinstance(source, Tensor):
            from torchvision.transforms import v2

            x = source.float() / 255 if not source.is_floating_point() else source
            return v2.functional.resize(self.frame(x), list(self.size), antialias=True)
        image = open_image(source, self.mode)
        if any(self.crop) or self.pad_square:
            framed = self.frame(_channels_first(np.array(image)))
            image = Image.fromarray(framed.permute(1, 2, 0).squeeze(2).numpy())
        image = image.resize(self.size[::-1], Image.Resampling.BILINEAR)
        x = _channels_first(np.asarray(image, dtype=np.float32) / 255)
        return 1 - x if self.invert else x

    def __call__(self, sources: Sequence[Any]) -> Tensor:
        if len(sources) == 0:
            raise DataError("no inputs to preprocess")
        return torch.stack([self.one(s) for s in sources])


def _channels_first(pixels: np.ndarray) -> Tensor:
    """(H, W) or (H, W, C) pixels -> (C, H, W) tensor."""
    x = torch.from_numpy(pixels)
    return x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)


@PREPROCESSORS.register("image")
def _image(**params: Any) -> ImagePreprocessor:
    return ImagePreprocessor(**params)


class VectorPreprocessor:
    """Inputs that are already feature vectors (arrays, lists or ``.npy`` files) -> (B, D)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    @property
    def spec(self) -> ComponentSpec:
        """The spec that rebuilds this preprocessor."""
        return ComponentSpec(name="vector", params={"dim": self.dim})

    def one(self, source: Any) -> Tensor:
        """One input -> (D,) float tensor, checked for size and finiteness."""
        if isinstance(source, str | Path):
            try:
                source = np.load(source, allow_pickle=False)
            except (OSError, ValueError) as error:
                raise DataError(f"{source}: not a readable .npy vector ({error})") from error
        x = torch.as_tensor(np.asarray(source, dtype=np.float32)).flatten()
        if x.numel() != self.dim:
            raise DataError(f"expected a vector of {self.dim} values, got {x.numel()}")
        if not torch.isfinite(x).all():
            raise DataError("vector contains NaN or infinite values")
        return x

    def __call__(self, sources: Sequence[Any]) -> Tensor:
        if len(sources) == 0:
            raise DataError("no inputs to preprocess")
        return torch.stack([self.one(s) for s in sources])


@PREPROCESSORS.register("vector")
def _vector(**params: Any) -> VectorPreprocessor:
    return VectorPreprocessor(**params)


# preprocessors registered by their own module on import, imported when one is built by name
# (audio needs librosa, an optional dependency; signature is imported only where it is used)
PREPROCESSOR_MODULES = {
    "audio": "siamkit.data.audio",
    "signature": "siamkit.data.signature_preprocess",
}


def build_preprocessor(spec: ComponentSpec | dict[str, Any]) -> Any:
    """Build a registered preprocessor from its spec (importing its registering module first,
    see :data:`PREPROCESSOR_MODULES`)."""
    name = spec["name"] if isinstance(spec, dict) else spec.name
    module = PREPROCESSOR_MODULES.get(name)
    if module is not None:
        importlib.import_module(module)
    return PREPROCESSORS.build(spec)
