"""Preprocessing without torch: numpy + Pillow twins of the saved preprocessors.

Each class here produces, for a file, PIL image or array, exactly the array its torch sibling
produces (``siamkit.data.transforms.ImagePreprocessor``, ``VectorPreprocessor`` and
``siamkit.data.signature_preprocess.SignaturePreprocess``; equality on real files is tested in
``tests/unit/test_export_runtime.py``), so an exported model sees the inputs it was trained on.
Audio is :class:`siamkit.audio_features.LogMelFeatures`, the very class the training side's
``AudioPreprocessor`` extends (it needs ``soundfile`` and ``librosa``: ``pip install
'siamkit-runtime[audio]'``). Text is tokenised here too: words + ``vocab.json`` for
``text_rnn`` and the ``tokenizers`` package for a sentence-transformer. Nothing in this module
imports torch.
"""

from __future__ import annotations

import json
import re
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from siamkit.audio_features import LogMelFeatures
from siamkit.errors import CheckpointError, ConfigError, DataError
from siamkit.imaging import checked_framing, open_image

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")  # the same pattern as siamkit.encoders.text
SIGNATURE_MIN_SIDE, SIGNATURE_MAX_SIDE = 8, 2048


def _channels_first(pixels: np.ndarray) -> np.ndarray:
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


