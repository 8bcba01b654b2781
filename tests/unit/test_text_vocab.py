"""Word-level text encoding: tokenizer, vocabulary, padding/truncation and the LSTM/GRU encoder."""

from __future__ import annotations

import pytest
import torch

from siamkit.data.text import (
    TextPairBatches,
    TextPairs,
    read_labelled_texts,
    read_pair_file,
    read_text_lines,
)
from siamkit.encoders import build_encoder
from siamkit.encoders.text import PAD, UNK, Vocabulary, char_ngrams, pad_batch, tokenize
from siamkit.errors import CheckpointError, ConfigError, DataError

TEXTS = ["A man is playing a guitar.", "A man plays the guitar!", "A woman is slicing onions."]


def test_tokenize_lowercases_and_splits_punctuation():
    assert tokenize("Isn't it?") == ["isn", "'", "t", "it", "?"]
    assert tokenize("") == []
    with pytest.raises(DataError, match="string"):
        tokenize(3)  # type: ignore[arg-type]


def test_vocabulary_build_frequency_order_and_limits():
    vocab = Vocabulary.build(TEXTS)
    assert vocab.words[:2] == [PAD, UNK]
    assert vocab.words[2] == "a"  # most frequent word first (4 occurrences)
    rare_cut = Vocabulary.build(TEXTS, min_freq=2)
    assert "onions" not in rare_cut.index and "man" in rare_cut.index
    small = Vocabulary.build(TEXTS, max_size=5)
    assert len(small) == 5 and small.words[:2] == [PAD, UNK]
    extended = Vocabulary.build(TEXTS, extra_words=["zebra", "guitar", "zebra", "ox"])
    assert extended.words[-2:] == ["zebra", "ox"]  # appended once, training words not repeated
    assert extended.words[: len(Vocabulary.build(TEXTS))] == Vocabulary.build(TEXTS).words


def test_unknown_words_and_empty_strings():
    vocab = Vocabulary.build(TEXTS)
    ids = vocab.encode("A zebra plays")
    assert ids == [vocab.index["a"], vocab.unk_id, vocab.index["plays"]]
    assert vocab.encode("") == []
    padded, lengths = pad_batch([vocab.encode(""), vocab.encode("a man")], max_length=8)
    assert lengths.tolist() == [1, 2]  # an empty text becomes one <pad>
    assert padded.tolist() == [[0, 0], [vocab.index["a"], vocab.index["man"]]]


def test_long_inputs_are_truncated_with_a_warning():
    with pytest.warns(UserWarning, match="1 text.*max_length=4"):
        ids, lengths = pad_batch([list(range(2, 12)), [2, 3]], max_length=4)
    assert ids.shape == (2, 4) and lengths.tolist() == [4, 2]
    encoder = build_encoder(
        {"name": "text_rnn", "params": {"embedding_size": 8, "hidden_size": 6, "max_length": 5}},
        vocabulary=Vocabulary.build(TEXTS),
    )
    with pytest.warns(UserWarning, match="truncated"):
        out = encoder(["a man " * 20, "a"])
    assert out.shape == (2, 6) and torch.isfinite(out).all()


def test_vocabulary_save_load_and_bad_files(tmp_path):
    vocab = Vocabulary.build(TEXTS)
    vocab.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json").words == vocab.words
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(CheckpointError, match="bad.json"):
        Vocabulary.load(tmp_path / "bad.json")
    with pytest.raises(CheckpointError, match="not found"):
        Vocabulary.load(tmp_path / "none.json")
    with pytest.raises(DataError, match="must start with"):
        Vocabulary(["a", "b"])
    with pytest.raises(DataError, match="twice"):
        Vocabulary([PAD, UNK, "a", "a"])


def test_non_utf8_text_files_are_rejected_clearly(tmp_path):
    path = tmp_path / "refs.txt"
    path.write_bytes("caf\u00e9\n".encode("latin-1"))
    for read in (read_text_lines, read_labelled_texts, read_pair_file):
        with pytest.raises(DataError, match=r"refs.txt: expected UTF-8 text.*offset 3"):
            read(path)


def test_labelled_and_pair_files(tmp_path):
    labelled = tmp_path / "labelled.tsv"
    labelled.write_text("sport\tA man kicks a ball.\n\nfood\tShe cuts onions.\n", "utf-8")
    assert read_labelled_texts(labelled) == (
        ["A man kicks a ball.", "She cuts onions."],
        ["sport", "food"],
    )
    labelled.write_text("no tab here\n", "utf-8")
    with pytest.raises(DataError, match=r"labelled.tsv:1: expected 'label<TAB>text'"):
        read_labelled_texts(labelled)
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("1\ta\tb\n0\tc\td\n", "utf-8")
    assert read_pair_file(pairs).scores.tolist() == [1.0, 0.0]
    pairs.write_text("2\ta\tb\n", "utf-8")
    with pytest.raises(DataError, match="pairs.tsv:1"):
        read_pair_file(pairs)


def test_batches_of_several_pair_sets_never_mix_sets_and_are_reproducible():
    first = TextPairs([f"a{i}" for i in range(10)], [f"b{i}" for i in range(10)], [1.0] * 10)
    second = TextPairs([f"c{i}" for i in range(5)], [f"d{i}" for i in range(5)], [0.0] * 5)
    batches = TextPairBatches([first, second], batch_size=4, seed=3)
    epoch = list(batches)
    assert len(epoch) == len(batches) == 3 + 2
    assert all(len(set(scores.tolist())) == 1 for _, _, scores in epoch)  # one set per batch
    assert sorted(a for texts, _, _ in epoch for a in texts) == sorted(first.a + second.a)
    assert [texts for texts, _, _ in batches] == [texts for texts, _, _ in epoch]
    batches.set_epoch(1)
    assert [texts for texts, _, _ in batches] != [texts for texts, _, _ in epoch]
    with pytest.raises(DataError, match="empty"):
        TextPairBatches([first, TextPairs([], [], [])])


