"""Audio features without torch: WAV files -> fixed-size log-mel spectrograms (numpy), shared by
the training side (:class:`siamkit.data.audio.AudioPreprocessor`, which makes them tensors) and
the torch-free runtime of exported models (:mod:`siamkit.runtime.preprocess`).

A recording is decoded with ``soundfile`` (any WAV/PCM subtype it reads), mixed down to mono,
resampled to ``sample_rate`` when it differs (``librosa.resample``, soxr), and turned into a
log-mel spectrogram with librosa's mel filter bank: ``n_fft``-point frames every ``hop_length``
samples, ``n_mels`` bands up to the Nyquist frequency, ``log(mel power + 1e-5)``. The values are
shifted so that silence is 0 (``(log(p + 1e-5) - log(1e-5)) / 10``), then the spectrogram is
**centre-cropped or zero-padded to ``frames`` frames** (the default 100 frames of 10 ms at 8 kHz
is one second, longer than 99% of the FSDD recordings; longer recordings keep their middle).
The result is a float32 array (1, n_mels, frames): one channel, like a grey image, so 2-D
encoders apply unchanged.

Other settings serve pre-trained encoders fed other features: ``scale="power"`` keeps the mel
power itself (no log; silence and padding are 0); ``scale="db"`` is ``librosa.power_to_db`` of
the mel power (``10 log10``, floored ``80`` dB below the recording's loudest bin, padded at
that floor); ``win_length``, ``fmin`` and ``fmax`` are librosa's STFT window length and mel band
edges; ``volume_dbfs`` first raises a quiet recording's RMS level to that many dB of full scale
(never lowers it). The pre-trained GE2E speaker encoder (:mod:`siamkit.encoders.speaker`) reads
``sample_rate=16000, n_fft=400, hop_length=160, scale="power", volume_dbfs=-30``; Google's speech
embedding (:mod:`siamkit.encoders.speech_embedding`) reads ``sample_rate=16000, n_mels=32,
n_fft=512, win_length=400, hop_length=160, fmin=60, fmax=3800, scale="db"``.

Empty, silent-only, corrupt and non-WAV files raise :class:`DataError` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from siamkit.errors import ConfigError, DataError

AUDIO_SUFFIXES = {".wav"}
FLOOR = 1e-5  # power floor of the log: silence -> log(FLOOR), shifted to 0
SILENCE = 1e-4  # peak amplitude (of full scale 1.0) below which a recording is silent
SCALES = ("log", "power", "db")
DB_FLOOR = 1e-10  # power floor of the "db" scale
TOP_DB = 80.0  # the "db" scale keeps this many dB below a recording's loudest bin


def read_wav(path: str | Path, sample_rate: int | None = None) -> np.ndarray:
    """Decode a WAV file into a mono float32 signal in [-1, 1] at ``sample_rate`` (the file's
    own rate if ``None``). Missing, non-WAV, corrupt, empty and silent files raise DataError."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() not in AUDIO_SUFFIXES:
        raise DataError(f"{path}: not a WAV file (expected a .wav recording)")
    try:
        signal, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as error:
        raise DataError(f"{path}: not a readable WAV file ({error})") from error
    signal = signal.mean(axis=1)
    if signal.size == 0:
        raise DataError(f"{path}: empty recording (no samples)")
    if not np.isfinite(signal).all():
        raise DataError(f"{path}: recording contains NaN or infinite samples")
    if np.abs(signal).max() < SILENCE:
        raise DataError(f"{path}: silent recording (peak below {SILENCE} of full scale)")
    if sample_rate is not None and rate != sample_rate:
        import librosa

        signal = librosa.resample(signal, orig_sr=rate, target_sr=sample_rate)
    return np.ascontiguousarray(signal, dtype=np.float32)


def write_wav(path: str | Path, signal: np.ndarray, sample_rate: int) -> Path:
    """Write a mono float signal in [-1, 1] as 16-bit PCM WAV (tests, docs examples)."""
    import soundfile as sf

    sf.write(str(path), np.asarray(signal, dtype=np.float32), sample_rate, subtype="PCM_16")
    return Path(path)


def raise_volume(signal: np.ndarray, target_dbfs: float) -> np.ndarray:
    """``signal`` scaled up so that its RMS level is ``target_dbfs`` dB of full scale; a signal
    already louder is returned unchanged."""
    rms = float(np.sqrt(np.mean(np.square(signal, dtype=np.float64))))
    change = target_dbfs - 20 * np.log10(max(rms, 1e-12))
    return signal if change <= 0 else (signal * 10 ** (change / 20)).astype(np.float32)


