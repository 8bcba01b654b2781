"""``siamkit train --track``: the run's recipe, per-epoch metrics, test report and plots can be
read back from MLflow's store and from TensorBoard's event files."""

from __future__ import annotations

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


def test_train_with_tensorboard_writes_per_epoch_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = train(tmp_path, "--track", "tensorboard")
    events = EventAccumulator(str(out / "tensorboard" / "tiny"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"auc", "eer", "loss", "test/auc"} <= set(scalars)
    assert [e.step for e in events.Scalars("auc")] == [0, 1]
    assert {"roc", "scores"} <= set(events.Tags()["images"])


def test_tracking_is_off_by_default_and_bad_choices_are_refused(tmp_path):
    with tracked_run(None, tmp_path) as run:
        assert run is None
    assert not any(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="expected one of mlflow, tensorboard"):
        with tracked_run("wandb", tmp_path):
            pass
    with pytest.raises(ConfigError, match="--track-uri needs --track"):
        with tracked_run(None, tmp_path, uri="sqlite:///x.db"):
            pass


def test_flatten_gives_dotted_keys():
    nested = {"loss": {"name": "contrastive", "params": {"margin": 1.0}}, "aug": [{"p": 1}],
              "empty": {}, "none": []}  # fmt: skip
    assert flatten(nested) == {
        "loss.name": "contrastive", "loss.params.margin": 1.0, "aug.0.p": 1, "empty": "{}",
        "none": "[]",
    }  # fmt: skip
