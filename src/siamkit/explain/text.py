"""Token attributions of a text pair's similarity score (Captum LayerIntegratedGradients on the
encoder's word-embedding layer), for the recurrent ``text_rnn`` encoder and sentence-transformer
encoders (MiniLM).

As for images, one side is explained with the other side's embedding fixed. The path integrated
over runs from a baseline sentence whose words are all padding (a zero vector for ``text_rnn``;
``[PAD]`` between ``[CLS]`` and ``[SEP]`` for a transformer) to the sentence itself, and each
token's attribution is its embedding attribution summed over the embedding dimensions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from siamkit.errors import ConfigError, DataError
from siamkit.siamese import SiameseNetwork


@dataclass(frozen=True)
class TokenAttribution:
    """One text's tokens and the attribution of each to the pair's score."""

    text: str
    tokens: list[str]
    values: list[float]


class _TextAdapter:
    """How to feed token ids to an encoder that takes strings, for one text."""

    layer: nn.Module

    def __init__(self, encoder: nn.Module, text: str) -> None:
        self.encoder, self.text = encoder, text

    def ids(self) -> Tensor:  # (1, T)
        raise NotImplementedError

    def baseline(self, ids: Tensor) -> Tensor:
        raise NotImplementedError

    def tokens(self, ids: Tensor) -> list[str]:
        raise NotImplementedError

    @contextmanager
    def feeding(self, ids: Tensor) -> Iterator[list[str]]:
        """Make the encoder read ``ids`` (B, T) instead of tokenising; yields the B texts."""
        raise NotImplementedError


class _RecurrentAdapter(_TextAdapter):
    def __init__(self, encoder: nn.Module, text: str) -> None:
        super().__init__(encoder, text)
        self.layer = encoder.embedding

    def ids(self) -> Tensor:
        return self.encoder.token_ids([self.text])[0]

    def baseline(self, ids: Tensor) -> Tensor:
        return torch.full_like(ids, self.encoder.vocabulary.pad_id)

    def tokens(self, ids: Tensor) -> list[str]:
        from siamkit.encoders.text import tokenize

        words = tokenize(self.text)[: ids.shape[1]]
        return words or [self.encoder.vocabulary.words[int(ids[0, 0])]]

    @contextmanager
    def feeding(self, ids: Tensor) -> Iterator[list[str]]:
        lengths = self.encoder.token_ids([self.text])[1].expand(ids.shape[0])
        self.encoder.token_ids = lambda texts: (ids, lengths)
        try:
            yield [self.text] * ids.shape[0]
        finally:
            del self.encoder.token_ids


class _TransformerAdapter(_TextAdapter):
    def __init__(self, encoder: nn.Module, text: str) -> None:
        super().__init__(encoder, text)
        self.model = encoder.model
        self.layer = self.model[0].auto_model.get_input_embeddings()
        self.tokenizer = self.model.tokenizer
        self._tokenize = getattr(self.model, "preprocess", None) or self.model.tokenize
        self.features = self._tokenize([text])

    def ids(self) -> Tensor:
        return self.features["input_ids"]

    def baseline(self, ids: Tensor) -> Tensor:
        special = set(self.tokenizer.all_special_ids) - {self.tokenizer.pad_token_id}
        keep = torch.tensor([[int(i) in special for i in ids[0]]])
        return torch.where(keep, ids, torch.full_like(ids, self.tokenizer.pad_token_id))

    def tokens(self, ids: Tensor) -> list[str]:
        return list(self.tokenizer.convert_ids_to_tokens(ids[0].tolist()))

    @contextmanager
    def feeding(self, ids: Tensor) -> Iterator[list[str]]:
        batch = {
            k: v.expand(ids.shape[0], -1) if isinstance(v, Tensor) else v
            for k, v in self.features.items()
            if k != "input_ids"
        }
        name = "preprocess" if getattr(self.model, "preprocess", None) else "tokenize"
        setattr(self.model, name, lambda texts: {**batch, "input_ids": ids})
        try:
            yield [self.text] * ids.shape[0]
        finally:
            delattr(self.model, name)


def _adapter(encoder: nn.Module, text: str) -> _TextAdapter:
    from siamkit.encoders.text import RecurrentTextEncoder
    from siamkit.encoders.transformer import SentenceTransformerEncoder

    if isinstance(encoder, RecurrentTextEncoder):
        return _RecurrentAdapter(encoder, text)
    if isinstance(encoder, SentenceTransformerEncoder):
        return _TransformerAdapter(encoder, text)
    raise ConfigError(
        f"token attributions support the text_rnn and sentence_transformer encoders, not "
        f"{type(encoder).__name__}"
    )


def attribute_text(
    network: SiameseNetwork, text: str, other: Tensor, steps: int = 32, batch_size: int = 16
) -> TokenAttribution:
    """Token attributions of the score of ``text`` against the fixed embedding ``other`` (1, D)."""
    from captum.attr import LayerIntegratedGradients

    if not isinstance(text, str) or not text.strip():
        raise DataError(f"expected a non-empty text to explain, got {text!r}")
    adapter = _adapter(network.encoder, text)
    ids = adapter.ids()

    def score(batch_ids: Tensor) -> Tensor:
        with adapter.feeding(batch_ids) as texts:
            embedding = network.embed(texts)
        return network.head(embedding, other.expand(embedding.shape[0], -1))

    with torch.enable_grad():
        values = LayerIntegratedGradients(score, adapter.layer).attribute(
            ids, baselines=adapter.baseline(ids), n_steps=steps, internal_batch_size=batch_size
        )
    per_token = values.detach()[0].sum(dim=-1).tolist()
    tokens = adapter.tokens(ids)
    return TokenAttribution(text, tokens, per_token[: len(tokens)])