class LogMelFeatures:
    """WAV files (or mono float arrays at ``sample_rate``) -> log-mel arrays (1, n_mels,
    frames); see the module docstring for every step."""

    suffixes = AUDIO_SUFFIXES  # the files it reads (``siamkit index`` looks for these)

    def __init__(
        self,
        sample_rate: int = 8000,
        n_mels: int = 40,
        n_fft: int = 256,
        hop_length: int = 80,
        frames: int = 100,
        scale: str = "log",
        volume_dbfs: float | None = None,
        win_length: int | None = None,
        fmin: float = 0.0,
        fmax: float | None = None,
    ) -> None:
        if scale not in SCALES:
            raise ConfigError(f"audio preprocessing: scale must be one of {SCALES}, got {scale!r}")
        if volume_dbfs is not None and volume_dbfs >= 0:
            raise ConfigError(
                f"audio preprocessing: volume_dbfs must be below 0 (dB of full scale), got "
                f"{volume_dbfs}"
            )
        if min(sample_rate, n_mels, n_fft, hop_length, frames) < 1:
            raise ConfigError(
                "audio preprocessing: sample_rate, n_mels, n_fft, hop_length and frames must be "
                f"positive; got {sample_rate}, {n_mels}, {n_fft}, {hop_length}, {frames}"
            )
        if win_length is not None and not 0 < win_length <= n_fft:
            raise ConfigError(
                f"audio preprocessing: win_length must be in 1..n_fft ({n_fft}), got {win_length}"
            )
        top = sample_rate / 2 if fmax is None else fmax
        if not 0 <= fmin < top <= sample_rate / 2:
            raise ConfigError(
                "audio preprocessing: expected 0 <= fmin < fmax <= sample_rate / 2; got "
                f"fmin {fmin}, fmax {fmax}, sample_rate {sample_rate}"
            )
        self.sample_rate, self.n_mels, self.n_fft = sample_rate, n_mels, n_fft
        self.hop_length, self.frames = hop_length, frames
        self.scale, self.volume_dbfs = scale, volume_dbfs
        self.win_length, self.fmin, self.fmax = win_length, fmin, fmax
        import librosa

        self._bank = librosa.filters.mel(
            sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax
        )

    @property
    def params(self) -> dict[str, Any]:
        """The settings, as keyword arguments of the constructor (``scale``, ``volume_dbfs``,
        ``win_length``, ``fmin`` and ``fmax`` only when not the defaults, so older folders and
        caches keep their keys)."""
        params: dict[str, Any] = {
            "sample_rate": self.sample_rate,
            "n_mels": self.n_mels,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "frames": self.frames,
        }
        if self.scale != "log":
            params["scale"] = self.scale
        optional = {
            "volume_dbfs": self.volume_dbfs,
            "win_length": self.win_length,
            "fmin": self.fmin or None,
            "fmax": self.fmax,
        }
        params.update({key: value for key, value in optional.items() if value is not None})
        return params

    def accepts(self, source: Any) -> bool:
        """Whether ``source`` is an audio input (a ``.wav`` path or a 1-D array)."""
        if isinstance(source, str | Path):
            return Path(source).suffix.lower() in AUDIO_SUFFIXES
        return getattr(source, "ndim", None) == 1  # a numpy array or a torch tensor

    def log_mel(self, signal: np.ndarray) -> np.ndarray:
        """Log-mel spectrogram (n_mels, T) of a mono signal, silence at 0 (not cropped); the mel
        power itself when ``scale`` is ``"power"``, its dB when ``"db"``."""
        import librosa

        signal = np.asarray(signal, dtype=np.float32)
        if signal.ndim != 1 or signal.size == 0:
            raise DataError(f"expected a non-empty mono signal, got shape {signal.shape}")
        if self.volume_dbfs is not None:
            signal = raise_volume(signal, self.volume_dbfs)
        spectrum = librosa.stft(
            signal, n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.win_length
        )
        mel = self._bank @ np.abs(spectrum) ** 2
        if self.scale == "power":
            return mel.astype(np.float32)
        if self.scale == "db":
            return librosa.power_to_db(mel, amin=DB_FLOOR, top_db=TOP_DB).astype(np.float32)
        return ((np.log(mel + FLOOR) - np.log(FLOOR)) / 10).astype(np.float32)

    def fix_frames(self, features: np.ndarray) -> np.ndarray:
        """Centre-crop or pad the time axis to ``frames`` with silence (0, or on the ``db`` scale
        the floor ``80`` dB below the loudest bin, what silent samples would give)."""
        length = features.shape[1]
        if length >= self.frames:
            start = (length - self.frames) // 2
            return features[:, start : start + self.frames]
        before = (self.frames - length) // 2
        silence = float(features.max()) - TOP_DB if self.scale == "db" else 0.0
        widths = ((0, 0), (before, self.frames - length - before))
        return np.pad(features, widths, constant_values=silence)

    def one(self, source: Any) -> np.ndarray:
        """One WAV path or mono array -> (1, n_mels, frames) float32 array."""
        if isinstance(source, str | Path):
            signal = read_wav(source, self.sample_rate)
        elif self.accepts(source):
            signal = np.asarray(source, dtype=np.float32)
        else:
            raise DataError(
                f"audio input: expected a .wav path or a mono array, got {type(source).__name__}"
            )
        return self.fix_frames(self.log_mel(signal))[None]
