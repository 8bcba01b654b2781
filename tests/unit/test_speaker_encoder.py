"""The GE2E speaker encoder (``ge2e_lstm``) and the conversion of Resemblyzer's weights, on tiny
synthetic inputs and fake checkpoints: shapes, unit embeddings, padding and long inputs, the key
mapping, and the refusal of a checkpoint that holds more than tensors."""

from __future__ import annotations

import fractions
from pathlib import Path

import numpy as np
import pytest
import torch

from siamkit.checkpoint import load_tensors, load_weights
from siamkit.data.audio import AudioPreprocessor
from siamkit.encoders import build_encoder
from siamkit.encoders.speaker import (
    GE2ELSTM,
    convert_resemblyzer,
    read_torch_tensors,
    resemblyzer_state_dict,
    strip_silence,
)
from siamkit.errors import CheckpointError, ConfigError

SMALL = {"n_mels": 8, "hidden_size": 12, "layers": 2, "embedding_dim": 6, "partial_frames": 10,
         "partial_step": 5}  # fmt: skip


def mel_batch(lengths: list[int], frames: int = 24, n_mels: int = 8, seed: int = 0):
    """(B, 1, n_mels, frames) positive 'mel power' with each item's frames centred in zeros."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(lengths), 1, n_mels, frames)
    for i, length in enumerate(lengths):
        start = (frames - length) // 2
        x[i, 0, :, start : start + length] = torch.rand(n_mels, length, generator=gen) + 0.1
    return x


def small_encoder(**params) -> GE2ELSTM:
    torch.manual_seed(0)
    return build_encoder({"name": "ge2e_lstm", "params": {**SMALL, **params}}).eval()


def test_embeddings_are_unit_non_negative_and_of_the_declared_size() -> None:
    encoder = small_encoder()
    with torch.no_grad():
        out = encoder(mel_batch([3, 10, 24]))
    assert out.shape == (3, 6) and encoder.embedding_dim == 6
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    assert (out >= 0).all()  # ReLU before the normalisation, as GE2E


def test_padding_frames_are_ignored_wherever_the_recording_sits() -> None:
    encoder = small_encoder()
    x = mel_batch([5], frames=24)
    moved = torch.zeros_like(x)
    moved[..., 2:7] = x[..., 9:14]  # the same 5 frames, elsewhere in the window
    with torch.no_grad():
        assert torch.allclose(encoder(x), encoder(moved), atol=1e-6)
        alone = encoder(x[..., 9:14])  # no padding at all
    assert torch.allclose(encoder(x), alone, atol=1e-6)


def test_min_frames_pads_short_recordings_with_silence_at_their_end() -> None:
    padded, plain = small_encoder(min_frames=10), small_encoder()
    x = mel_batch([4])
    with torch.no_grad():
        end_padded = torch.nn.functional.pad(x[..., 10:14], (0, 6))  # 4 frames + 6 zero frames
        lstm_input = end_padded[:, 0].transpose(1, 2)
        _, (hidden, _) = plain.lstm(lstm_input)
        expected = torch.nn.functional.normalize(torch.relu(plain.linear(hidden[-1])), dim=1)
        assert torch.allclose(padded(x), expected, atol=1e-6)
        assert not torch.allclose(padded(x), plain(x), atol=1e-3)


def test_long_recordings_are_cut_into_partial_windows_and_averaged() -> None:
    encoder = small_encoder()
    item = torch.rand(23, 8) + 0.1
    windows = encoder.windows(item)
    # windows of 10 every 5 frames: 0-10, 5-15, 10-20; 15-23 covers 0.8 >= 3/4 and is kept
    assert [len(w) for w in windows] == [10, 10, 10, 8]
    assert len(encoder.windows(torch.rand(21, 8))) == 3  # 15-21 covers 0.6: dropped
    with torch.no_grad():
        whole = encoder(item.T[None, None])
        parts = encoder.embed_windows(windows).mean(0, keepdim=True)
    assert torch.allclose(whole, torch.nn.functional.normalize(parts, dim=1), atol=1e-6)


def test_freeze_lstm_leaves_only_the_linear_map_to_train() -> None:
    encoder = small_encoder(freeze_lstm=True).train()
    encoder(mel_batch([6, 12])).sum().backward()
    assert all(p.grad is None for p in encoder.lstm.parameters())
    assert encoder.linear.weight.grad is not None and encoder.linear.weight.grad.abs().sum() > 0


def test_silent_items_and_wrong_shapes() -> None:
    assert strip_silence(torch.zeros(7, 8)).shape == (1, 8)
    encoder = small_encoder()
    with torch.no_grad():
        assert torch.isfinite(encoder(torch.zeros(1, 1, 8, 12))).all()
    with pytest.raises(ConfigError, match="8 mel bands"):
        encoder(torch.rand(1, 1, 5, 12))
    with pytest.raises(ConfigError, match="partial_step"):
        GE2ELSTM(partial_frames=10, partial_step=11)


def test_power_preprocessing_feeds_the_encoder_and_keeps_old_settings_keys() -> None:
    rate = 16000
    t = np.arange(int(0.3 * rate)) / rate
    quiet = (0.01 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    pre = AudioPreprocessor(rate, 40, 400, 160, 40, scale="power", volume_dbfs=-30)
    x = pre([quiet])
    assert x.shape == (1, 1, 40, 40) and x.min() >= 0
    assert x[0, 0, :, 0].sum() == 0 and x[0, 0, :, 20].sum() > 0  # centred in silence
    louder = AudioPreprocessor(rate, 40, 400, 160, 40, scale="power")([quiet * 10])
    raised = AudioPreprocessor(rate, 40, 400, 160, 40, scale="power")([quiet])
    assert torch.allclose(x, louder * (x.sum() / louder.sum()), rtol=1e-3)  # volume raised
    assert x.sum() > 10 * raised.sum()  # -43 dBFS raised to -30: 20x the power
    assert pre.spec.params["scale"] == "power" and pre.params["volume_dbfs"] == -30
    assert set(AudioPreprocessor().params) == {"sample_rate", "n_mels", "n_fft", "hop_length",
                                               "frames"}  # fmt: skip
    with pytest.raises(ConfigError, match="scale"):
        AudioPreprocessor(scale="linear")
    with torch.no_grad():
        assert GE2ELSTM()(x).shape == (1, 256)


def fake_resemblyzer(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint laid out as Resemblyzer's pretrained.pt, with random tensors."""
    torch.manual_seed(1)
    state = {k: torch.randn_like(v) for k, v in GE2ELSTM().state_dict().items()}
    loss = {"similarity_weight": torch.tensor([10.0]), "similarity_bias": torch.tensor([-5.0])}
    model_state = {**loss, **state}
    torch.save({"step": 1, "model_state": model_state, "optimizer_state": {}}, path)
    return state


