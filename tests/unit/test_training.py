"""The fit loop: it learns, checkpoints, resumes to the same result, stops early, fails clearly."""

from __future__ import annotations

import json

import pytest
import torch

from siamkit.data.batches import PairBatches
from siamkit.data.labelled import LabelledData
from siamkit.encoders import build_encoder
from siamkit.errors import CheckpointError, DataError
from siamkit.evaluation.verification import verification_validator
from siamkit.heads import HEADS
from siamkit.losses import build_loss
from siamkit.siamese import SiameseNetwork
from siamkit.training import TrainConfig, fit


def network() -> SiameseNetwork:
    torch.manual_seed(0)
    encoder = build_encoder({"name": "mlp", "params": {"in_features": 8, "hidden": [32],
                                                       "embedding_dim": 8}})  # fmt: skip
    return SiameseNetwork(encoder, HEADS.build({"name": "euclidean"}))


def train(blobs, out, epochs=3, resume=False, callbacks=(), **config):
    net = network()
    loss = build_loss({"name": "contrastive"}, net)
    batches = PairBatches(blobs, pairs_per_epoch=256, batch_size=32, seed=0)
    validate = verification_validator(blobs, n_pairs=200)
    settings = TrainConfig(epochs=epochs, **{"lr": 0.003, **config})
    history = fit(net, loss, batches, settings, out, validate=validate, resume=resume,
                  show_progress=False, callbacks=callbacks)  # fmt: skip
    return net, history


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "sgd"])
def test_training_lowers_the_loss_and_separates_classes(blobs, tmp_path, optimizer):
    _, history = train(blobs, tmp_path, epochs=4, optimizer=optimizer, schedule="cosine")
    losses = [e["loss"] for e in history.epochs]
    assert losses[-1] < losses[0]
    assert history.best_metric > 0.95  # validation ROC AUC
    saved = json.loads((tmp_path / "history.json").read_text())
    assert len(saved["epochs"]) == 4


def test_resume_continues_to_the_same_weights(blobs, tmp_path):
    straight, _ = train(blobs, tmp_path / "a", epochs=4)
    train(blobs, tmp_path / "b", epochs=2)
    resumed, history = train(blobs, tmp_path / "b", epochs=4, resume=True)
    assert [e["epoch"] for e in history.epochs] == [0, 1, 2, 3]
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)