class ImagePreprocess:
    """The "image" preprocessor: read as ``mode``, crop / pad to a square, bilinear resize to
    ``size`` (H, W), scale to [0, 1], optionally invert -> (C, H, W) float32."""

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

    def frame(self, pixels: np.ndarray) -> np.ndarray:
        """Crop fractions of the (top, bottom, left, right) edges, then centre on a black square."""
        height, width = pixels.shape[:2]
        top, bottom, left, right = self.crop
        pixels = pixels[round(top * height) : height - round(bottom * height),
                        round(left * width) : width - round(right * width)]  # fmt: skip
        if self.pad_square:
            height, width = pixels.shape[:2]
            side = max(height, width)
            across, down = side - width, side - height
            pad = [(down // 2, down - down // 2), (across // 2, across - across // 2)]
            pixels = np.pad(pixels, pad + [(0, 0)] * (pixels.ndim - 2))
        return pixels

    def one(self, source: Any) -> np.ndarray:
        """One input -> (C, H, W) float32 in [0, 1]."""
        image = open_image(source, self.mode)
        if any(self.crop) or self.pad_square:
            image = Image.fromarray(self.frame(np.array(image)))
        image = image.resize(self.size[::-1], Image.Resampling.BILINEAR)
        x = _channels_first(np.asarray(image, dtype=np.float32) / 255)
        return 1 - x if self.invert else x


class VectorPreprocess:
    """The "vector" preprocessor: arrays, lists or ``.npy`` files of ``dim`` finite values."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def one(self, source: Any) -> np.ndarray:
        """One input -> (D,) float32."""
        if isinstance(source, str | Path):
            try:
                source = np.load(source, allow_pickle=False)
            except (OSError, ValueError) as error:
                raise DataError(f"{source}: not a readable .npy vector ({error})") from error
        x = np.asarray(source, dtype=np.float32).reshape(-1)
        if x.size != self.dim:
            raise DataError(f"expected a vector of {self.dim} values, got {x.size}")
        if not np.isfinite(x).all():
            raise DataError("vector contains NaN or infinite values")
        return x


class SignaturePreprocess:
    """SigNet preprocessing: Otsu background removal, crop to the ink, centre on ``canvas``,
    bilinear resize to ``size``, invert, normalise -> (1, H, W) float32."""

    def __init__(self, size: Sequence[int] = (155, 220), canvas: Sequence[int] = (310, 440),
                 invert: bool = True, mean: float = 0.0, std: float = 1.0) -> None:  # fmt: skip
        self.size = (int(size[0]), int(size[1]))
        self.canvas = (int(canvas[0]), int(canvas[1]))
        self.invert, self.mean, self.std = invert, float(mean), float(std)

    def one(self, source: Any) -> np.ndarray:
        """One signature image -> (1, H, W) float32."""
        name = str(source) if isinstance(source, str | Path) else "image"
        grey = open_image(source, "L")
        if max(grey.size) > SIGNATURE_MAX_SIDE:
            grey.thumbnail((SIGNATURE_MAX_SIDE, SIGNATURE_MAX_SIDE))
        pixels = np.asarray(grey, dtype=np.uint8)
        if min(pixels.shape) < SIGNATURE_MIN_SIDE or pixels.min() == pixels.max():
            raise DataError(f"{name}: expected dark strokes on a lighter page of at least "
                            f"{SIGNATURE_MIN_SIDE}x{SIGNATURE_MIN_SIDE} px, got "
                            f"{pixels.shape[1]}x{pixels.shape[0]} px")  # fmt: skip
        cleaned = pixels.copy()
        cleaned[pixels > otsu_threshold(pixels)] = 255
        rows = np.flatnonzero((cleaned < 255).any(axis=1))
        cols = np.flatnonzero((cleaned < 255).any(axis=0))
        ink = Image.fromarray(cleaned[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
        height, width = self.canvas
        if ink.height > height or ink.width > width:
            ink.thumbnail((width, height), Image.Resampling.LANCZOS)
        page = Image.new("L", (width, height), 255)
        page.paste(ink, ((width - ink.width) // 2, (height - ink.height) // 2))
        resized = page.resize(self.size[::-1], Image.Resampling.BILINEAR)
        x = np.asarray(resized, dtype=np.float32) / 255.0
        x = 1.0 - x if self.invert else x
        return ((x - self.mean) / self.std)[None]


def otsu_threshold(grey: np.ndarray) -> int:
    """Otsu's threshold of a uint8 image (the level maximising the between-class variance)."""
    hist = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    weight_low = np.cumsum(hist)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(hist * np.arange(256))
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    return int(np.argmax(weight_low * weight_high * (mean_low - mean_high) ** 2))


PREPROCESSORS = {"image": ImagePreprocess, "vector": VectorPreprocess,
                 "signature": SignaturePreprocess, "audio": LogMelFeatures}  # fmt: skip


def build_preprocess(spec: dict[str, Any] | None) -> Any:
    """The numpy preprocessor of a config's ``preprocess`` spec (``None`` for none)."""
    if spec is None:
        return None
    cls = PREPROCESSORS.get(spec["name"])
    if cls is None:
        raise ConfigError(f"preprocessor {spec['name']!r} has no numpy implementation; "
                          f"expected one of {', '.join(PREPROCESSORS)}")  # fmt: skip
    return cls(**spec.get("params", {}))


def char_ngrams(word: str, sizes: tuple[int, int]) -> list[str]:
    """fastText's sub-words of ``word`` (as :func:`siamkit.encoders.text.char_ngrams`)."""
    marked = f"<{word}>"
    grams = [marked[i : i + n] for n in range(sizes[0], sizes[1] + 1)
             for i in range(len(marked) - n + 1)]  # fmt: skip
    return [*grams, marked]


def subword_buckets(
    words: Sequence[Sequence[str]], length: int, buckets: int, sizes: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(B, length, G) CRC-32 bucket ids of each word's n-grams and their (B, length, G) float mask
    (G: the most n-grams of one word; padding words have none)."""
    rows = [[[zlib.crc32(g.encode()) % buckets for g in char_ngrams(w, sizes)]
             for w in sentence[:length]] for sentence in words]  # fmt: skip
    most = max([len(w) for row in rows for w in row] + [1])
    ids = np.zeros((len(rows), length, most), dtype=np.int64)
    mask = np.zeros((len(rows), length, most), dtype=np.float32)
    for b, row in enumerate(rows):
        for t, pieces in enumerate(row):
            ids[b, t, : len(pieces)] = pieces
            mask[b, t, : len(pieces)] = 1.0
    return ids, mask


class WordTokenizer:
    """``text_rnn`` tokenisation: lower-cased words and punctuation -> ``vocab.json`` ids,
    padded to the longest text (at most ``max_length``; an empty text is one ``<pad>``)."""

    def __init__(
        self,
        vocab_path: Path,
        max_length: int,
        subword_buckets: int = 0,
        subword_sizes: Sequence[int] = (3, 5),
    ) -> None:
        try:
            words = json.loads(Path(vocab_path).read_text("utf-8"))["words"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{vocab_path}: expected JSON {{'words': [...]}}") from error
        self.index = {word: i for i, word in enumerate(words)}
        self.max_length = max_length
        self.buckets, self.sizes = subword_buckets, (int(subword_sizes[0]), int(subword_sizes[1]))

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        words = [TOKEN_PATTERN.findall(text.lower()) for text in texts]
        ids = [[self.index.get(t, 1) for t in tokens] for tokens in words]
        if any(len(seq) > self.max_length for seq in ids):
            warnings.warn(f"texts longer than max_length={self.max_length} tokens were truncated",
                          stacklevel=3)  # fmt: skip
        lengths = np.array([min(max(len(s), 1), self.max_length) for s in ids], dtype=np.int64)
        batch = np.zeros((len(ids), int(lengths.max())), dtype=np.int64)
        for row, seq in enumerate(ids):
            batch[row, : min(len(seq), self.max_length)] = seq[: self.max_length]
        arrays = {"input_ids": batch, "lengths": lengths}
        if self.buckets:
            pieces, mask = subword_buckets(words, batch.shape[1], self.buckets, self.sizes)
            arrays |= {"subword_ids": pieces, "subword_mask": mask}
        return arrays


class PieceTokenizer:
    """Sentence-transformer tokenisation with the ``tokenizers`` package: ``tokenizer.json``,
    truncation to ``max_length`` word pieces, padding to the longest text of the batch."""

    def __init__(self, path: Path, max_length: int, pad_id: int, pad_token: str,
                 inputs: Sequence[str], lowercase: bool = False) -> None:  # fmt: skip
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_truncation()
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
        self.inputs, self.lowercase = list(inputs), lowercase

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        texts = [t.strip().lower() if self.lowercase else t.strip() for t in texts]
        encodings = self.tokenizer.encode_batch(texts)
        arrays = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        return {name: arrays[name] for name in self.inputs}
