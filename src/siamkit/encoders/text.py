"""Word-level text encoding: a tokenizer, a :class:`Vocabulary` and the Embedding+LSTM/GRU encoder.

The encoder takes a list of strings and owns its tokenisation, so a model folder holds everything
needed to embed raw text: ``config.json``, the weights and ``vocab.json`` (see :meth:`save_assets`).
"""

from __future__ import annotations

import json
import re
import warnings
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from siamkit.encoders.base import Encoder
from siamkit.encoders.registry import ENCODERS
from siamkit.errors import CheckpointError, ConfigError, DataError

PAD, UNK = "<pad>", "<unk>"
VOCAB_FILE = "vocab.json"
TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and punctuation marks:
    ``"Isn't it?"`` -> ``["isn", "'", "t", "it", "?"]``."""
    if not isinstance(text, str):
        raise DataError(f"tokenize expects a string, got {type(text).__name__}")
    return TOKEN_PATTERN.findall(text.lower())


class Vocabulary:
    """A word -> index map built from training text; index 0 is ``<pad>`` and 1 is ``<unk>``."""

    def __init__(self, words: Sequence[str]) -> None:
        if list(words[:2]) != [PAD, UNK]:
            raise DataError(f"a vocabulary must start with {PAD!r}, {UNK!r}; got {list(words[:2])}")
        self.words = list(words)
        self.index = {word: i for i, word in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise DataError("a vocabulary must not list a word twice")

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        min_freq: int = 1,
        max_size: int | None = None,
        extra_words: Iterable[str] = (),
    ) -> Vocabulary:
        """Words seen at least ``min_freq`` times in ``texts``, most frequent first, at most
        ``max_size`` entries in all (``<pad>`` and ``<unk>`` included), then the
        ``extra_words`` not already in (e.g. the words a pre-trained model has vectors for)."""
        counts = Counter(token for text in texts for token in tokenize(text))
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        kept = [word for word, count in ranked if count >= min_freq]
        if max_size is not None:
            kept = kept[: max(max_size - 2, 0)]
        seen = {PAD, UNK, *kept}
        extra = [w for w in dict.fromkeys(extra_words) if w not in seen]
        return cls([PAD, UNK, *kept, *extra])

    def __len__(self) -> int:
        return len(self.words)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; unknown words map to ``<unk>``."""
        return [self.index.get(token, self.unk_id) for token in tokenize(text)]

    def save(self, path: Path) -> None:
        """Write the word list as JSON."""
        Path(path).write_text(json.dumps({"words": self.words}, ensure_ascii=False), "utf-8")

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: vocabulary file not found")
        try:
            words = json.loads(path.read_text("utf-8"))["words"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise CheckpointError(f"{path}: expected JSON {{'words': [...]}}: {error}") from error
        return cls(words)


def pad_batch(
    sequences: Sequence[list[int]], max_length: int, pad_id: int = 0
) -> tuple[Tensor, Tensor]:
    """Pad id sequences into ``(B, T)`` and return their lengths (>= 1: an empty text becomes one
    ``<pad>``). Sequences longer than ``max_length`` are truncated with a warning."""
    too_long = sum(len(seq) > max_length for seq in sequences)
    if too_long:
        warnings.warn(
            f"{too_long} text(s) longer than max_length={max_length} tokens were truncated",
            stacklevel=3,
        )
    lengths = torch.tensor([min(max(len(seq), 1), max_length) for seq in sequences])
    ids = torch.full((len(sequences), int(lengths.max())), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        seq = seq[:max_length]
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return ids, lengths


def char_ngrams(word: str, sizes: tuple[int, int] = (3, 5)) -> list[str]:
    """fastText's sub-words of ``word``: its character n-grams of ``sizes[0]..sizes[1]``
    characters taken from ``"<word>"``, plus the whole ``"<word>"``."""
    marked = f"<{word}>"
    grams = [
        marked[i : i + n] for n in range(sizes[0], sizes[1] + 1) for i in range(len(marked) - n + 1)
    ]
    return [*grams, marked]


class SubwordEmbedding(nn.Module):
    """The mean of a word's hashed character n-gram vectors (Bojanowski et al. 2017).

    N-grams are hashed with CRC-32 into ``buckets`` rows, so the table needs no vocabulary and a
    word unseen in training still gets a vector from the pieces it shares with known words.
    """

    def __init__(self, buckets: int, dim: int, sizes: tuple[int, int] = (3, 5)) -> None:
        super().__init__()
        if buckets < 1 or not 1 <= sizes[0] <= sizes[1]:
            raise ConfigError(f"subwords: expected buckets >= 1 and 1 <= n1 <= n2, got "
                              f"{buckets}, {sizes}")  # fmt: skip
        self.buckets, self.sizes = buckets, tuple(sizes)
        self.table = nn.EmbeddingBag(buckets, dim, mode="mean")
        self._cache: dict[str, list[int]] = {}

    def bucket_ids(self, word: str) -> list[int]:
        """The table rows of ``word``'s n-grams (cached)."""
        if word not in self._cache:
            grams = char_ngrams(word, self.sizes)  # type: ignore[arg-type]
            self._cache[word] = [zlib.crc32(g.encode()) % self.buckets for g in grams]
        return self._cache[word]

    def forward(self, words: Sequence[Sequence[str]], length: int) -> Tensor:
        """``(B, length, dim)`` vectors of the batch's words; padding positions are zero."""
        ids: list[int] = []
        offsets: list[int] = []
        for sentence in words:
            padded = list(sentence[:length]) + [""] * (length - min(len(sentence), length))
            for word in padded:
                offsets.append(len(ids))
                ids.extend(self.bucket_ids(word) if word else ())
        device = self.table.weight.device
        vectors = self.table(
            torch.tensor(ids, dtype=torch.long, device=device),
            torch.tensor(offsets, dtype=torch.long, device=device),
        )
        return vectors.view(len(words), length, -1)


def masked_max(states: Tensor, mask: Tensor) -> Tensor:
    """(B, T, D) states, (B, T) mask of real steps -> (B, D) maximum over the real steps."""
    return states.masked_fill(~mask[..., None], float("-inf")).max(1).values


def masked_mean(states: Tensor, mask: Tensor, lengths: Tensor) -> Tensor:
    """(B, T, D) states, (B, T) mask and (B,) lengths of real steps -> (B, D) their mean."""
    return (states * mask[..., None]).sum(1) / lengths[:, None].to(states)


class RecurrentTextEncoder(Encoder):
    """Embedding -> LSTM/GRU over packed sequences -> mean, max, max_mean or last-state pooling
    -> (B, D).

    ``forward`` takes a list of strings. ``D`` is ``hidden_size`` (doubled when bidirectional;
    doubled again for ``max_mean`` pooling, the max- and mean-pooled states side by side).
    ``freeze_embeddings`` keeps the embedding table fixed (for pre-trained vectors).
    ``subword_buckets`` > 0 adds hashed character n-gram vectors (:class:`SubwordEmbedding`) to
    each word's vector, which helps with rare and unseen words. ``word_dropout`` replaces each
    word by ``<unk>`` with that probability during training, so the ``<unk>`` vector that unseen
    words get at test time is trained too.
    """

    input_ndim = 1

    def __init__(
        self,
        vocabulary: Vocabulary,
        embedding_size: int = 300,
        hidden_size: int = 300,
        num_layers: int = 1,
        cell: Literal["lstm", "gru"] = "lstm",
        bidirectional: bool = False,
        pooling: Literal["mean", "max", "max_mean", "last"] = "mean",
        dropout: float = 0.0,
        word_dropout: float = 0.0,
        max_length: int = 128,
        freeze_embeddings: bool = False,
        subword_buckets: int = 0,
        subword_sizes: tuple[int, int] = (3, 5),
        normalize: bool = False,
    ) -> None:
        super().__init__(normalize=normalize)
        if cell not in ("lstm", "gru") or pooling not in ("mean", "max", "max_mean", "last"):
            raise ConfigError(
                "text encoder: expected cell lstm|gru and pooling mean|max|max_mean|last, got "
                f"{cell!r}, {pooling!r}"
            )
        if not 0.0 <= word_dropout < 1.0:
            raise ConfigError(f"text encoder: word_dropout must be in [0, 1), got {word_dropout}")
        self.vocabulary = vocabulary
        self.pooling = pooling
        self.word_dropout = word_dropout
        self.max_length = max_length
        self.embedding = nn.Embedding(
            len(vocabulary), embedding_size, padding_idx=vocabulary.pad_id
        )
        self.embedding.weight.requires_grad_(not freeze_embeddings)
        self.subwords = (
            SubwordEmbedding(subword_buckets, embedding_size, tuple(subword_sizes))  # type: ignore[arg-type]
            if subword_buckets
            else None
        )
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(
            embedding_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.embedding_dim = (
            hidden_size * (2 if bidirectional else 1) * (2 if pooling == "max_mean" else 1)
        )

    def check_input(self, x: Sequence[str]) -> None:  # noqa: D102
        if isinstance(x, str) or not all(isinstance(text, str) for text in x):
            raise DataError(f"{type(self).__name__} expects a list of strings")
        if len(x) == 0:
            raise DataError(f"{type(self).__name__} got an empty batch")

    def token_ids(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Padded ids ``(B, T)`` and lengths ``(B,)`` of ``texts``."""
        return pad_batch([self.vocabulary.encode(t) for t in texts], self.max_length)

    def features(self, texts: Sequence[str]) -> Tensor:  # noqa: D102
        ids, lengths = self.token_ids(texts)
        ids = ids.to(self.embedding.weight.device)
        if self.training and self.word_dropout > 0:
            dropped = (torch.rand(ids.shape, device=ids.device) < self.word_dropout) & (
                ids != self.vocabulary.pad_id
            )
            ids = ids.masked_fill(dropped, self.vocabulary.unk_id)
        vectors = self.embedding(ids)
        if self.subwords is not None:
            vectors = vectors + self.subwords([tokenize(t) for t in texts], ids.shape[1])
        packed = pack_padded_sequence(
            self.dropout(vectors), lengths, batch_first=True, enforce_sorted=False
        )
        output, state = self.rnn(packed)
        if self.pooling == "last":
            hidden = state[0] if isinstance(state, tuple) else state
            directions = 2 if self.rnn.bidirectional else 1
            return torch.cat(list(hidden[-directions:]), dim=1)
        padded, _ = pad_packed_sequence(output, batch_first=True)
        mask = (torch.arange(padded.shape[1]) < lengths[:, None]).to(padded.device)
        if self.pooling == "max":
            return masked_max(padded, mask)
        if self.pooling == "mean":
            return masked_mean(padded, mask, lengths)
        return torch.cat([masked_max(padded, mask), masked_mean(padded, mask, lengths)], dim=1)

    def init_embeddings(self, vectors: dict[str, Tensor]) -> int:
        """Copy pre-trained word vectors into the embedding table; return how many words matched."""
        size = self.embedding.embedding_dim
        bad = [w for w, v in vectors.items() if v.shape != (size,)][:1]
        if bad:
            raise ConfigError(
                f"pre-trained vector of {bad[0]!r} has shape {tuple(vectors[bad[0]].shape)}; "
                f"the embedding table expects ({size},): set embedding_size to "
                f"{vectors[bad[0]].shape[-1]}"
            )
        found = 0
        with torch.no_grad():
            for word, i in self.vocabulary.index.items():
                if word in vectors:
                    self.embedding.weight[i] = vectors[word]
                    found += 1
        return found

    def save_assets(self, folder: Path) -> None:
        """Write ``vocab.json`` into the model folder."""
        self.vocabulary.save(Path(folder) / VOCAB_FILE)


@ENCODERS.register("text_rnn")
def text_rnn(
    vocabulary: Vocabulary | None = None,
    assets_dir: Path | None = None,
    **params: object,
) -> RecurrentTextEncoder:
    """Build the recurrent text encoder from a :class:`Vocabulary` or a model folder's
    vocab.json."""
    if vocabulary is None:
        if assets_dir is None:
            raise ConfigError(
                "text_rnn: give a vocabulary (built from training text) or assets_dir"
            )
        vocabulary = Vocabulary.load(Path(assets_dir) / VOCAB_FILE)
    return RecurrentTextEncoder(vocabulary, **params)  # type: ignore[arg-type]


def pretrained_model(model: object = None):
    """``model`` if it is a loaded ``SentenceTransformer``, else the one it names (offline)."""
    from siamkit.encoders.transformer import load_sentence_transformer

    return model if hasattr(model, "tokenizer") else load_sentence_transformer(model)  # type: ignore[arg-type]


def pretrained_words(model: object = None) -> list[str]:
    """The whole words of a sentence-transformer's word-piece vocabulary that :func:`tokenize`
    keeps as one token (no ``##`` continuations, no ``[CLS]``-style markers), in its order."""
    vocab = pretrained_model(model).tokenizer.get_vocab()
    ranked = sorted(vocab, key=vocab.__getitem__)
    return [w for w in ranked if not w.startswith("##") and tokenize(w) == [w]]


def wordpiece_vectors(words: Iterable[str], model: object = None) -> dict[str, Tensor]:
    """Offline pre-trained vectors for ``words``: the mean of a sentence-transformer's input token
    embeddings over each word's word pieces (``model``: a loaded ``SentenceTransformer``, or a
    name or folder; default the bundled all-MiniLM-L6-v2). The table is scaled to unit standard
    deviation: BERT's is ~0.05, far below the N(0, 1) of the rest of an ``nn.Embedding``."""
    st = pretrained_model(model)
    tokenizer = st.tokenizer
    table = st[0].auto_model.get_input_embeddings().weight.detach()
    table = table / table.std()  # unit scale, like nn.Embedding's N(0, 1) initialisation
    vectors = {}
    for word in words:
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        if pieces and word not in (PAD, UNK):
            vectors[word] = table[pieces].mean(0)
    return vectors
