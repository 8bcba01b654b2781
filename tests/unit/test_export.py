"""siamkit export -> siamkit.runtime: ONNX embeddings equal eager PyTorch's (<= 1e-4) on real
files for every exportable encoder, with the same decisions at the saved threshold on every pair;
clear errors for what cannot be exported."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import siamkit
from conftest import dataset_or_skip
from siamkit.data.text import read_stsb
from siamkit.encoders import build_encoder
from siamkit.encoders.text import Vocabulary
from siamkit.errors import CheckpointError, ConfigError
from siamkit.export import export_onnx
from siamkit.heads import HEADS
from siamkit.runtime import load_onnx
from siamkit.siamese import SiameseNetwork

TOLERANCE = 1e-4


def face_files(n: int = 12) -> list[Path]:
    root = dataset_or_skip("att_faces")
    return [root / f"s{p}" / f"{i}.pgm" for p in (1, 2, 3) for i in range(1, n // 3 + 1)]


def signature_files(n: int = 8) -> list[Path]:
    root = dataset_or_skip("signatures")
    writer = sorted((root / "genuine").iterdir())[0].name
    files = sorted((root / "genuine" / writer).iterdir())[: n // 2]
    return files + sorted((root / "forged" / writer).iterdir())[: n - len(files)]


def omniglot_pngs(n: int = 8) -> list[bytes]:
    path = dataset_or_skip("omniglot") / "images_evaluation.zip"
    with zipfile.ZipFile(path) as archive:
        names = sorted(m for m in archive.namelist() if m.endswith(".png"))[:n]
        return [archive.read(m) for m in names]


def recordings(n: int = 8) -> list[Path]:
    root = dataset_or_skip("fsdd") / "recordings"
    return [root / f"{digit}_theo_{take}.wav" for digit in (3, 7) for take in range(n // 2)]


def sentences(n: int = 16) -> list[str]:
    pairs = read_stsb("test", dataset_or_skip("stsbenchmark"))
    return pairs.a[: n // 2] + pairs.b[: n // 2]


def save(tmp_path: Path, encoder: dict, head: dict, preprocess: dict | None, **extra) -> Path:
    """A random-weight model folder (seeded) with a threshold at the median pair score."""
    torch.manual_seed(0)
    net = SiameseNetwork(build_encoder(encoder, **extra), HEADS.build(head)).eval()
    for module in net.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return siamkit.save_model(tmp_path / "model", net, encoder, head, preprocess, threshold=0.0)


def check_parity(folder: Path, inputs: list, tmp_path: Path, quantize: str | None = None):
    """Export, embed with both, compare embeddings and every pair's decision."""
    eager = siamkit.load(folder)
    exported = load_onnx(export_onnx(folder, tmp_path / "onnx", quantize))
    want = eager.embed(inputs).numpy()
    got = exported.embed(inputs)
    assert got.shape == want.shape
    diff = float(np.abs(got - want).max())
    # every pair (i, j), i < j, decided at a threshold in the middle of the scores
    i, j = np.triu_indices(len(inputs), 1)
    with torch.no_grad():
        eager_scores = eager.network.head(torch.from_numpy(want[i]), torch.from_numpy(want[j]))
    threshold = float(eager_scores.median())
    onnx_scores = exported.head.score(got[i], got[j])
    assert np.abs(onnx_scores - eager_scores.numpy()).max() <= 10 * TOLERANCE
    near = np.abs(eager_scores.numpy() - threshold) < 1e-5  # a tie cannot decide either way
    same = (onnx_scores >= threshold) == (eager_scores.numpy() >= threshold)
    assert same[~near].all()
    return diff, exported, eager


