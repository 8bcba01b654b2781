"""dlib's face ResNet, the face-api weight import, image framing and a recipe's init_weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import siamkit
from siamkit.checkpoint import save_tensors
from siamkit.data.transforms import ImagePreprocessor
from siamkit.encoders import build_encoder
from siamkit.encoders.face_api import MANIFEST, face_api_state_dict
from siamkit.encoders.face_resnet import STAGES, FaceResNet
from siamkit.errors import CheckpointError, ConfigError, DataError
from siamkit.recipe import parse_recipe, run_recipe


def write_face_api_folder(folder, net: FaceResNet) -> None:
    """Export ``net`` in face-api's TF.js layout: scale layers of 1/0 around the folded convs,
    filters as (kh, kw, in, out), ``fc`` as (256, 128); the stem's filters uint8-quantised."""
    entries, blobs = [], []

    def add(name, array, quantize=False):
        array = np.ascontiguousarray(array, dtype=np.float32)
        entry = {"name": name, "shape": list(array.shape), "dtype": "float32"}
        if quantize:
            low, scale = float(array.min()), float(array.max() - array.min()) / 255
            codes = np.round((array - low) / scale).astype(np.uint8)
            entry["quantization"] = {"dtype": "uint8", "scale": scale, "min": low}
            blobs.append(codes.tobytes())
        else:
            blobs.append(array.tobytes())
        entries.append(entry)

    def add_conv(prefix, conv, quantize=False):
        add(f"{prefix}/conv/filters", conv.weight.detach().permute(2, 3, 1, 0).numpy(), quantize)
        add(f"{prefix}/conv/bias", conv.bias.detach().numpy())
        add(f"{prefix}/scale/weights", np.ones(conv.out_channels))
        add(f"{prefix}/scale/biases", np.zeros(conv.out_channels))

    add_conv("conv32_down", net.stem, quantize=True)
    for name, _, _ in STAGES:
        add_conv(f"{name}/conv1", net.blocks[name].conv1)
        add_conv(f"{name}/conv2", net.blocks[name].conv2)
    add("fc", net.fc.weight.detach().T.numpy())
    (folder / "weights.bin").write_bytes(b"".join(blobs))
    manifest = [{"paths": ["weights.bin"], "weights": entries}]
    (folder / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture
def face_api_folder(tmp_path):
    torch.manual_seed(0)
    net = FaceResNet().eval()
    write_face_api_folder(tmp_path, net)
    return tmp_path, net


def test_face_resnet_shapes_grey_input_and_small_image_error():
    net = build_encoder({"name": "face_resnet", "params": {"in_channels": 1}}).eval()
    for size in [(150, 150), (131, 131), (160, 137)]:  # odd sizes exercise the shortcut padding
        assert net(torch.rand(2, 1, *size)).shape == (2, 128)
    grey = torch.rand(1, 1, 131, 140)
    rgb = FaceResNet(in_channels=3).eval()
    rgb.load_state_dict(net.state_dict())
    torch.testing.assert_close(net(grey), rgb(grey.expand(-1, 3, -1, -1)))
    with pytest.raises(DataError, match="at least 131x131"):
        net(torch.rand(1, 1, 130, 200))
    with pytest.raises(ConfigError, match="in_channels"):
        FaceResNet(in_channels=2)


def test_face_api_import_reproduces_the_exported_network(face_api_folder):
    folder, net = face_api_folder
    imported = FaceResNet().eval()
    imported.load_state_dict(face_api_state_dict(folder))
    x = torch.rand(3, 3, 150, 150)
    with torch.no_grad():
        cosines = torch.nn.functional.cosine_similarity(net(x), imported(x))
    assert cosines.min() > 0.999  # only the stem's 8-bit quantisation differs
    for name, _, _ in STAGES:
        torch.testing.assert_close(
            imported.blocks[name].conv2.weight, net.blocks[name].conv2.weight
        )


def test_face_api_import_errors_name_the_file(face_api_folder, tmp_path):
    folder, _ = face_api_folder
    with pytest.raises(CheckpointError, match="no face_recognition_model"):
        face_api_state_dict(tmp_path / "missing")
    data = (folder / "weights.bin").read_bytes()
    (folder / "weights.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="ends inside"):
        face_api_state_dict(folder)
    (folder / MANIFEST).write_text("[{}]")
    with pytest.raises(CheckpointError, match="not a readable"):
        face_api_state_dict(folder)


def test_framing_crops_fractions_and_pads_to_a_centred_square(tmp_path):
    pixels = np.zeros((100, 60), dtype=np.uint8)
    pixels[:20] = 255  # a white band on top, to be cropped away
    path = tmp_path / "face.png"
    Image.fromarray(pixels).save(path)
    framed = ImagePreprocessor((40, 40), "L", crop=(0.2, 0.0, 0.0, 0.0), pad_square=True)
    out = framed([path])
    assert out.shape == (1, 1, 40, 40) and out.max() == 0  # band gone, black padding
    tensor = framed.frame(torch.ones(1, 100, 60))
    assert tensor.shape == (1, 80, 80)
    assert tensor[0, :, :10].sum() == 0 and tensor[0, :, 10:70].min() == 1
    rebuilt = ImagePreprocessor(**framed.spec.params)
    assert torch.equal(rebuilt([path]), out)
    assert "crop" not in ImagePreprocessor((8, 8)).spec.params  # old specs stay unchanged
    with pytest.raises(ConfigError, match="crop"):
        ImagePreprocessor((8, 8), crop=(0.6, 0, 0, 0))


def test_recipe_init_weights_start_training_from_the_file(tmp_path):
    spec = {"name": "conv4", "params": {"in_channels": 1, "input_size": 16, "channels": 8,
                                        "blocks": 2}}  # fmt: skip
    torch.manual_seed(1)
    start = build_encoder(spec)
    save_tensors(tmp_path / "init.safetensors", start.state_dict())
    raw = {
        "data": {"name": "digits", "params": {"size": 16}},
        "encoder": spec,
        "init_weights": str(tmp_path / "init.safetensors"),
        "batches": {"batch_size": 20, "m_per_class": 2, "batches_per_epoch": 1},
        "training": {"epochs": 1, "lr": 1e-12},
        "evaluation": {"val_pairs": 20, "test_pairs": 20, "plots": False},
    }
    result = run_recipe(parse_recipe(raw, "test"), tmp_path / "run", show_progress=False)
    trained = siamkit.load(result.model_dir).network.encoder.state_dict()
    for name, value in start.state_dict().items():
        if value.is_floating_point() and "running" not in name:
            torch.testing.assert_close(trained[name], value, rtol=1e-6, atol=1e-6)
    bad = parse_recipe({**raw, "init_weights": str(tmp_path / "nope.safetensors")}, "test")
    with pytest.raises(CheckpointError, match="nope.safetensors"):
        run_recipe(bad, tmp_path / "bad", show_progress=False)
