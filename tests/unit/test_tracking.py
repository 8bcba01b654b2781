"""``siamkit train --track``: the run's recipe, per-epoch metrics, test report and plots can be
read back from MLflow's store and from TensorBoard's event files."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml

from siamkit.cli import main
from siamkit.errors import ConfigError
from siamkit.tracking import flatten, tracked_run

RECIPE = {
    "seed": 0,
    "data": {"name": "digits", "params": {"size": 8}},
    "encoder": {"name": "conv4", "params": {"in_channels": 1, "input_size": 8, "channels": 8,
                                            "blocks": 1}},
    "head": "cosine",
    "loss": {"name": "mined_triplet", "params": {"margin": 0.2, "distance": "cosine"}},
    "batches": {"batch_size": 20, "m_per_class": 10, "batches_per_epoch": 2},
    "training": {"epochs": 2, "lr": 0.003},
    "evaluation": {"val_pairs": 60, "test_pairs": 60},
}  # fmt: skip


def train(tmp_path, *track: str):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(RECIPE))
    out = tmp_path / "run"
    assert main(["train", str(config), "--out", str(out), *track]) == 0
    return out


def test_train_with_mlflow_logs_params_metrics_and_plots(tmp_path):
    from mlflow.tracking import MlflowClient

    out = train(tmp_path, "--track", "mlflow")
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["training.lr"] == "0.003"
    assert run.data.params["loss.params.margin"] == "0.2"
    history = client.get_metric_history(run.info.run_id, "auc")
    assert [m.step for m in history] == [0, 1]  # one validation AUC per epoch
    assert 0.0 <= history[-1].value <= 1.0
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 2
    assert 0.0 <= run.data.metrics["test/auc"] <= 1.0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"roc.png", "scores.png", "report.json"} <= artifacts
    assert (out / "mlartifacts").is_dir()  # artifacts stay in the run folder


def test_tensorboard_event_files_hold_the_per_epoch_scalars_and_plots(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from siamkit.evaluation.plots import roc_plot

    roc = roc_plot([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0], tmp_path / "roc.png", "ROC")
    result = SimpleNamespace(test={"auc": 0.75, "eer": 0.25}, threshold=0.5, fewshot={},
                             plots=[roc], model_dir=tmp_path / "model")  # fmt: skip
    with tracked_run("tensorboard", tmp_path, name="tiny", params=RECIPE) as run:
        for epoch, auc in enumerate([0.6, 0.7]):
            run.epoch_callback(epoch, {"epoch": epoch, "loss": 1.0 - auc, "auc": auc})
        run.log_result(result)
    events = EventAccumulator(str(tmp_path / "tensorboard" / "tiny"))
    events.Reload()
    assert {"auc", "loss", "test/auc", "test/eer", "threshold"} <= set(events.Tags()["scalars"])
    auc = events.Scalars("auc")
    assert [e.step for e in auc] == [0, 1] and [e.value for e in auc] == pytest.approx([0.6, 0.7])
    assert "roc" in events.Tags()["images"]


def test_a_tuning_study_logs_one_child_run_per_trial(tmp_path):
    from siamkit.recipe import parse_recipe
    from siamkit.tuning import tune_recipe
    from tests.unit.test_tuning import TINY, fake_training

    with tracked_run("tensorboard", tmp_path, name="study") as run:
        tune_recipe(parse_recipe(TINY), tmp_path, 2, None, "s", tracker=run, say=print,
                    train=fake_training)  # fmt: skip
    children = sorted(p.name for p in (tmp_path / "tensorboard" / "study").iterdir() if p.is_dir())
    assert children == ["trial-0", "trial-1"]


def test_tracking_is_off_by_default_and_bad_choices_are_refused(tmp_path):
    with tracked_run(None, tmp_path) as run:
        assert run is None
    assert not any(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="expected one of mlflow, tensorboard"):
        tracked_run("wandb", tmp_path).__enter__()
    with pytest.raises(ConfigError, match="--track-uri needs --track"):
        tracked_run(None, tmp_path, uri="sqlite:///x.db").__enter__()


def test_flatten_gives_dotted_keys():
    nested = {"loss": {"name": "contrastive", "params": {"margin": 1.0}}, "aug": [{"p": 1}],
              "empty": {}, "none": []}  # fmt: skip
    assert flatten(nested) == {
        "loss.name": "contrastive", "loss.params.margin": 1.0, "aug.0.p": 1, "empty": "{}",
        "none": "[]",
    }  # fmt: skip