@pytest.mark.parametrize(
    ("cell", "bidirectional", "pooling", "dim"),
    [
        ("lstm", False, "mean", 6),
        ("gru", True, "last", 12),
        ("lstm", True, "mean", 12),
        ("lstm", True, "max", 12),
        ("gru", True, "max_mean", 24),
    ],  # fmt: skip
)
def test_recurrent_encoder_shapes_and_padding_invariance(cell, bidirectional, pooling, dim):
    torch.manual_seed(0)
    params = {"embedding_size": 8, "hidden_size": 6, "cell": cell,
              "bidirectional": bidirectional, "pooling": pooling}  # fmt: skip
    encoder = build_encoder({"name": "text_rnn", "params": params},
                            vocabulary=Vocabulary.build(TEXTS)).eval()  # fmt: skip
    assert encoder.embedding_dim == dim
    alone = encoder(["a man"])
    batched = encoder(["a man", TEXTS[2], ""])  # padding of the batch must not change "a man"
    assert batched.shape == (3, dim)
    torch.testing.assert_close(alone[0], batched[0], atol=1e-5, rtol=1e-5)


def test_encoder_input_and_config_errors():
    vocab = Vocabulary.build(TEXTS)
    encoder = build_encoder({"name": "text_rnn", "params": {"hidden_size": 4}}, vocabulary=vocab)
    with pytest.raises(DataError, match="list of strings"):
        encoder("a single string")
    with pytest.raises(DataError, match="empty batch"):
        encoder([])
    with pytest.raises(ConfigError, match="vocabulary"):
        build_encoder({"name": "text_rnn"})
    with pytest.raises(ConfigError, match="cell lstm|gru"):
        build_encoder({"name": "text_rnn", "params": {"cell": "rnn"}}, vocabulary=vocab)


def test_init_embeddings_copies_matching_words_and_checks_size():
    vocab = Vocabulary.build(TEXTS)
    encoder = build_encoder({"name": "text_rnn", "params": {"embedding_size": 3}},
                            vocabulary=vocab)  # fmt: skip
    found = encoder.init_embeddings({"guitar": torch.ones(3), "absent": torch.zeros(3)})
    assert found == 1
    assert encoder.embedding.weight[vocab.index["guitar"]].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ConfigError, match="embedding_size to 4"):
        encoder.init_embeddings({"guitar": torch.ones(4)})


def test_max_pooling_ignores_padding_and_frozen_embeddings_get_no_gradient():
    torch.manual_seed(0)
    params = {"embedding_size": 4, "hidden_size": 3, "pooling": "max", "freeze_embeddings": True}
    encoder = build_encoder({"name": "text_rnn", "params": params},
                            vocabulary=Vocabulary.build(TEXTS))  # fmt: skip
    ids, lengths = encoder.token_ids(["a man"])
    steps, _ = encoder.rnn(encoder.embedding(ids))
    torch.testing.assert_close(encoder(["a man"])[0], steps[0].max(0).values)
    encoder(["a man", TEXTS[2]]).sum().backward()
    assert encoder.embedding.weight.grad is None and encoder.rnn.weight_ih_l0.grad is not None


def test_char_ngrams_are_fasttext_subwords():
    assert char_ngrams("cat", (3, 4)) == ["<ca", "cat", "at>", "<cat", "cat>", "<cat>"]
    assert char_ngrams("a", (3, 5)) == ["<a>", "<a>"]


def test_subwords_give_unseen_words_their_own_vectors_and_survive_padding():
    torch.manual_seed(0)
    params = {"embedding_size": 8, "hidden_size": 6, "subword_buckets": 1000}
    encoder = build_encoder({"name": "text_rnn", "params": params},
                            vocabulary=Vocabulary.build(TEXTS)).eval()  # fmt: skip
    plain = build_encoder({"name": "text_rnn", "params": {"embedding_size": 8, "hidden_size": 6}},
                          vocabulary=Vocabulary.build(TEXTS)).eval()  # fmt: skip
    unseen = ["zebras", "quokkas"]  # both <unk>: the same text without subwords
    assert torch.equal(plain(unseen[:1]), plain(unseen[1:]))
    assert not torch.allclose(encoder(unseen[:1]), encoder(unseen[1:]))
    batched = encoder(["a man", TEXTS[2], ""])
    torch.testing.assert_close(encoder(["a man"])[0], batched[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="subwords"):
        build_encoder({"name": "text_rnn", "params": {"subword_buckets": -1}},
                      vocabulary=Vocabulary.build(TEXTS))  # fmt: skip


def test_word_dropout_replaces_words_by_unk_in_training_only():
    torch.manual_seed(0)
    params = {"embedding_size": 8, "hidden_size": 6, "word_dropout": 0.5}
    encoder = build_encoder({"name": "text_rnn", "params": params},
                            vocabulary=Vocabulary.build(TEXTS))  # fmt: skip
    seen = []
    encoder.embedding.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0]))
    text = [" ".join(["man"] * 40)]
    encoder.eval()(text)
    encoder.train()(text)
    unk = encoder.vocabulary.unk_id
    assert (seen[0] == unk).sum() == 0
    assert 5 < int((seen[1] == unk).sum()) < 35
    with pytest.raises(ConfigError, match="word_dropout"):
        build_encoder({"name": "text_rnn", "params": {"word_dropout": 1.0}},
                      vocabulary=Vocabulary.build(TEXTS))  # fmt: skip
