"""The runtime's numpy preprocessing equals the torch preprocessors on real files, and the
runtime's heads equal siamkit.heads; importing siamkit.runtime never imports torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import dataset_or_skip
from siamkit.data.signature_preprocess import SignaturePreprocess
from siamkit.data.transforms import build_preprocessor
from siamkit.errors import DataError
from siamkit.heads import HEADS
from siamkit.runtime.heads import NumpyHead
from siamkit.runtime.preprocess import build_preprocess

IMAGE_SPECS = [
    {"name": "image", "params": {"size": [28, 23], "mode": "L"}},
    {"name": "image", "params": {"size": [105, 105], "mode": "L", "invert": True}},
    {"name": "image", "params": {"size": [150, 150], "mode": "RGB", "crop": [0.1, 0.05, 0.0, 0.02],
                                 "pad_square": True}},
]  # fmt: skip


@pytest.mark.parametrize("spec", IMAGE_SPECS, ids=["faces", "inverted", "rgb_framed"])
def test_image_preprocessing_equals_torch_on_faces(spec):
    root = dataset_or_skip("att_faces")
    files = [root / "s7" / f"{i}.pgm" for i in range(1, 6)]
    torch_pre, numpy_pre = build_preprocessor(spec), build_preprocess(spec)
    for file in files:
        want = torch_pre([file])[0].numpy()
        got = numpy_pre.one(file)
        assert got.dtype == np.float32 and np.array_equal(got, want), file
    png = (files[0]).read_bytes()
    assert np.array_equal(numpy_pre.one(png), torch_pre([png])[0].numpy())


def test_signature_preprocessing_equals_torch_on_real_signatures():
    root = dataset_or_skip("signatures")
    files = (
        sorted((root / "genuine").rglob("*.png"))[::60]
        + sorted((root / "forged").rglob("*.png"))[::60]
    )
    assert len(files) >= 10
    params = {"size": [155, 220], "canvas": [310, 440], "mean": 0.06, "std": 0.15}
    eager = SignaturePreprocess(**params)
    runtime = build_preprocess({"name": "signature", "params": params})
    for file in files:
        assert np.array_equal(runtime.one(file), eager([file])[0].numpy()), file
    with pytest.raises(DataError, match="dark strokes"):
        runtime.one(np.full((40, 40), 255, dtype=np.uint8))


def test_vector_preprocessing_and_errors(tmp_path):
    spec = {"name": "vector", "params": {"dim": 4}}
    np.save(tmp_path / "v.npy", np.arange(4.0))
    runtime, eager = build_preprocess(spec), build_preprocessor(spec)
    for source in (tmp_path / "v.npy", [1, 2, 3, 4]):
        assert np.array_equal(runtime.one(source), eager([source])[0].numpy())
    with pytest.raises(DataError, match="expected a vector of 4 values, got 3"):
        runtime.one([1, 2, 3])
    with pytest.raises(DataError, match="no such file"):
        build_preprocess(IMAGE_SPECS[0]).one(tmp_path / "missing.png")


@pytest.mark.parametrize("name", ["euclidean", "cosine", "learned"])
def test_numpy_heads_equal_torch_heads(name):
    torch.manual_seed(0)
    head = HEADS.build({"name": name, "params": {"embedding_dim": 8} if name == "learned" else {}})
    weights = None
    if name == "learned":
        weights = {"weight": head.linear.weight.detach().reshape(-1).tolist(),
                   "bias": float(head.linear.bias.detach()[0])}  # fmt: skip
    a, b = torch.randn(6, 8), torch.randn(5, 8)
    runtime = NumpyHead(name, weights)
    with torch.no_grad():
        assert np.allclose(
            runtime.score(a.numpy(), a.flip(0).numpy()), head(a, a.flip(0)), atol=1e-6
        )
        assert np.allclose(runtime.pairwise(a.numpy(), b.numpy()), head.pairwise(a, b), atol=1e-5)


def test_importing_the_runtime_never_imports_torch():
    code = (
        "import sys, siamkit.runtime, siamkit.runtime.__main__; "
        "print([m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
