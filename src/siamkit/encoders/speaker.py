r"""A GE2E speaker encoder (Wan et al. 2018, "Generalized end-to-end loss for speaker
verification"): 3 LSTM layers over 40 mel bands, the last layer's final hidden state through a
linear map and a ReLU, L2-normalised to a 256-d unit vector.

Pre-trained weights come from the Resemblyzer wheel on PyPI (Apache-2.0, by Resemble AI; the
encoder of the Real-Time Voice Cloning project, trained on thousands of other speakers), converted
once into a safetensors file by ``make speaker-weights``: ``pip download --no-deps
resemblyzer==0.1.4`` (the wheel is downloaded, never installed), its ``resemblyzer/pretrained.pt``
extracted, then::

    siamkit convert-resemblyzer runs/pretrained/resemblyzer/pretrained.pt \
        runs/pretrained/ge2e_speaker.safetensors

and a recipe's ``init_weights`` loads that file (``configs/fsdd-speakers-pretrained.yaml``).
Only tensors are read from the ``.pt`` file (``torch.load(..., weights_only=True)``); a file that
needs more than that is refused.

**Input**: the batches of :class:`siamkit.data.audio.AudioPreprocessor` (B, 1, n_mels, frames)
with the features the weights were trained on: ``sample_rate=16000, n_fft=400, hop_length=160,
scale="power", volume_dbfs=-30`` (mel *power*, 25 ms windows every 10 ms). The preprocessor pads
short recordings with silence (all-zero frames) on both sides; the encoder drops those leading
and trailing zero frames, so the LSTM sees the recording's own frames only (FSDD's takes are
~0.4 s, a quarter of the 1.6 s windows the network was trained on). A recording longer than
``partial_frames`` is cut into windows of that length every ``partial_step`` frames (a last
window covering less than 3/4 of its length is dropped, except when it is the only one), and its
embedding is the normalised mean of the windows' embeddings, as the original implementation does.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_sequence

from siamkit.checkpoint import save_tensors
from siamkit.encoders.base import Encoder
from siamkit.encoders.registry import ENCODERS
from siamkit.errors import CheckpointError, ConfigError

PARTIAL_FRAMES = 160  # 1.6 s windows of 10 ms frames
PARTIAL_STEP = 77  # frames between windows: 1.3 windows a second
MIN_COVERAGE = 0.75


@ENCODERS.register("ge2e_lstm")
class GE2ELSTM(Encoder):
    """LSTM(n_mels -> hidden, ``layers``) -> final hidden state -> linear -> ReLU -> L2 norm;
    (B, 1, n_mels, frames) mel batches -> (B, ``embedding_dim``) unit embeddings.

    ``min_frames`` pads a recording shorter than that with zero frames at its end before the
    LSTM (160 reproduces Resemblyzer's handling of short utterances; the default 0 runs the LSTM
    on the recording's own frames only, which scores better on FSDD: docs/speech.md).
    ``freeze_lstm`` keeps the LSTM's weights fixed in training (only the linear map learns).
    """

    in_channels = 1

    def __init__(
        self,
        n_mels: int = 40,
        hidden_size: int = 256,
        layers: int = 3,
        embedding_dim: int = 256,
        partial_frames: int = PARTIAL_FRAMES,
        partial_step: int = PARTIAL_STEP,
        min_frames: int = 0,
        freeze_lstm: bool = False,
    ) -> None:
        super().__init__(normalize=True)
        if min(n_mels, hidden_size, layers, embedding_dim, partial_frames, partial_step) < 1:
            raise ConfigError(
                "ge2e_lstm: n_mels, hidden_size, layers, embedding_dim, partial_frames and "
                f"partial_step must be positive; got {n_mels}, {hidden_size}, {layers}, "
                f"{embedding_dim}, {partial_frames}, {partial_step}"
            )
        if partial_step > partial_frames or not 0 <= min_frames <= partial_frames:
            raise ConfigError(
                "ge2e_lstm: expected partial_step <= partial_frames and 0 <= min_frames <= "
                f"partial_frames; got {partial_step}, {min_frames}, {partial_frames}"
            )
        self.lstm = nn.LSTM(n_mels, hidden_size, layers, batch_first=True)
        self.linear = nn.Linear(hidden_size, embedding_dim)
        self.n_mels, self.embedding_dim = n_mels, embedding_dim
        self.partial_frames, self.partial_step = partial_frames, partial_step
        self.min_frames = min_frames
        self.lstm.requires_grad_(not freeze_lstm)

    def check_input(self, x: Tensor) -> None:  # noqa: D102
        super().check_input(x)
        if x.shape[2] != self.n_mels:
            raise ConfigError(
                f"ge2e_lstm expects {self.n_mels} mel bands, got shape {tuple(x.shape)} (use the "
                "audio preprocessing with n_mels matching the encoder)"
            )

    def features(self, x: Tensor) -> Tensor:
        frames = x[:, 0].transpose(1, 2)  # (B, T, n_mels)
        windows, owners = [], []
        for i, item in enumerate(frames):
            for window in self.windows(strip_silence(item)):
                windows.append(window)
                owners.append(i)
        embeddings = self.embed_windows(windows)
        owner = torch.tensor(owners, device=x.device)
        total = torch.zeros(len(x), self.embedding_dim, device=x.device, dtype=embeddings.dtype)
        return total.index_add(0, owner, embeddings)  # normalised by Encoder.forward

    def windows(self, item: Tensor) -> list[Tensor]:
        """The windows of one (T, n_mels) recording: itself (zero-padded to ``min_frames``)
        when it fits in one window, else windows of ``partial_frames`` every ``partial_step``."""
        length = len(item)
        if length <= self.partial_frames:
            if length < self.min_frames:
                item = F.pad(item, (0, 0, 0, self.min_frames - length))
            return [item]
        starts = list(range(0, length - self.partial_frames + self.partial_step, self.partial_step))
        last = starts[-1]
        if len(starts) > 1 and (length - last) / self.partial_frames < MIN_COVERAGE:
            starts = starts[:-1]
        return [item[s : s + self.partial_frames] for s in starts]

    def embed_windows(self, windows: list[Tensor]) -> Tensor:
        """Unit embeddings (N, D) of N windows of any lengths (one packed LSTM pass)."""
        _, (hidden, _) = self.lstm(pack_sequence(windows, enforce_sorted=False))
        return F.normalize(F.relu(self.linear(hidden[-1])), dim=1)


def strip_silence(item: Tensor) -> Tensor:
    """``item`` (T, n_mels) without its leading and trailing all-zero frames (the padding of the
    audio preprocessing); an all-zero item keeps one frame."""
    voiced = torch.nonzero(item.abs().sum(1) > 0).squeeze(1)
    if len(voiced) == 0:
        return item[:1]
    return item[int(voiced[0]) : int(voiced[-1]) + 1]


# -- weights from the Resemblyzer wheel ------------------------------------------------------------


def read_torch_tensors(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a PyTorch checkpoint, read with ``weights_only=True`` (tensors and plain
    containers only, nothing executed); the model state dict when it is nested under
    ``model_state`` or ``state_dict``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = [
            line.split(" was not")[0].split("error: ")[-1]
            for line in str(error).splitlines()
            if "Unsupported global" in line
        ]
        if not found:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint") from error
        raise CheckpointError(
            f"{path}: refused: it holds objects other than tensors (checkpoints are read with "
            f"weights_only=True, nothing else is unpickled): {found[0]}"
        ) from error
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({error})") from error
    for key in ("model_state", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return data


def resemblyzer_state_dict(path: str | Path) -> dict[str, Tensor]:
    """:class:`GE2ELSTM` weights from Resemblyzer's ``pretrained.pt`` (its ``lstm.*`` and
    ``linear.*`` tensors; the GE2E loss's ``similarity_weight``/``bias`` are training-only)."""
    tensors = read_torch_tensors(path)
    state = {k: v for k, v in tensors.items() if k.startswith(("lstm.", "linear."))}
    expected = set(GE2ELSTM().state_dict())
    missing = sorted(expected - set(state))
    if missing:
        raise CheckpointError(
            f"{path}: not a GE2E speaker encoder checkpoint: no tensor(s) {missing[:3]}"
            + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        )
    reference = GE2ELSTM().state_dict()
    for key in sorted(expected):
        if state[key].shape != reference[key].shape:
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(state[key].shape)}, expected "
                f"{tuple(reference[key].shape)} (a 3-layer LSTM 40 -> 256, linear 256 -> 256)"
            )
    return {k: state[k].float() for k in sorted(expected)}


def convert_resemblyzer(path: str | Path, out: str | Path) -> Path:
    """Write Resemblyzer's pre-trained speaker encoder as a :class:`GE2ELSTM` safetensors
    file (a recipe's ``init_weights``)."""
    out = Path(out)
    metadata = {"source": f"Resemblyzer {Path(path).name} (Apache-2.0)", "encoder": "ge2e_lstm"}
    save_tensors(out, resemblyzer_state_dict(path), metadata)
    return out
