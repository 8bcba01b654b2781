"""``siamkit tune``: the tune block is checked, sampled values land at their recipe paths,
pruned trials are counted, best.yaml is a recipe, and two processes share one SQLite study."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest
import yaml

from siamkit.errors import ConfigError
from siamkit.recipe import load_recipe, parse_recipe
from siamkit.training import History
from siamkit.tuning import apply_params, base_settings, check_space, suggest, tune_recipe

TINY = {
    "seed": 0,
    "data": {"name": "digits", "params": {"size": 8}},
    "encoder": {"name": "conv4", "params": {"in_channels": 1, "input_size": 8, "channels": 8,
                                            "blocks": 1}},
    "head": "cosine",
    "loss": {"name": "mined_triplet", "params": {"margin": 0.1, "distance": "cosine"}},
    "augmentation": [{"name": "RandomAffine", "params": {"degrees": 5}}],
    "batches": {"batch_size": 20, "m_per_class": 10, "batches_per_epoch": 2},
    "training": {"epochs": 2, "lr": 0.002},
    "evaluation": {"val_pairs": 60, "test_pairs": 60, "plots": False},
    "tune": {
        "metric": "eer", "startup_trials": 2, "prune_startup_trials": 2,
        "params": {
            "training.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            "loss.params.margin": {"type": "float", "low": 0.05, "high": 0.5},
            "encoder.params.embedding_dim": {"type": "int", "low": 8, "high": 32, "step": 8},
            "training.optimizer": {"type": "categorical", "choices": ["adam", "rmsprop", "sgd"]},
            "augmentation.0.params.degrees": {"type": "float", "low": 0, "high": 20},
            "batches.m_per_class": {"type": "categorical", "choices": [5, 10]},
        },
    },
}  # fmt: skip


def with_tune(**changes) -> dict:
    raw = json.loads(json.dumps(TINY))
    raw["tune"].update(changes)
    return raw


@pytest.mark.parametrize(
    "tune, expected",
    [
        ({"params": {"training.lrate": {"type": "float", "low": 0.1, "high": 1}}}, "'lrate'"),
        ({"params": {"loss.margin": {"type": "float", "low": 0.1, "high": 1}}}, "'margin'"),
        ({"params": {"training.lr": {"type": "float", "low": 1, "high": 0.1}}}, "must be below"),
        ({"params": {"training.lr": {"type": "float", "low": 0, "high": 1, "log": True}}},
         "log needs low > 0"),
        ({"params": {"training.optimizer": {"type": "categorical"}}}, "non-empty choices"),
        ({"params": {"batches.m_per_class": {"type": "int", "low": 2.5, "high": 4}}}, "whole"),
        ({"metric": "accuracy"}, "unknown metric 'accuracy'"),
        ({"params": {}}, "params"),
    ],
)  # fmt: skip
def test_the_tune_block_is_checked_naming_the_parameter(tune, expected):
    with pytest.raises(ConfigError, match=expected):
        parse_recipe(with_tune(**tune), "tiny.yaml")


def test_a_value_the_recipe_refuses_is_reported_before_any_trial():
    recipe = parse_recipe(with_tune(params={
        "training.optimizer": {"type": "categorical", "choices": ["adam", "lbfgs"]},
    }))  # fmt: skip
    with pytest.raises(ConfigError, match="tune.params.training.optimizer = 'lbfgs'"):
        check_space(recipe)


def test_sampled_values_land_at_their_recipe_paths():
    recipe = parse_recipe(TINY)
    check_space(recipe)
    chosen = {
        "training.lr": 0.0123, "loss.params.margin": 0.31, "encoder.params.embedding_dim": 24,
        "training.optimizer": "rmsprop", "augmentation.0.params.degrees": 12.5,
        "batches.m_per_class": 5,
    }  # fmt: skip
    values = suggest(optuna.trial.FixedTrial(chosen), recipe.tune)
    assert values == chosen
    trial = apply_params(base_settings(recipe), values, "trial")
    assert trial.training.lr == 0.0123 and trial.training.optimizer == "rmsprop"
    assert trial.loss.params == {"margin": 0.31, "distance": "cosine"}
    assert trial.encoder.params["embedding_dim"] == 24 and trial.encoder.params["channels"] == 8
    assert trial.augmentation[0].params == {"degrees": 12.5}
    assert trial.batches.m_per_class == 5 and trial.batches.batch_size == 20
    assert trial.tune is None and recipe.training.lr == 0.002  # the base recipe is untouched


def fake_training(recipe, folder, callbacks) -> History:
    """A stand-in for training: EER 0.1 per epoch with Adam, 0.4 otherwise."""
    history = History()
    for epoch in range(recipe.training.epochs):
        record = {"epoch": epoch, "loss": 1.0, "eer": 0.1 if recipe.training.optimizer == "adam"
                  else 0.4}  # fmt: skip
        history.epochs.append(record)
        for callback in callbacks:
            callback(epoch, record)
    return history


def test_a_pruned_trial_is_counted_and_best_yaml_is_a_recipe(tmp_path):
    recipe = parse_recipe(TINY)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="tiny")
    for optimizer in ("adam", "adam", "sgd"):  # the third falls behind the median at epoch 1
        study.enqueue_trial({"training.optimizer": optimizer, "training.lr": 0.004})
    lines = []
    result = tune_recipe(recipe, tmp_path, 3, storage, "tiny", say=lines.append,
                         train=fake_training)  # fmt: skip
    assert [row["state"] for row in result.rows] == ["complete", "complete", "pruned"]
    assert result.count("pruned") == 1 and "pruned after 1 epoch" in lines[2]
    saved = json.loads((tmp_path / "trials.json").read_text())
    assert [row["state"] for row in saved["rows"]] == ["complete", "complete", "pruned"]
    assert "1 pruned" in (tmp_path / "trials.md").read_text()
    best = load_recipe(tmp_path / "best.yaml")
    assert best.tune is None and best.training.optimizer == "adam"
    assert best.training.lr == 0.004 and result.best_value == pytest.approx(0.1)
    # re-running continues the same study: a larger budget adds trials, the same one adds none
    result = tune_recipe(recipe, tmp_path, 4, storage, "tiny", say=lines.append,
                         train=fake_training)  # fmt: skip
    assert len(result.rows) == 4 and len(lines) == 4


def test_a_study_started_from_another_recipe_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    tune_recipe(parse_recipe(TINY), tmp_path, 1, storage, "s", say=print, train=fake_training)
    other = parse_recipe(with_tune(metric="auc"))
    with pytest.raises(ConfigError, match="another recipe"):
        tune_recipe(other, tmp_path, 2, storage, "s", say=print, train=fake_training)


def test_two_tune_processes_share_one_sqlite_study(tmp_path):
    raw = with_tune(params={"training.lr": {"type": "float", "low": 1e-3, "high": 1e-2}})
    raw["training"]["epochs"], raw["batches"]["batches_per_epoch"] = 1, 1
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    storage, trials = f"sqlite:///{tmp_path / 'shared.db'}", 4
    code = "import sys; from siamkit.cli import main; sys.exit(main(sys.argv[1:]))"
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                "tune",
                str(config),
                "--trials",
                str(trials),
                "--storage",
                storage,
                "--study",
                "shared",
                "--out",
                str(tmp_path / f"w{i}"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    ran = [{int(p.name) for p in (tmp_path / f"w{i}" / "trials").iterdir()} for i in range(2)]
    assert ran[0] and ran[1], outputs  # both workers took trials
    assert not ran[0] & ran[1]  # no trial ran twice
    study = optuna.load_study(study_name="shared", storage=storage)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert sorted(t.number for t in finished) == sorted(ran[0] | ran[1])
    assert len(finished) == trials
    assert len({t.params["training.lr"] for t in finished}) == trials  # no repeated settings


def test_an_interrupted_trial_is_failed_and_the_rerun_replaces_it(tmp_path):
    def interrupted(recipe, folder, callbacks) -> History:
        history = fake_training(recipe, folder, callbacks)
        history.interrupted = True  # what fit returns after Ctrl-C
        return history

    recipe, storage = parse_recipe(TINY), f"sqlite:///{tmp_path / 'study.db'}"
    with pytest.raises(KeyboardInterrupt):
        tune_recipe(recipe, tmp_path, 2, storage, "s", say=print, train=interrupted)
    result = tune_recipe(recipe, tmp_path, 2, storage, "s", say=print, train=fake_training)
    assert [row["state"] for row in result.rows] == ["fail", "complete", "complete"]


def test_the_cli_refuses_a_recipe_without_a_tune_block(tmp_path, capsys):
    from siamkit.cli import main

    raw = json.loads(json.dumps(TINY))
    del raw["tune"]
    config = tmp_path / "plain.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["tune", str(config), "--out", str(tmp_path / "out")]) == 1
    assert "has no tune: block" in capsys.readouterr().err
