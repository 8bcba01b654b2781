"""Text tasks on the bundled all-MiniLM-L6-v2: similarity, matching through the gallery store,
classification by references (k-NN vote, prototypes), few-shot episodes, paraphrase threshold."""

from __future__ import annotations

import pytest
import torch

from siamkit.data.labelled import LabelledData
from siamkit.data.text import TextPairs
from siamkit.encoders import build_encoder
from siamkit.encoders.text import pretrained_words, wordpiece_vectors
from siamkit.errors import DataError
from siamkit.heads import CosineHead
from siamkit.siamese import SiameseNetwork
from siamkit.text import (
    classify_texts,
    embed_texts,
    evaluate_sts,
    fewshot_text_accuracy,
    paraphrase_report,
    paraphrase_threshold,
    rank_references,
    similarity,
)
from siamkit.text.classification import classify_embeddings, knn_vote
from siamkit.text.paraphrase import choose_pair_threshold, threshold_report

MUSIC = ["A man is playing a guitar.", "A woman plays the violin.", "A boy is playing drums."]
FOOD = ["A woman is slicing an onion.", "A chef is cooking pasta.", "A man is peeling potatoes."]


@pytest.fixture(scope="module")
def minilm() -> SiameseNetwork:
    encoder = build_encoder({"name": "sentence_transformer", "params": {"max_seq_length": 32}})
    return SiameseNetwork(encoder, CosineHead()).eval()


def test_embeddings_are_unit_length_in_input_order(minilm):
    texts = ["short", "a much longer sentence about music and guitars", "mid length text"]
    together = embed_texts(minilm, texts, batch_size=2)
    assert torch.allclose(together.norm(dim=1), torch.ones(3))
    alone = torch.cat([embed_texts(minilm.encoder, [t]) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    with pytest.raises(DataError, match="non-empty list"):
        embed_texts(minilm, "not a list")


def test_similarity_and_sts_protocol(minilm):
    same = similarity(minilm, ["A man plays a guitar."], ["A man is playing a guitar."])
    other = similarity(minilm, ["A man plays a guitar."], ["The stock market fell today."])
    assert same > 0.8 > 0.3 > other
    pairs = TextPairs(
        ["A man plays a guitar.", "A dog runs.", "A man plays a guitar."],
        ["A man is playing a guitar.", "A dog is running in a field.", "Stocks fell sharply."],
        [5.0, 3.5, 0.0],
    )
    metrics = evaluate_sts(minilm, pairs)
    assert metrics["spearman"] == pytest.approx(100.0)
    with pytest.raises(DataError, match="as many"):
        similarity(minilm, ["a"], ["b", "c"])


def test_rank_references_in_memory_and_in_a_gallery_folder(minilm, tmp_path):
    refs = FOOD + MUSIC
    for index in (None, tmp_path / "index", tmp_path / "index"):
        top = rank_references(minilm, ["Someone plays an electric guitar"], refs, k=2, index=index)
        assert [m.text for m in top[0]][0] == "A man is playing a guitar."
        assert top[0][0].line == 4 and top[0][0].score >= top[0][1].score


def test_classify_texts_knn_and_prototypes(minilm):
    refs = MUSIC + FOOD
    labels = ["music"] * 3 + ["food"] * 3
    queries = ["He strums a guitar on stage.", "She is chopping carrots in the kitchen."]
    for method in ("knn", "prototype"):
        assert classify_texts(minilm, queries, refs, labels, method, k=3) == ["music", "food"]
    with pytest.raises(DataError, match="6 reference texts but 5 labels"):
        classify_texts(minilm, queries, refs, labels[:5])


def test_knn_vote_majority_and_tie_break():
    refs = torch.eye(3)
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[0.9, 0.5, 0.4]])  # nearest: class 0, then two class-1 references
    assert knn_vote(query, refs, labels, k=1).tolist() == [0]
    assert knn_vote(query, refs, labels, k=3).tolist() == [1]  # 2 votes beat 1
    assert knn_vote(query, refs, torch.tensor([0, 1, 2]), k=3).tolist() == [0]  # tie: nearest
    assert classify_embeddings(query, refs, labels, "prototype").tolist() == [0]
    with pytest.raises(DataError, match="'knn' or 'prototype'"):
        classify_embeddings(query, refs, labels, "svm")  # type: ignore[arg-type]


def test_fewshot_text_accuracy_on_two_clear_classes(minilm):
    data = LabelledData(MUSIC + FOOD, torch.tensor([0, 0, 0, 1, 1, 1]), ["music", "food"])
    result = fewshot_text_accuracy(minilm, data, n_way=2, k_shot=1, episodes=20, n_query=2)
    assert result.episodes == 20 and result.mean >= 0.9


def test_paraphrase_threshold_chosen_on_train_pairs(minilm):
    train = TextPairs(
        ["A man plays a guitar.", "A cat sleeps.", "A man plays a guitar.", "Kids play soccer."],
        ["A man is playing the guitar.", "A cat is sleeping.", "A cat sleeps.", "Stocks fell."],
        [1.0, 1.0, 0.0, 0.0],
    )
    threshold = paraphrase_threshold(minilm, train)
    report = paraphrase_report(minilm, train, threshold)
    assert report["accuracy"] == 1.0 and report["f1"] == 1.0
    graded = TextPairs(train.a, train.b, [4.0, 5.0, 0.0, 1.0])
    with pytest.raises(DataError, match="0/1 labels"):
        paraphrase_threshold(minilm, graded)


def test_threshold_rules_accuracy_versus_f1():
    # cutting above the first pair is the most accurate; accepting every pair has the best F1
    scores = [0.9, 0.2, 0.15, 0.3, 0.25, 0.18]
    labels = [1, 1, 1, 0, 0, 0]
    assert choose_pair_threshold(scores, labels, "accuracy") == 0.9
    assert choose_pair_threshold(scores, labels, "f1") == pytest.approx(0.15)
    assert threshold_report(scores, labels, 0.15) == {"threshold": 0.15, "accuracy": 0.5,
                                                      "f1": pytest.approx(2 / 3)}  # fmt: skip
    with pytest.raises(DataError, match="'accuracy' or 'f1'"):
        choose_pair_threshold(scores, labels, "auc")  # type: ignore[arg-type]


def test_pretrained_words_and_unit_scaled_wordpiece_vectors(minilm):
    st = minilm.encoder.model
    words = pretrained_words(st)
    assert "guitar" in words and "the" in words
    assert not any(w.startswith("##") for w in words)
    assert "[CLS]" not in words and "[unused0]" not in words
    vectors = wordpiece_vectors(["guitar", "strumming", "<unk>"], st)
    assert set(vectors) == {"guitar", "strumming"}  # a word of several pieces gets their mean
    assert 0.5 < float(torch.stack(list(vectors.values())).std()) < 2.0