def test_resume_without_checkpoint_and_corrupt_checkpoint_fail_clearly(blobs, tmp_path):
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(blobs, tmp_path, resume=True)
    train(blobs, tmp_path, epochs=1)
    (tmp_path / "checkpoint" / "state.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="state.safetensors"):
        train(blobs, tmp_path, epochs=2, resume=True)


def test_early_stopping_stops_when_validation_stalls(blobs, tmp_path):
    # A zero learning rate cannot improve the metric after the first epoch.
    _, history = train(blobs, tmp_path, epochs=10, early_stopping_patience=2, lr=1e-12)
    assert history.stopped_early and len(history.epochs) == 3


def test_nan_inputs_stop_training_with_a_clear_error(blobs, tmp_path):
    blobs.items[0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        train(blobs, tmp_path, epochs=1)


def test_a_loss_holding_the_head_does_not_duplicate_its_parameters():
    from siamkit.training import parameter_groups

    encoder = build_encoder({"name": "mlp", "params": {"in_features": 8}})
    net = SiameseNetwork(encoder, HEADS.build({"name": "learned", "params": {"embedding_dim": 64}}))
    loss = build_loss({"name": "bce"}, net)
    groups = parameter_groups(net, loss, TrainConfig())
    assert len(groups) == 1
    assert [id(p) for p in groups[0]["params"]] == [id(p) for p in net.parameters()]


def test_class_proxies_get_their_own_learning_rate():
    from siamkit.training import build_optimizer, parameter_groups

    net = network()
    proxy = build_loss({"name": "cosface"}, net, num_classes=6)
    config = TrainConfig(lr=0.002, loss_lr_multiplier=50)
    optimizer = build_optimizer(parameter_groups(net, proxy, config), config)
    assert [g["lr"] for g in optimizer.param_groups] == [0.002, 0.1]
    assert optimizer.param_groups[1]["params"] == list(proxy.parameters())


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimisers_use_fused_kernels_with_the_plain_update_rule(name):
    from siamkit.training import build_optimizer

    torch.manual_seed(0)
    start = torch.randn(50, 8)
    config = TrainConfig(optimizer=name, lr=0.01, weight_decay=0.001, momentum=0.9)
    fused, plain = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    fused_optimizer = build_optimizer([{"params": [fused]}], config)
    extra = {"momentum": 0.9} if name == "sgd" else {}
    plain_optimizer = type(fused_optimizer)([plain], lr=0.01, weight_decay=0.001, **extra)
    assert fused_optimizer.defaults["fused"] is True
    for _ in range(3):
        for weight, optimizer in ((fused, fused_optimizer), (plain, plain_optimizer)):
            weight.grad = torch.cos(weight.detach())
            optimizer.step()
    assert not torch.equal(fused.detach(), start)
    assert torch.allclose(fused.detach(), plain.detach(), atol=1e-6)


def test_channels_last_bf16_training_learns_and_resumes(tmp_path):
    torch.manual_seed(0)
    images = torch.rand(4, 1, 16, 16).repeat_interleave(8, 0) + 0.1 * torch.rand(32, 1, 16, 16)
    data = LabelledData(images, torch.arange(4).repeat_interleave(8), list("abcd"))
    spec = {"name": "conv4", "params": {"input_size": 16, "channels": 8, "embedding_dim": 6}}

    def run(epochs, resume=False):
        torch.manual_seed(0)
        net = SiameseNetwork(build_encoder(spec), HEADS.build({"name": "euclidean"}))
        loss = build_loss({"name": "contrastive"}, net)
        batches = PairBatches(data, pairs_per_epoch=128, batch_size=16, seed=0)
        settings = TrainConfig(epochs=epochs, lr=0.003, amp=True, channels_last=True)
        history = fit(net, loss, batches, settings, tmp_path, resume=resume, show_progress=False)
        return net, history

    run(2)
    net, history = run(4, resume=True)
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert [e["epoch"] for e in history.epochs] == [0, 1, 2, 3]
    assert history.epochs[-1]["loss"] < history.epochs[0]["loss"]


def test_weight_average_is_what_training_returns_and_resumes(blobs, tmp_path):
    plain, _ = train(blobs, tmp_path / "plain", epochs=3)
    # A decay of ~0 keeps the current weights: the same result as training without averaging.
    near_zero, _ = train(blobs, tmp_path / "zero", epochs=3, ema_decay=1e-9)
    for p, q in zip(plain.parameters(), near_zero.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)
    averaged, history = train(blobs, tmp_path / "ema", epochs=3, ema_decay=0.9)
    assert history.best_metric > 0.95
    assert not all(
        torch.allclose(p, q, atol=1e-4)
        for p, q in zip(plain.parameters(), averaged.parameters(), strict=True)
    )
    train(blobs, tmp_path / "resumed", epochs=2, ema_decay=0.9)
    resumed, _ = train(blobs, tmp_path / "resumed", epochs=3, resume=True, ema_decay=0.9)
    for p, q in zip(averaged.parameters(), resumed.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)
    with pytest.raises(CheckpointError, match="no weight average"):
        train(blobs, tmp_path / "plain", epochs=4, resume=True, ema_decay=0.9)


def test_class_proxies_are_checkpointed_and_resume_exactly(blobs, tmp_path):
    from siamkit.data.batches import ClassBatches

    def run(out, epochs, resume=False):
        net = network()
        proxy = build_loss({"name": "cosface", "params": {"scale": 16.0}}, net, num_classes=6)
        batches = ClassBatches(blobs, batch_size=12, m_per_class=2, seed=0, batches_per_epoch=8)
        settings = TrainConfig(epochs=epochs, lr=0.01)
        history = fit(net, proxy, batches, settings, out, validate=verification_validator(
            blobs, n_pairs=200), resume=resume, show_progress=False)  # fmt: skip
        return net, proxy, history

    straight, proxy, history = run(tmp_path / "a", 3)
    assert history.epochs[-1]["loss"] < history.epochs[0]["loss"]
    assert history.best_metric > 0.95
    run(tmp_path / "b", 1)
    resumed, resumed_proxy, _ = run(tmp_path / "b", 3, resume=True)
    for p, q in zip([*straight.parameters(), *proxy.parameters()],
                    [*resumed.parameters(), *resumed_proxy.parameters()], strict=True):  # fmt: skip
        assert torch.allclose(p, q, atol=1e-5)


def test_last_epoch_weights_are_the_average_when_training_kept_one(blobs, tmp_path):
    from siamkit.training import last_epoch_weights

    net = network()
    loss = build_loss({"name": "contrastive"}, net)
    batches = PairBatches(blobs, pairs_per_epoch=256, batch_size=32, seed=0)
    fit(net, loss, batches, TrainConfig(epochs=2, lr=0.003, ema_decay=0.9), tmp_path,
        show_progress=False)  # fmt: skip
    weights = last_epoch_weights(tmp_path)  # no validation: fit returned the average
    assert weights.keys() == net.state_dict().keys()
    for key, value in net.state_dict().items():
        assert torch.equal(weights[key], value)
    raw = json.loads((tmp_path / "history.json").read_text())
    assert len(raw["epochs"]) == 2


def test_fit_calls_each_callback_after_every_epoch_and_lets_its_exception_through(blobs, tmp_path):
    """A tracker sees every epoch's record; a tuner stops a run by raising from its callback."""
    seen: list[int] = []
    train(blobs, tmp_path / "a", epochs=3, callbacks=[lambda epoch, record: seen.append(epoch)])
    assert seen == [0, 1, 2]

    class Stop(Exception):
        pass

    def stop(epoch: int, record: dict) -> None:
        assert "auc" in record and "loss" in record
        raise Stop(epoch)

    with pytest.raises(Stop):
        train(blobs, tmp_path / "b", epochs=3, callbacks=[stop])
    saved = json.loads((tmp_path / "b" / "history.json").read_text())
    assert len(saved["epochs"]) == 1  # stopped after the first epoch, its checkpoint kept
