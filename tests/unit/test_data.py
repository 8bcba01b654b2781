"""Pairs, triplets, splits, episodes and batch sources: balance, reproducibility, no leaks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from siamkit.data.batches import ClassBatches, PairBatches, TripletBatches
from siamkit.data.datasets import build_dataset
from siamkit.data.episodes import sample_episodes
from siamkit.data.labelled import LabelledData
from siamkit.data.pairs import make_pairs, make_triplets
from siamkit.data.splits import split_classes, split_items
from siamkit.data.transforms import build_augmentation
from siamkit.errors import ConfigError, DataError

LABELS = torch.arange(10).repeat_interleave(20)  # 10 classes x 20 items


def test_pairs_are_balanced_labelled_correctly_and_unique():
    a, b, y = make_pairs(LABELS, 400, seed=1)
    assert len(y) == 400 and y.sum() == 200
    assert torch.equal((LABELS[a] == LABELS[b]).float(), y)
    assert torch.all(a != b)
    keys = set(zip(torch.minimum(a, b).tolist(), torch.maximum(a, b).tolist(), strict=True))
    assert len(keys) == 400  # no unordered pair twice


def test_pairs_are_reproducible_and_change_with_the_seed():
    first, again, other = (make_pairs(LABELS, 100, seed=s) for s in (3, 3, 4))
    assert all(torch.equal(x, z) for x, z in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])


def test_single_example_class_only_in_negatives_and_one_class_is_an_error():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    a, b, y = make_pairs(labels, 8, seed=0)
    positives = torch.cat([a[y == 1], b[y == 1]])
    assert 6 not in positives.tolist()
    with pytest.raises(DataError, match="at least 2 classes"):
        make_pairs(torch.zeros(5, dtype=torch.long), 4)
    with pytest.raises(DataError, match="positive"):
        make_pairs(LABELS, 0)


def test_triplets_have_same_class_positive_and_other_class_negative():
    anchor, pos, neg = make_triplets(LABELS, 300, seed=0)
    assert torch.all(LABELS[anchor] == LABELS[pos]) and torch.all(anchor != pos)
    assert torch.all(LABELS[anchor] != LABELS[neg])


def test_class_disjoint_splits_cover_every_item_once():
    data = LabelledData(torch.arange(200).float().unsqueeze(1), LABELS)
    splits = split_classes(data, (0.6, 0.2, 0.2), seed=0)
    sets = [set(s.labels.tolist()) for s in (splits.train, splits.val, splits.test)]
    assert [len(s) for s in sets] == [6, 2, 2]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    items = torch.cat([splits.train.items, splits.val.items, splits.test.items]).flatten()
    assert sorted(items.tolist()) == list(range(200))
    with pytest.raises(DataError, match="3 classes"):
        split_classes(LabelledData(torch.zeros(4, 1), torch.tensor([0, 0, 1, 1])))


def test_stratified_item_split_keeps_every_class():
    data = LabelledData(torch.arange(200).float().unsqueeze(1), LABELS)
    splits = split_items(data, (0.5, 0.5, 0.0), seed=0)
    assert torch.equal(torch.bincount(splits.train.labels), torch.full((10,), 10))
    assert len(splits.test) == 0


def test_episodes_have_n_way_k_shot_and_respect_groups():
    groups = (LABELS >= 5).long()  # two "alphabets" of 5 classes
    episodes = sample_episodes(LABELS, 5, 2, n_query=3, episodes=50, seed=0, groups=groups)
    for ep in episodes:
        assert len(ep.support) == 10 and len(ep.query) == 15
        assert len(set(groups[ep.support].tolist())) == 1  # one alphabet per episode
        for way in range(5):
            classes = set(LABELS[ep.support[ep.support_labels == way]].tolist())
            classes |= set(LABELS[ep.query[ep.query_labels == way]].tolist())
            assert len(classes) == 1
        assert not set(ep.support.tolist()) & set(ep.query.tolist())
    with pytest.raises(DataError, match="6-way"):
        sample_episodes(LABELS, 6, 1, groups=groups)


def test_pair_batches_differ_per_epoch_and_repeat_on_resume(blobs):
    source = PairBatches(blobs, pairs_per_epoch=50, batch_size=16, seed=0)
    assert len(source) == 4
    source.set_epoch(0)
    first = [y for _, _, y in source]
    source.set_epoch(1)
    second = [y for _, _, y in source]
    source.set_epoch(0)
    again = [y for _, _, y in source]
    assert all(torch.equal(p, q) for p, q in zip(first, again, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(first, second, strict=True))


def test_triplet_and_class_batches_shapes(blobs):
    a, p, n = next(iter(TripletBatches(blobs, 20, batch_size=8)))
    assert a.shape == p.shape == n.shape == (8, 8)
    x, labels = next(iter(ClassBatches(blobs, batch_size=12, m_per_class=3)))
    assert x.shape == (12, 8)
    assert sorted(torch.bincount(labels)[torch.bincount(labels) > 0].tolist()) == [3, 3, 3, 3]
    with pytest.raises(DataError, match="multiple"):
        ClassBatches(blobs, batch_size=10, m_per_class=3)
    with pytest.raises(DataError, match="empty"):
        PairBatches(blobs.subset([]), 10)


def test_grouped_class_batches_stay_within_few_groups_and_repeat_per_epoch():
    labels = torch.arange(40).repeat_interleave(3)  # 40 classes of 3 items
    groups = labels // 10  # 4 groups of 10 classes
    data = LabelledData(torch.randn(len(labels), 2), labels, groups=groups)
    source = ClassBatches(data, batch_size=12, m_per_class=3, groups_per_batch=1,
                          batches_per_epoch=5)  # fmt: skip
    first = [y for _, y in source]
    for y in first:
        assert len(y) == 12 and len((y // 10).unique()) == 1
        assert (y.bincount()[y.unique()] == 3).all()
    wide = ClassBatches(data, batch_size=36, m_per_class=3, groups_per_batch=1)
    assert all(len((y // 10).unique()) == 2 for _, y in wide)  # 12 classes need a 2nd group
    source.set_epoch(1)
    second = [y for _, y in source]
    source.set_epoch(0)
    assert all(torch.equal(a, b) for a, b in zip(first, [y for _, y in source], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_grouped_class_batches_need_groups(blobs):
    with pytest.raises(DataError, match="groups"):
        ClassBatches(blobs, batch_size=12, m_per_class=3, groups_per_batch=1)


def test_augmentation_from_names_applies_to_uint8_images():
    augment = build_augmentation([{"name": "RandomAffine", "params": {"degrees": 10}}])
    x = torch.randint(0, 255, (1, 28, 28), dtype=torch.uint8)
    assert augment(x).shape == x.shape
    with pytest.raises(ConfigError, match="NoSuchTransform"):
        build_augmentation([{"name": "NoSuchTransform"}])


def test_digits_reader_holds_out_classes_6_to_9():
    splits = build_dataset("digits", size=16)
    assert set(splits.train.labels.tolist()) == set(range(6))
    assert set(splits.val.labels.tolist()) == set(range(6))
    assert set(splits.test.labels.tolist()) == {6, 7, 8, 9}
    assert splits.train.items.shape[1:] == (1, 16, 16) and splits.train.items.dtype == torch.uint8


def test_labelled_data_rejects_mismatch_and_nan():
    with pytest.raises(DataError, match="one label per item"):
        LabelledData(torch.zeros(3, 2), torch.tensor([0, 1]))
    with pytest.raises(DataError, match="NaN"):
        LabelledData(torch.tensor([[float("nan")]]), torch.tensor([0]))


def test_class_batches_of_an_epoch_do_not_depend_on_earlier_epochs(blobs):
    def epoch_one(after_epoch_zero: bool) -> list[list[int]]:
        source = ClassBatches(blobs, batch_size=12, m_per_class=2, seed=3, batches_per_epoch=4)
        if after_epoch_zero:
            list(source)  # epoch 0 consumes random numbers
        np.random.seed(int(after_epoch_zero))  # nor may the global numpy state matter
        source.set_epoch(1)
        return [labels.tolist() for _, labels in source]

    assert epoch_one(True) == epoch_one(False)
