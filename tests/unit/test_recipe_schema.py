"""One recipe schema for every file in configs/: images and sentence pairs read the same sections,
settings that do not fit the data are refused with a message naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from siamkit.errors import ConfigError
from siamkit.recipe import SENTENCE_PAIR_DATASETS, load_recipe, parse_recipe

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
TEXT = {
    "data": {"name": "stsb"},
    "encoder": {"name": "text_rnn", "params": {"embedding_size": 8, "hidden_size": 8}},
    "loss": {"name": "cosent"},
}
IMAGES = {
    "data": {"name": "digits", "params": {"size": 16}},
    "encoder": {"name": "conv4", "params": {"input_size": 16}},
}


def test_configs_folder_has_image_and_text_recipes():
    kinds = {load_recipe(path).sentence_pairs for path in CONFIGS}
    assert len(CONFIGS) >= 10 and kinds == {True, False}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_parses_with_the_one_schema_and_round_trips(path):
    recipe = load_recipe(path)
    assert recipe.sentence_pairs == (recipe.data.name in SENTENCE_PAIR_DATASETS)
    assert parse_recipe(recipe.model_dump(mode="json"), path.name) == recipe
    if recipe.sentence_pairs:
        assert recipe.head.name == "cosine"
        expected = "spearman" if recipe.data.name == "stsb" else "auc"
        assert recipe.evaluation.monitor == expected


def test_text_defaults_follow_the_data():
    stsb = parse_recipe(TEXT)
    assert (stsb.head.name, stsb.evaluation.monitor, stsb.evaluation.threshold_rule) == (
        "cosine", "spearman", "accuracy",
    )  # fmt: skip
    mrpc = parse_recipe({**TEXT, "data": "mrpc", "evaluation": {"threshold_rule": "f1"}})
    assert mrpc.data.name == "mrpc"  # a bare name stands for {name: ...}
    assert (mrpc.evaluation.monitor, mrpc.evaluation.threshold_rule) == ("auc", "f1")
    images = parse_recipe(IMAGES)
    assert (images.head.name, images.evaluation.monitor, images.evaluation.threshold_rule) == (
        "euclidean", "auc", "eer",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"batches": {"batch_size": 8, "m_per_class": 8}}, "batches.m_per_class"),
        ({"evaluation": {"fewshot": [{"n_way": 5}]}}, "evaluation.fewshot"),
        ({"augmentation": [{"name": "RandomHorizontalFlip"}]}, "augmentation"),
        ({"head": "euclidean"}, "head"),
        ({"evaluation": {"monitor": "auc"}}, "evaluation.monitor"),
        ({"data": {"name": "stsb", "params": {"extra_train": "stsb"}}}, "another dataset"),
        ({"data": {"name": "stsb", "params": {"train_pairs": 1}}}, "data.params.train_pairs"),
    ],
)
def test_class_dataset_settings_are_refused_for_sentence_pairs(change, named):
    with pytest.raises(ConfigError, match=named) as error:
        parse_recipe({**TEXT, **change}, "text.yaml")
    assert str(error.value).startswith("text.yaml: ")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"init_embeddings": "all-MiniLM-L6-v2"}, "init_embeddings"),
        ({"vocabulary": {"min_freq": 2}}, "vocabulary.min_freq"),
        ({"evaluation": {"monitor": "spearman"}}, "evaluation.monitor"),
        ({"evaluation": {"threshold_rule": "f1"}}, "evaluation.threshold_rule"),
    ],
)
def test_sentence_pair_settings_are_refused_for_class_datasets(change, named):
    with pytest.raises(ConfigError, match=f"{named}.*class dataset 'digits'"):
        parse_recipe({**IMAGES, **change}, "images.yaml")


def test_the_former_text_dialect_says_where_each_setting_moved():
    with pytest.raises(ConfigError, match="batch_size: is now batches.batch_size; threshold_rule"):
        parse_recipe({**TEXT, "batch_size": 16, "threshold_rule": "f1"}, "old.yaml")
