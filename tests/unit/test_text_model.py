"""Text model folders: save/load round trips give identical embeddings, for both text encoders."""

from __future__ import annotations

import pytest
import torch

import siamkit
from siamkit.encoders import build_encoder
from siamkit.encoders.text import Vocabulary
from siamkit.errors import ConfigError
from siamkit.heads import CosineHead
from siamkit.siamese import SiameseNetwork
from siamkit.text import embed_texts
from siamkit.text_losses import CoSENTLoss

TEXTS = ["A man is playing a guitar.", "A woman slices an onion.", "", "zebra " * 200]
HEAD = {"name": "cosine"}


def test_lstm_round_trip_identical_embeddings(tmp_path):
    torch.manual_seed(0)
    spec = {"name": "text_rnn", "params": {"embedding_size": 8, "hidden_size": 6,
                                           "bidirectional": True, "max_length": 16}}  # fmt: skip
    vocab = Vocabulary.build(TEXTS[:2])
    net = SiameseNetwork(build_encoder(spec, vocabulary=vocab), CosineHead()).eval()
    folder = siamkit.save_model(tmp_path / "m", net, spec, HEAD, threshold=0.5)
    assert (folder / "vocab.json").is_file()
    loaded = siamkit.load(folder)
    assert loaded.network.encoder.vocabulary.words == vocab.words
    with pytest.warns(UserWarning, match="truncated"):
        before, after = net.embed(TEXTS), loaded.embed(TEXTS)
    assert torch.equal(before, after)
    score = loaded.score(["a man"], ["a guitar"])
    assert score.shape == (1,) and -1 <= float(score[0]) <= 1
    assert loaded.decide(torch.tensor([0.6, 0.4])).tolist() == [True, False]


def test_sentence_transformer_round_trip_keeps_fine_tuned_weights(tmp_path):
    torch.manual_seed(0)
    spec = {"name": "sentence_transformer", "params": {"max_seq_length": 32}}
    encoder = build_encoder(spec)
    shipped = embed_texts(encoder, TEXTS[:2])
    # one optimisation step so the saved weights differ from the shipped model's
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.5)
    encoder.train()
    CoSENTLoss()(encoder(TEXTS[:2]), encoder(TEXTS[1::-1]), torch.tensor([5.0, 0.0])).backward()
    optimizer.step()
    net = SiameseNetwork(encoder, CosineHead()).eval()
    tuned = embed_texts(net, TEXTS)
    assert not torch.allclose(tuned[:2], shipped, atol=1e-4)
    folder = siamkit.save_model(tmp_path / "st", net, spec, HEAD)
    assert (folder / "sentence_transformer").is_dir()
    loaded = siamkit.load(folder)
    torch.testing.assert_close(embed_texts(loaded, TEXTS), tuned, atol=1e-6, rtol=0)
    assert loaded.preprocess is None  # raw strings go to the encoder


def test_sentence_transformer_missing_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no-such-model"):
        build_encoder({"name": "sentence_transformer",
                       "params": {"model": str(tmp_path / "no-such-model")}})  # fmt: skip