IMAGE_L = {"name": "image", "params": {"size": [28, 23], "mode": "L"}}
TENSOR_CASES = {
    "conv4_flip_shift": (
        {"name": "conv4", "params": {"input_size": [28, 23], "channels": 16, "blocks": 3,
                                     "embedding_dim": 32, "normalize": True,
                                     "flip_average": True, "shift_average": 2}},
        {"name": "cosine"}, IMAGE_L, face_files,
    ),
    "koch": (
        {"name": "koch", "params": {"input_size": 105, "width": 0.125, "embedding_dim": 64}},
        {"name": "learned", "params": {"embedding_dim": 64}},
        {"name": "image", "params": {"size": [105, 105], "mode": "L", "invert": True}},
        omniglot_pngs,
    ),
    "signet": (
        {"name": "signet", "params": {"width": 0.125, "first_stride": 2, "embedding_dim": 32}},
        {"name": "euclidean"},
        {"name": "signature", "params": {"mean": 0.05, "std": 0.2}}, signature_files,
    ),
    "resnet18": (
        {"name": "resnet18", "params": {"in_channels": 1, "small_input": True,
                                        "embedding_dim": 16}},
        {"name": "euclidean"},
        {"name": "image", "params": {"size": [32, 32], "mode": "L"}}, face_files,
    ),
    "face_resnet": (
        {"name": "face_resnet", "params": {}}, {"name": "cosine"},
        {"name": "image", "params": {"size": [150, 150], "mode": "RGB",
                                     "crop": [0.1, 0.0, 0.0, 0.0], "pad_square": True}},
        face_files,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(TENSOR_CASES))
def test_image_encoders_match_eager_on_real_files(case, tmp_path):
    encoder, head, preprocess, inputs = TENSOR_CASES[case]
    files = inputs()
    folder = save(tmp_path, encoder, head, preprocess)
    diff, exported, _ = check_parity(folder, files, tmp_path)
    assert diff <= TOLERANCE, f"{case}: max |onnx - torch| = {diff}"
    assert exported.config.onnx["opset"] >= 17


def test_mlp_and_conv1d_match_eager(tmp_path):
    rng = np.random.default_rng(0)
    vectors = list(rng.normal(size=(10, 12)).astype(np.float32))
    mlp = {"name": "mlp", "params": {"in_features": 12, "hidden": [16], "embedding_dim": 8}}
    folder = save(tmp_path / "mlp", mlp, {"name": "euclidean"},
                  {"name": "vector", "params": {"dim": 12}})  # fmt: skip
    diff, _, _ = check_parity(folder, vectors, tmp_path / "mlp")
    assert diff <= TOLERANCE
    conv1d = {"name": "conv1d", "params": {"in_channels": 2, "channels": [8, 8],
                                           "embedding_dim": 8}}  # fmt: skip
    folder = save(tmp_path / "c1", conv1d, {"name": "cosine"}, None)
    exported = load_onnx(export_onnx(folder, tmp_path / "c1" / "onnx"))
    signals = rng.normal(size=(5, 2, 50)).astype(np.float32)  # not the export's length (32)
    want = siamkit.load(folder).embed(torch.from_numpy(signals)).numpy()
    assert np.abs(exported.embed(list(signals)) - want).max() <= TOLERANCE


RNN_CASES = [  # cell, pooling, layers, bidirectional, subword buckets
    ("lstm", "mean", 1, False, 0),
    ("gru", "max", 2, False, 0),
    ("lstm", "last", 2, True, 0),
    ("lstm", "max", 1, True, 500),  # as configs/stsb-lstm.yaml
    ("gru", "max_mean", 2, True, 0),
]


@pytest.mark.parametrize(("cell", "pooling", "layers", "bidirectional", "buckets"), RNN_CASES)
def test_text_rnn_matches_eager_on_stsb_sentences(
    cell, pooling, layers, bidirectional, buckets, tmp_path
):
    texts = sentences() + [""]
    vocab = Vocabulary.build(texts[:6])  # most words of the others are unknown
    spec = {"name": "text_rnn", "params": {"embedding_size": 16, "hidden_size": 12,
                                           "cell": cell, "pooling": pooling,
                                           "num_layers": layers, "normalize": True,
                                           "bidirectional": bidirectional,
                                           "subword_buckets": buckets}}  # fmt: skip
    folder = save(tmp_path, spec, {"name": "cosine"}, None, vocabulary=vocab)
    diff, exported, _ = check_parity(folder, texts, tmp_path)
    assert diff <= TOLERANCE
    assert (exported.folder / "vocab.json").is_file()


def test_sentence_transformer_matches_eager_on_stsb(tmp_path):
    pytest.importorskip("sentence_transformers")
    texts = sentences(12) + ["  padded  ", "a " * 300]  # stripped; truncated to max_length
    spec = {"name": "sentence_transformer", "params": {"max_seq_length": 64}}
    folder = save(tmp_path, spec, {"name": "cosine"}, None)
    diff, exported, _ = check_parity(folder, texts, tmp_path)
    assert diff <= TOLERANCE
    assert exported.config.onnx["inputs"][:2] == ["input_ids", "attention_mask"]
    norms = np.linalg.norm(exported.embed(texts[:3]), axis=1)
    assert np.allclose(norms, 1, atol=1e-5)  # MiniLM's Normalize module is in the graph


def test_int8_export_is_smaller_and_close(tmp_path):
    encoder = {"name": "conv4", "params": {"input_size": [28, 23], "blocks": 3,
                                           "embedding_dim": 64, "normalize": True}}  # fmt: skip
    folder = save(tmp_path, encoder, {"name": "cosine"}, IMAGE_L)
    fp32 = export_onnx(folder, tmp_path / "fp32")
    int8 = export_onnx(folder, tmp_path / "int8", quantize="int8")
    ratio = (int8 / "encoder.onnx").stat().st_size / (fp32 / "encoder.onnx").stat().st_size
    assert ratio < 0.5
    files = face_files()
    a, b = load_onnx(fp32).embed(files), load_onnx(int8).embed(files)
    assert 0 < np.abs(a - b).max() < 0.1  # quantised, so different, but near
    assert load_onnx(int8).config.onnx["quantize"] == "int8"


def test_reference_scores_and_decisions_match_eager(tmp_path):
    from siamkit.evaluation.reference_set import score_against_references

    encoder, head, preprocess, inputs = TENSOR_CASES["signet"]
    torch.manual_seed(0)
    net = SiameseNetwork(build_encoder(encoder), HEADS.build(head)).eval()
    extra = {"reference_normalisation": "spread", "reference_thresholds": {"max": -0.5}}
    folder = siamkit.save_model(tmp_path / "m", net, encoder, head, preprocess, -1.0, extra)
    files = inputs()
    exported = load_onnx(export_onnx(folder, tmp_path / "onnx"))
    want = score_against_references(siamkit.load(folder), files[-1], files[:3])
    got = exported.score_references(files[-1], files[:3])
    assert want.keys() == got.keys()
    assert all(abs(want[k] - got[k]) <= 1e-4 for k in want)
    assert exported.reference_threshold(3, "max") == -0.5
    assert exported.reference_threshold(3, "mean") == -1.0
    q = exported.embed(files[:2])
    assert np.allclose(exported.pairwise(q, q), -np.array([[0, 1], [1, 0]]) *
                       np.linalg.norm(q[0] - q[1]), atol=1e-5)  # fmt: skip
    assert exported.decide(np.array([-0.5, -1.5])).tolist() == [True, False]


AUDIO_CASES = {
    "audio_cnn": (
        {"name": "audio_cnn", "params": {"channels": [8, 16], "embedding_dim": 16,
                                         "normalize": True}},
        {"name": "audio", "params": {"sample_rate": 8000, "n_mels": 40, "frames": 100}},
    ),
    "speech_embedding": (
        {"name": "speech_embedding", "params": {"embedding_dim": 16}},
        {"name": "audio", "params": {"sample_rate": 16000, "n_mels": 32, "n_fft": 512,
                                     "win_length": 400, "hop_length": 160, "fmin": 60,
                                     "fmax": 3800, "scale": "db", "frames": 124}},
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(AUDIO_CASES))
def test_audio_encoders_match_eager_on_real_recordings(case, tmp_path):
    encoder, preprocess = AUDIO_CASES[case]
    folder = save(tmp_path, encoder, {"name": "cosine"}, preprocess)
    diff, exported, _ = check_parity(folder, recordings(), tmp_path)
    assert diff <= TOLERANCE, f"{case}: max |onnx - torch| = {diff}"
    assert exported.config.onnx["input_shape"] == [1, preprocess["params"]["n_mels"],
                                                   preprocess["params"]["frames"]]  # fmt: skip


def test_what_cannot_be_exported_is_a_clear_error(tmp_path):
    from siamkit.export import export_graph

    class Custom(torch.nn.Module):
        def forward(self, x):
            return x

    folder = save(tmp_path, {"name": "mlp", "params": {"in_features": 3}}, {"name": "cosine"}, None)
    model = siamkit.load(folder)
    model.network.encoder = Custom()
    with pytest.raises(ConfigError, match="encoder 'mlp' \\(Custom\\) cannot be exported"):
        export_graph(model, tmp_path)
    image = save(tmp_path / "i", {"name": "conv4", "params": {"input_size": 16}},
                 {"name": "cosine"}, None)  # fmt: skip
    with pytest.raises(ConfigError, match="'conv4'.*no image preprocessing"):
        export_onnx(image, tmp_path / "y")
    with pytest.raises(ConfigError, match="quantize: expected one of int8"):
        export_onnx(image, tmp_path / "z", quantize="int4")
    with pytest.raises(CheckpointError, match="not an exported model"):
        load_onnx(image)  # the model folder itself, not its export


def test_export_command_and_torch_free_verify(tmp_path):
    import subprocess
    import sys

    from siamkit.cli.app import main

    encoder, head, preprocess, inputs = TENSOR_CASES["conv4_flip_shift"]
    folder = save(tmp_path, encoder, head, preprocess)
    assert main(["export", str(folder), "--format", "onnx", "--out", str(tmp_path / "o")]) == 0
    assert main(["export", str(folder), "--format", "tflite"]) == 1
    manifest = json.loads((tmp_path / "o" / "config.json").read_text())["extra"]["onnx"]
    assert manifest["export_max_abs_diff"] <= TOLERANCE
    files = inputs()
    code = (
        "import sys, json; from siamkit.runtime.__main__ import main; "
        f"main(['verify', {str(tmp_path / 'o')!r}, {str(files[0])!r}, {str(files[5])!r}]); "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    row, loaded = (json.loads(line) for line in run.stdout.splitlines())
    assert loaded == []  # no torch module was imported
    want = float(siamkit.load(folder).score([files[0]], [files[5]])[0])
    assert abs(row["score"] - want) <= 1e-5
    assert row["decision"] == ("same" if want >= 0.0 else "different")