def test_conversion_maps_every_tensor_and_drops_the_loss_parameters(tmp_path: Path) -> None:
    state = fake_resemblyzer(tmp_path / "pretrained.pt")
    out = convert_resemblyzer(tmp_path / "pretrained.pt", tmp_path / "ge2e.safetensors")
    tensors = load_tensors(out)
    assert set(tensors) == set(state)  # no similarity_weight / similarity_bias
    for key, value in state.items():
        assert torch.equal(tensors[key], value)
    encoder = GE2ELSTM()
    load_weights(encoder, tensors, out)
    assert torch.equal(encoder.lstm.weight_hh_l2, state["lstm.weight_hh_l2"])


def test_conversion_refuses_anything_but_tensors(tmp_path: Path) -> None:
    torch.save({"model_state": {"lstm.weight_ih_l0": fractions.Fraction(1, 3)}}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="refused.*fractions.Fraction"):
        read_torch_tensors(tmp_path / "x.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_torch_tensors(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="no such|not found"):
        read_torch_tensors(tmp_path / "missing.pt")


def test_conversion_names_missing_and_misshapen_tensors(tmp_path: Path) -> None:
    state = fake_resemblyzer(tmp_path / "p.pt")
    del state["linear.bias"]
    torch.save({"model_state": state}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="linear.bias"):
        resemblyzer_state_dict(tmp_path / "partial.pt")
    state["linear.bias"] = torch.zeros(128)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"linear.bias has shape \(128,\)"):
        resemblyzer_state_dict(tmp_path / "shape.pt")


def test_cli_converts_and_reports_errors_in_one_line(tmp_path: Path, capsys) -> None:
    from siamkit.cli import main

    fake_resemblyzer(tmp_path / "pretrained.pt")
    out = tmp_path / "w.safetensors"
    assert main(["convert-resemblyzer", str(tmp_path / "pretrained.pt"), str(out)]) == 0
    assert out.is_file()
    assert main(["convert-resemblyzer", str(tmp_path / "nope.pt"), str(out)]) == 1
    error = capsys.readouterr().err
    assert "nope.pt" in error and "Traceback" not in error and len(error.strip().splitlines()) == 1
