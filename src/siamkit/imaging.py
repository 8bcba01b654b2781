"""Decoding images without torch: files or uploaded bytes -> PIL images, with a pixel limit.

One decoding path for the CLI, the server and the torch-free runtime, so that a corrupt,
truncated or oversize image (a decompression bomb) is refused with the same one-line
:class:`~siamkit.errors.DataError` everywhere.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from siamkit.errors import ConfigError, DataError

MAX_IMAGE_PIXELS = 50_000_000


def open_image(
    source: str | Path | bytes | Image.Image | np.ndarray,
    mode: str,
    max_pixels: int = MAX_IMAGE_PIXELS,
    name: str | None = None,
) -> Image.Image:
    """Open a file or encoded bytes (or take an image/array) as a PIL image in ``mode`` ("L" or
    "RGB").

    Transparent pixels of RGBA images are composited onto white. Raises :class:`DataError` naming
    the file (or ``name``) when it cannot be read as an image, or when it has more than
    ``max_pixels`` pixels: a decompression bomb is refused from its header, before decoding.
    """
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        image = Image.fromarray(source)
    elif isinstance(source, str | Path | bytes | bytearray | memoryview):
        image = _decode(source, max_pixels, name)
    else:
        raise DataError(
            f"{name or 'image'}: expected a path, bytes, PIL image or array, "
            f"got {type(source).__name__}"
        )
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert(mode)


def _decode(source: str | Path | bytes, max_pixels: int, name: str | None) -> Image.Image:
    """Decode an image file or bytes, refusing more than ``max_pixels`` pixels."""
    encoded = isinstance(source, bytes | bytearray | memoryview)
    where = name or ("uploaded image" if encoded else str(source))
    too_large = f"{where}: image of {{}} pixels is larger than the limit of {max_pixels} pixels"
    try:
        image = Image.open(io.BytesIO(source) if encoded else Path(source))
        if image.width * image.height > max_pixels:
            raise DataError(too_large.format(f"{image.width}x{image.height}"))
        image.load()
    except FileNotFoundError as error:
        raise DataError(f"{where}: no such file") from error
    except Image.DecompressionBombError as error:  # Pillow's own limit, checked in Image.open
        size = re.search(r"\((\d+) pixels\)", str(error))
        raise DataError(too_large.format(size.group(1) if size else "too many")) from error
    except UnidentifiedImageError as error:
        raise DataError(f"{where}: not a readable image (not a format Pillow knows)") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{where}: not a readable image ({error})") from error
    return image


def checked_framing(
    size: Sequence[int], mode: str, crop: Sequence[float]
) -> tuple[tuple[int, int], tuple[float, float, float, float]]:
    """``(size, crop)`` of an image preprocessor as (H, W) ints and 4 floats, or a
    :class:`~siamkit.errors.ConfigError` naming a mode other than "L"/"RGB" or a crop that is not
    4 fractions (top, bottom, left, right) in [0, 0.5)."""
    if mode not in ("L", "RGB"):
        raise ConfigError(f"image mode must be 'L' or 'RGB', got {mode!r}")
    if len(crop) != 4 or not all(0 <= c < 0.5 for c in crop):
        raise ConfigError(
            f"image crop: expected 4 fractions (top, bottom, left, right) in [0, 0.5), "
            f"got {list(crop)}"
        )
    top, bottom, left, right = (float(c) for c in crop)
    return (int(size[0]), int(size[1])), (top, bottom, left, right)
