"""Google's speech embedding (``speech_embedding``) on synthetic inputs: the trunk's shape and
stride in time, the frozen trunk under training, the conversion of an ONNX file's weights (a
round trip through torch's exporter) and its refusals, ``init_weights`` filling the trunk only,
and the ``db`` scale of the audio preprocessing that feeds it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from siamkit.checkpoint import load_tensors, save_tensors
from siamkit.data.audio import TOP_DB, AudioPreprocessor
from siamkit.encoders import build_encoder
from siamkit.encoders.speech_embedding import (
    SpeechEmbedding,
    SpeechEmbeddingTrunk,
    convert_speech_embedding,
    onnx_trunk_state_dict,
)
from siamkit.errors import CheckpointError, ConfigError, DataError
from siamkit.recipe import build_network, parse_recipe

FRONT_END = {"sample_rate": 16000, "n_mels": 32, "n_fft": 512, "win_length": 400,
             "hop_length": 160, "fmin": 60, "fmax": 3800, "scale": "db"}  # fmt: skip


def db_batch(count: int, frames: int = 124, seed: int = 0) -> torch.Tensor:
    """(B, 1, 32, frames) mel dB values in the range the preprocessing gives (-80..0 dB)."""
    return -80 * torch.rand(count, 1, 32, frames, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("frames", "windows"), [(76, 1), (83, 1), (84, 2), (124, 7)])
def test_trunk_gives_one_vector_every_8_frames(frames: int, windows: int) -> None:
    out = SpeechEmbeddingTrunk()(torch.randn(2, 1, frames, 32))
    assert out.shape == (2, 96, windows)


def test_trunk_windows_are_independent_76_frame_views() -> None:
    trunk = SpeechEmbeddingTrunk().eval()
    x = torch.randn(1, 1, 92, 32)
    whole = trunk(x)
    with torch.no_grad():
        assert torch.allclose(whole[..., 1], trunk(x[:, :, 8:84])[..., 0], atol=1e-5)
        assert torch.allclose(whole[..., 2], trunk(x[:, :, 16:92])[..., 0], atol=1e-5)


def test_encoder_embeds_and_refuses_other_features() -> None:
    encoder = build_encoder({"name": "speech_embedding", "params": {"embedding_dim": 16}})
    out = encoder(db_batch(3))
    assert out.shape == (3, 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    with pytest.raises(DataError, match="32 mel bands"):
        encoder(torch.zeros(2, 1, 40, 124))
    with pytest.raises(DataError, match=">= 76 frames"):
        encoder(torch.zeros(2, 1, 32, 50))
    with pytest.raises(ConfigError, match="trainable_blocks"):
        SpeechEmbedding(trainable_blocks=21)


@pytest.mark.parametrize("trainable", [0, 2])
def test_training_moves_the_head_and_only_the_chosen_trunk_blocks(trainable: int) -> None:
    torch.manual_seed(0)
    encoder = SpeechEmbedding(embedding_dim=8, trainable_blocks=trainable)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    params = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.1)
    encoder(db_batch(4)).sum().backward()
    optimizer.step()
    after = encoder.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert {"projection.weight", "projection.bias"} <= moved
    last = len(encoder.trunk.convs) - 1
    trunk_moved = {k.split(".")[2] for k in moved if k.startswith("trunk.")}
    assert trunk_moved == {str(i) for i in range(last - trainable + 1, last + 1)}


def export_onnx(module: torch.nn.Module, path: Path, frames: int = 76) -> Path:
    sample = torch.randn(1, 1, frames, 32)
    torch.onnx.export(module.eval(), (sample,), str(path), dynamo=False, opset_version=17)
    return path


def test_onnx_weights_round_trip_into_the_trunk(tmp_path: Path) -> None:
    torch.manual_seed(1)
    original = SpeechEmbeddingTrunk()
    onnx_file = export_onnx(original, tmp_path / "embedding_model.onnx")
    out = convert_speech_embedding(onnx_file, tmp_path / "trunk.safetensors")
    restored = SpeechEmbeddingTrunk()
    restored.load_state_dict(load_tensors(out))
    x = torch.randn(2, 1, 100, 32)
    with torch.no_grad():
        assert torch.allclose(restored(x), original(x), atol=1e-6)
    assert onnx_trunk_state_dict(onnx_file).keys() == original.state_dict().keys()


def test_conversion_refuses_other_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="file not found"):
        onnx_trunk_state_dict(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx model")
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        onnx_trunk_state_dict(garbage)
    other = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU())
    with pytest.raises(CheckpointError, match="20 convolutions"):
        onnx_trunk_state_dict(export_onnx(other, tmp_path / "other.onnx"))


def test_cli_converts_and_reports_errors_in_one_line(tmp_path: Path, capsys) -> None:
    from siamkit.cli import main

    onnx_file = export_onnx(SpeechEmbeddingTrunk(), tmp_path / "embedding_model.onnx")
    out = tmp_path / "w.safetensors"
    assert main(["convert-speech-embedding", str(onnx_file), str(out)]) == 0
    assert load_tensors(out).keys() == SpeechEmbeddingTrunk().state_dict().keys()
    assert main(["convert-speech-embedding", str(tmp_path / "nope.onnx"), str(out)]) == 1
    error = capsys.readouterr().err.strip()
    assert "nope.onnx" in error and "Traceback" not in error and len(error.splitlines()) == 1


def recipe_with(weights: Path) -> object:
    return parse_recipe({
        "data": {"name": "fsdd", "params": {}},
        "encoder": {"name": "speech_embedding", "params": {"embedding_dim": 8}},
        "init_weights": str(weights),
        "head": {"name": "cosine"},
        "loss": {"name": "cosface"},
    })  # fmt: skip


def test_init_weights_fill_the_trunk_and_leave_the_head(tmp_path: Path) -> None:
    torch.manual_seed(2)
    trunk = SpeechEmbeddingTrunk()
    weights = tmp_path / "trunk.safetensors"
    save_tensors(weights, trunk.state_dict())
    encoder = build_network(recipe_with(weights))[0].encoder
    for key, value in trunk.state_dict().items():
        assert torch.equal(encoder.trunk.state_dict()[key], value)
    save_tensors(weights, {**trunk.state_dict(), "convs.0.weight": torch.zeros(3, 3)})
    with pytest.raises(CheckpointError, match="do not match"):
        build_network(recipe_with(weights))


def test_db_scale_pads_at_the_floor_and_keeps_its_settings() -> None:
    pre = AudioPreprocessor(**FRONT_END, frames=124)
    t = np.arange(4000) / 16000
    item = pre([(0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)])[0, 0]
    assert item.shape == (32, 124)
    loudest = float(item.max())
    assert float(item.min()) == pytest.approx(loudest - TOP_DB, abs=1e-3)
    assert torch.allclose(item[:, :10], torch.full((32, 10), loudest - TOP_DB))
    params = pre.params
    assert {k: params[k] for k in FRONT_END} == FRONT_END
    assert "fmin" not in AudioPreprocessor().params  # defaults keep older folders' keys
    with pytest.raises(ConfigError, match="fmin < fmax"):
        AudioPreprocessor(sample_rate=8000, fmax=5000)
    with pytest.raises(ConfigError, match="win_length"):
        AudioPreprocessor(n_fft=256, win_length=400)
