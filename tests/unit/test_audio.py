"""Audio input: WAV decoding and its errors, log-mel shape and framing, the FSDD reader's
speaker-disjoint splits and the audio encoder, on tiny synthetic recordings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from siamkit.data.audio import AudioPreprocessor, read_wav, write_wav
from siamkit.data.fsdd import fsdd, list_recordings
from siamkit.encoders import build_encoder
from siamkit.errors import ConfigError, DataError

RATE = 8000


def tone(freq: float, seconds: float = 0.3, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def pre() -> AudioPreprocessor:
    return AudioPreprocessor(sample_rate=RATE, n_mels=16, n_fft=128, hop_length=64, frames=20)


def test_wav_round_trip_keeps_the_signal(tmp_path: Path) -> None:
    signal = tone(440)
    back = read_wav(write_wav(tmp_path / "a.wav", signal, RATE), RATE)
    assert back.shape == signal.shape
    assert np.abs(back - signal).max() < 1e-3  # 16-bit quantisation only


def test_stereo_is_mixed_down_and_other_rates_resampled(tmp_path: Path) -> None:
    import soundfile as sf

    stereo = np.stack([tone(440, rate=16000), tone(440, rate=16000)], axis=1)
    sf.write(str(tmp_path / "s.wav"), stereo, 16000)
    back = read_wav(tmp_path / "s.wav", RATE)
    assert back.ndim == 1 and abs(len(back) - len(tone(440))) <= 2


def test_log_mel_has_fixed_shape_and_centres_short_sounds(pre: AudioPreprocessor) -> None:
    short, long = pre.one(tone(300, 0.1)), pre.one(tone(300, 1.0))
    assert short.shape == long.shape == (1, 16, 20)
    energy = short[0].sum(0)  # per frame: silence (padding) is exactly 0
    assert energy[0] == 0 and energy[-1] == 0 and energy[10] > 0
    assert pre([tone(300), tone(600)]).shape == (2, 1, 16, 20)


def test_log_mel_tells_pitches_apart(pre: AudioPreprocessor) -> None:
    low, high = pre.one(tone(200))[0].mean(1), pre.one(tone(2500))[0].mean(1)
    assert low.argmax() < high.argmax()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.wav", None, "no such file"),
        ("notes.txt", b"hello", "not a WAV file"),
        ("corrupt.wav", b"RIFF\x00\x00garbage", "not a readable WAV"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path: Path, name: str, content, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message) as error:
        read_wav(path)
    assert name in str(error.value)


def test_empty_and_silent_recordings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty.wav: empty"):
        read_wav(write_wav(tmp_path / "empty.wav", np.zeros(0), RATE))
    with pytest.raises(DataError, match="quiet.wav: silent"):
        read_wav(write_wav(tmp_path / "quiet.wav", np.zeros(800), RATE))


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="positive"):
        AudioPreprocessor(frames=0)


@pytest.fixture(scope="module")
def tiny_fsdd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 speakers x 3 digits x 4 takes of tones (pitch = digit, loudness = speaker)."""
    root = tmp_path_factory.mktemp("fsdd")
    (root / "recordings").mkdir()
    for s, speaker in enumerate(["george", "jackson", "lucas"]):
        for digit in range(3):
            for take in range(4):
                signal = (0.3 + 0.2 * s) * tone(300 + 400 * digit, 0.2 + 0.02 * take) * 2
                write_wav(root / "recordings" / f"{digit}_{speaker}_{take}.wav", signal, RATE)
    return root


AUDIO = {"n_mels": 16, "n_fft": 128, "hop_length": 64, "frames": 20}


def test_reader_lists_recordings_by_name(tiny_fsdd: Path) -> None:
    rec = list_recordings(tiny_fsdd)
    assert len(rec.files) == 36 and rec.speaker_names == ["george", "jackson", "lucas"]
    assert rec.digits.bincount().tolist() == [12, 12, 12]


def test_keyword_split_holds_the_speaker_out(tiny_fsdd: Path, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SIAMKIT_CACHE", str(tmp_path))
    splits = fsdd(tiny_fsdd, task="keywords", fold=1, val_fraction=0.25, **AUDIO)
    assert set(splits.test.groups.tolist()) == {1}  # jackson only
    seen = set(splits.train.groups.tolist()) | set(splits.val.groups.tolist())
    assert seen == {0, 2}  # no leakage of the held-out voice
    assert splits.train.items.shape[1:] == (1, 16, 20)
    assert set(splits.test.labels.tolist()) == {0, 1, 2}  # classes: digits
    assert splits.preprocess["name"] == "audio"
    assert any(tmp_path.glob("fsdd-*.safetensors"))  # features cached without pickles
    again = fsdd(tiny_fsdd, task="keywords", fold=1, val_fraction=0.25, **AUDIO)
    assert torch.equal(again.test.items, splits.test.items)


def test_speaker_split_tests_on_an_unseen_pair(tiny_fsdd: Path, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SIAMKIT_CACHE", str(tmp_path))
    splits = fsdd(tiny_fsdd, task="speakers", fold=0, val_fraction=0.25, **AUDIO)
    assert set(splits.test.labels.tolist()) == {0, 1}  # george and jackson: classes = speakers
    assert set(splits.train.labels.tolist()) == set(splits.val.labels.tolist()) == {2}
    with pytest.raises(ConfigError, match="fold"):
        fsdd(tiny_fsdd, task="speakers", fold=3, **AUDIO)


def test_missing_folder_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no FSDD recordings"):
        list_recordings(tmp_path)


def test_audio_encoder_embeds_log_mel_batches() -> None:
    encoder = build_encoder(
        {
            "name": "audio_cnn",
            "params": {"channels": [8, 16], "embedding_dim": 12, "normalize": True},
        }
    )
    out = encoder(torch.randn(3, 1, 16, 20))
    assert out.shape == (3, 12) and torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    with pytest.raises(DataError, match="rank 4"):
        encoder(torch.randn(3, 16, 20))
