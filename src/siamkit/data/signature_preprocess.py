"""SigNet preprocessing of offline signatures (Dey et al. 2017; Hafemann et al. 2017).

greyscale -> Otsu threshold (background set to white, ink keeps its grey levels) -> crop to the
ink -> centre on a fixed canvas -> resize to ``size`` -> invert (ink bright, background 0) ->
scale to [0, 1] and normalise. Registered as the "signature" preprocessor, so a saved model
carries it and ``siamkit verify`` applies the same steps to new images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from siamkit.data.transforms import PREPROCESSORS, open_image
from siamkit.errors import DataError
from siamkit.registry import ComponentSpec

SignatureInput = str | Path | Image.Image | np.ndarray
MIN_SIDE = 8  # smaller images hold no usable signature
MAX_SIDE = 2048  # larger scans are shrunk first, so the steps below stay fast


def otsu_threshold(grey: np.ndarray) -> int:
    """Otsu's threshold of a uint8 image: the level maximising the between-class variance."""
    hist = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256)
    weight_low = np.cumsum(hist)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(hist * levels)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return int(np.argmax(between))


def load_grey(image: SignatureInput, name: str = "image") -> np.ndarray:
    """Read a path, PIL image or uint8 array as a uint8 greyscale array (H, W).

    Colour is converted to luminance, transparency composited onto a white page (core
    :func:`~siamkit.data.transforms.open_image`), and huge scans are shrunk to ``MAX_SIDE``.
    """
    if isinstance(image, np.ndarray) and image.dtype != np.uint8:
        raise DataError(f"{name}: expected a uint8 array (0-255), got dtype {image.dtype}")
    if not isinstance(image, str | Path | Image.Image | np.ndarray):
        raise DataError(
            f"{name}: expected a file path, PIL image or uint8 array, got {type(image).__name__}"
        )
    try:
        grey = open_image(image, "L")
    except DataError:
        raise
    except (TypeError, ValueError) as error:  # arrays PIL cannot take, e.g. shape (H, W, 5)
        raise DataError(f"{name}: not an image ({error})") from error
    if max(grey.size) > MAX_SIDE:
        grey.thumbnail((MAX_SIDE, MAX_SIDE))
    return np.asarray(grey, dtype=np.uint8)


def remove_background(grey: np.ndarray, name: str = "image") -> np.ndarray:
    """Set every pixel brighter than Otsu's threshold to white (255); ink keeps its grey level."""
    if min(grey.shape) < MIN_SIDE:
        raise DataError(
            f"{name}: image is too small for a signature: got {grey.shape[1]}x{grey.shape[0]} px, "
            f"expected at least {MIN_SIDE}x{MIN_SIDE}"
        )
    if grey.min() == grey.max():
        raise DataError(
            f"{name}: image has no ink: every pixel has value {int(grey.min())}; "
            "expected dark strokes on a lighter page"
        )
    cleaned = grey.copy()
    cleaned[grey > otsu_threshold(grey)] = 255
    return cleaned


def crop_to_ink(cleaned: np.ndarray) -> np.ndarray:
    """The bounding box of the non-white pixels."""
    rows = np.flatnonzero((cleaned < 255).any(axis=1))
    cols = np.flatnonzero((cleaned < 255).any(axis=0))
    return cleaned[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def centre_on_canvas(ink: np.ndarray, canvas: tuple[int, int]) -> np.ndarray:
    """Paste ``ink`` at the centre of a white canvas (H, W), shrinking it first if it is larger."""
    height, width = canvas
    image = Image.fromarray(ink)
    if image.height > height or image.width > width:
        image.thumbnail((width, height), Image.Resampling.LANCZOS)
    page = Image.new("L", (width, height), 255)
    page.paste(image, ((width - image.width) // 2, (height - image.height) // 2))
    return np.asarray(page)


class SignaturePreprocess:
    """SigNet preprocessing: raw signature images -> a (N, 1, H, W) float batch.

    Args:
        size: output (H, W); SigNet uses (155, 220).
        canvas: the fixed (H, W) page the cropped ink is centred on before resizing; its aspect
            ratio should match ``size`` so that signatures are not distorted.
        invert: make ink bright on a zero background (as SigNet).
        mean: normalisation: subtracted after pixels are scaled to [0, 1].
        std: normalisation: the centred pixels are divided by it.
    """

    name = "signature"

    def __init__(
        self,
        size: Sequence[int] = (155, 220),
        canvas: Sequence[int] = (310, 440),
        invert: bool = True,
        mean: float = 0.0,
        std: float = 1.0,
    ) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.canvas = (int(canvas[0]), int(canvas[1]))
        if min(self.size) < 1 or min(self.canvas) < 1 or std <= 0:
            raise DataError(
                f"signature preprocess: expected positive size, canvas and std, "
                f"got size={self.size}, canvas={self.canvas}, std={std}"
            )
        self.invert = invert
        self.mean = float(mean)
        self.std = float(std)

    @property
    def spec(self) -> ComponentSpec:
        """How to rebuild this preprocessor (saved in the model's config.json)."""
        params: dict[str, Any] = {
            "size": list(self.size),
            "canvas": list(self.canvas),
            "invert": self.invert,
            "mean": self.mean,
            "std": self.std,
        }
        return ComponentSpec(name=self.name, params=params)

    def one(self, image: SignatureInput, name: str = "image") -> Tensor:
        """Preprocess one image to a (1, H, W) tensor."""
        grey = load_grey(image, name)
        page = centre_on_canvas(crop_to_ink(remove_background(grey, name)), self.canvas)
        resized = Image.fromarray(page).resize(self.size[::-1], Image.Resampling.BILINEAR)
        pixels = np.asarray(resized, dtype=np.float32) / 255.0
        if self.invert:
            pixels = 1.0 - pixels
        return torch.from_numpy((pixels - self.mean) / self.std).unsqueeze(0)

    def __call__(self, inputs: Sequence[SignatureInput]) -> Tensor:
        """Preprocess a list of images (paths, PIL images or arrays) to a (N, 1, H, W) batch."""
        if len(inputs) == 0:
            raise DataError("signature preprocess: got an empty list of images")
        names = [
            str(x) if isinstance(x, str | Path) else f"image #{i}" for i, x in enumerate(inputs)
        ]
        return torch.stack([self.one(x, n) for x, n in zip(inputs, names, strict=True)])


@PREPROCESSORS.register("signature")
def _signature(**params: Any) -> SignaturePreprocess:
    return SignaturePreprocess(**params)
