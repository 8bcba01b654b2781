"""Omniglot reader and Lake's official runs, on tiny synthetic zips laid out like the real ones."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import siamkit
from siamkit.data.datasets import build_dataset
from siamkit.data.omniglot import (
    BACKGROUND_ZIP,
    EVALUATION_ZIP,
    carve_validation,
    koch_affine,
    read_zip,
    rotate_classes,
)
from siamkit.data.transforms import build_preprocessor
from siamkit.errors import ConfigError, DataError
from siamkit.evaluation.omniglot_runs import is_runs_zip, read_runs, score_runs


def glyph(seed: int, size: int = 105) -> Image.Image:
    """A 1-bit image like Omniglot's: black strokes (0) on white (1)."""
    gen = np.random.default_rng(seed)
    pixels = np.ones((size, size), dtype=bool)
    for _ in range(3):
        r, c = gen.integers(10, size - 30, 2)
        pixels[r : r + 20, c : c + 4] = False
    return Image.fromarray(pixels)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def omniglot_zip(path: Path, root: str, alphabets: int, characters: int, drawers: int) -> Path:
    """``root/Alphabet_a/characterNN/<id>_<drawer>.png``, character c drawn as glyph(c) + noise."""
    with zipfile.ZipFile(path, "w") as archive:
        for a in range(alphabets):
            for c in range(characters):
                for d in range(drawers):
                    member = f"{root}/Alphabet_{a}/character{c + 1:02d}/{a}{c}_{d + 1:02d}.png"
                    archive.writestr(member, png(glyph(100 * a + c)))
    return path


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SIAMKIT_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "omniglot"
    data.mkdir()
    omniglot_zip(data / BACKGROUND_ZIP, "images_background", 4, 3, 2)
    omniglot_zip(data / EVALUATION_ZIP, "images_evaluation", 2, 3, 2)
    return data


def test_read_zip_decodes_inverts_and_caches(folder, tmp_path):
    data = read_zip(folder / BACKGROUND_ZIP, size=28)
    assert data.images.shape == (24, 1, 28, 28) and data.images.dtype == torch.uint8
    assert len(data.characters) == 12 and data.alphabets == [f"Alphabet_{a}" for a in range(4)]
    assert torch.equal(torch.bincount(data.labels), torch.full((12,), 2))
    assert torch.equal(torch.bincount(data.groups), torch.full((4,), 6))
    assert data.images[:, :, 0, 0].max() == 0 and data.images.max() > 200  # strokes bright on 0
    cached = list((tmp_path / "cache" / "omniglot").glob("*-28px-*.safetensors"))
    assert len(cached) == 1
    again = read_zip(folder / BACKGROUND_ZIP, size=28)
    assert torch.equal(again.images, data.images) and again.characters == data.characters
    cached[0].write_bytes(b"damaged")  # a broken cache is decoded again, not trusted
    assert torch.equal(read_zip(folder / BACKGROUND_ZIP, size=28).images, data.images)


def test_saved_preprocessing_reads_raw_pngs_like_training_items(folder, tmp_path):
    splits = build_dataset("omniglot", folder, size=28, val_fraction=0.25)
    pre = build_preprocessor(splits.preprocess)
    raw = tmp_path / "raw.png"
    glyph(0).save(raw)  # Alphabet_0/character01 of the evaluation zip
    item = splits.test.items[splits.test.labels == 0][0].float() / 255
    assert torch.allclose(pre([raw])[0], item, atol=1e-6)


def test_splits_keep_evaluation_alphabets_apart(folder):
    splits = build_dataset("omniglot", folder, size=28, val_fraction=0.25, rotations=True)
    assert splits.val.group_names == [f"Alphabet_{a}" for a in range(4)]
    train_groups, val_groups = set(splits.train.groups.tolist()), set(splits.val.groups.tolist())
    assert len(val_groups) == 1 and not train_groups & val_groups
    assert len(splits.train.class_ids()) == 4 * 9  # 9 characters x 4 rotations
    assert len(splits.test) == 12 and splits.test.group_names == ["Alphabet_0", "Alphabet_1"]
    by_char = build_dataset("omniglot", folder, size=28, validation="characters", val_fraction=0.5)
    assert not set(by_char.train.labels.tolist()) & set(by_char.val.labels.tolist())


def test_rotate_classes_makes_new_classes_in_the_same_alphabet(folder):
    data = read_zip(folder / EVALUATION_ZIP, size=28).to_labelled()
    rotated = rotate_classes(data)
    n = len(data)
    assert len(rotated) == 4 * n and len(rotated.class_ids()) == 4 * len(data.class_ids())
    assert torch.equal(rotated.items[n : 2 * n], torch.rot90(data.items, 1, dims=(-2, -1)))
    assert torch.equal(rotated.labels[n : 2 * n], data.labels + 6)
    assert torch.equal(rotated.groups[3 * n :], data.groups)
    assert rotated.classes[6].endswith("@90")


def test_bad_input_gives_clear_errors(folder, tmp_path):
    with pytest.raises(ConfigError, match="expected one of"):
        read_zip(folder / BACKGROUND_ZIP, size=30)
    with pytest.raises(DataError, match="not found"):
        read_zip(tmp_path / "nope.zip")
    flat = tmp_path / "flat.zip"
    with zipfile.ZipFile(flat, "w") as archive:
        archive.writestr("a.png", png(glyph(0)))
    with pytest.raises(DataError, match="Alphabet"):
        read_zip(flat, cache=False)
    data = read_zip(folder / BACKGROUND_ZIP).to_labelled()
    with pytest.raises(ConfigError, match="alphabets"):
        carve_validation(data, "drawers", 0.2, 0)
    with pytest.raises(ConfigError, match="val_fraction"):
        carve_validation(data, "alphabets", 1.5, 0)


def runs_zip(path: Path, runs: int = 2, ways: int = 3, shuffle: bool = True) -> Path:
    """Lake's layout: runNN/training/classNN.png, runNN/test/itemNN.png, class_labels.txt."""
    with zipfile.ZipFile(path, "w") as archive:
        for r in range(1, runs + 1):
            lines = []
            for i in range(1, ways + 1):
                c = (i % ways) + 1 if shuffle else i  # item i belongs to class c
                archive.writestr(f"run{r:02d}/test/item{i:02d}.png", png(glyph(10 * r + c)))
                run = f"run{r:02d}"
                lines.append(f"{run}/test/item{i:02d}.png {run}/training/class{c:02d}.png")
            for c in range(1, ways + 1):
                archive.writestr(f"run{r:02d}/training/class{c:02d}.png", png(glyph(10 * r + c)))
            archive.writestr(f"run{r:02d}/class_labels.txt", "\n".join(lines) + "\n")
    return path


def pixels(images: list[Image.Image]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.asarray(i, np.float32)).flatten() for i in images])


def test_runs_are_scored_like_lake(tmp_path):
    path = runs_zip(tmp_path / "all_runs.zip")
    runs = read_runs(path)
    assert [r.name for r in runs] == ["run01", "run02"]
    assert torch.equal(runs[0].answers, torch.tensor([1, 2, 0]))  # item01 -> class02 ...

    def nearest(q, r):
        return -torch.cdist(pixels(q), pixels(r))

    perfect = score_runs(nearest, runs)
    assert perfect.mean == 1.0 and perfect.trials == 6
    assert score_runs(lambda q, r: torch.cdist(pixels(q), pixels(r)), runs).mean == 0.0
    with pytest.raises(DataError, match="scores"):
        score_runs(lambda q, r: torch.zeros(2, 2), runs)


def test_runs_reader_rejects_other_files(tmp_path):
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("x.txt", "hello")
    assert not is_runs_zip(other) and is_runs_zip(runs_zip(tmp_path / "runs.zip"))
    with pytest.raises(DataError, match="class_labels.txt"):
        read_runs(other)
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("run01/class_labels.txt", "only-one-field\n")
    with pytest.raises(DataError, match="line 1"):
        read_runs(bad)


def test_eval_command_scores_a_saved_model_on_the_runs(tmp_path, capsys):
    from siamkit.cli import main
    from siamkit.encoders import build_encoder
    from siamkit.heads import EuclideanHead
    from siamkit.model import save_model
    from siamkit.siamese import SiameseNetwork

    spec = {"name": "conv4", "params": {"input_size": 28, "channels": 8}}
    torch.manual_seed(0)
    network = SiameseNetwork(build_encoder(spec), EuclideanHead())
    pre = {"name": "image", "params": {"size": [28, 28], "mode": "L", "invert": True}}
    folder = save_model(tmp_path / "model", network, spec, {"name": "euclidean"}, pre)
    path = runs_zip(tmp_path / "all_runs.zip", shuffle=False)
    assert main(["eval", str(folder), str(path)]) == 0
    printed = capsys.readouterr().out
    # test items are copies of their training images: any deterministic encoder gets them all
    assert "1.0000 ± 0.0000" in printed and "run02" in printed


def test_koch_affine_distorts_uint8_items_in_place_of_shape(folder):
    item = read_zip(folder / EVALUATION_ZIP, size=28).images[0]
    torch.manual_seed(0)
    out = koch_affine()(item)
    assert out.shape == item.shape and out.dtype == torch.uint8
    assert not torch.equal(out, item)


def test_runs_report_names_the_test_time_augmentation_of_the_model(tmp_path):
    from siamkit.encoders import build_encoder
    from siamkit.evaluation.omniglot_runs import augmentation
    from siamkit.heads import HEADS
    from siamkit.siamese import SiameseNetwork

    spec = {"name": "conv4", "params": {"input_size": 16, "channels": 8, "shift_average": 2}}
    net = SiameseNetwork(build_encoder(spec), HEADS.build({"name": "euclidean"}))
    shifted = siamkit.load(siamkit.save_model(tmp_path / "a", net, spec, {"name": "euclidean"}))
    assert augmentation(shifted) == "test-time augmentation: shift_average 2"
    plain_spec = {"name": "conv4", "params": {"input_size": 16, "channels": 8}}
    net = SiameseNetwork(build_encoder(plain_spec), HEADS.build({"name": "euclidean"}))
    plain = siamkit.load(siamkit.save_model(tmp_path / "b", net, plain_spec, {"name": "euclidean"}))
    assert augmentation(plain) == "no test-time augmentation"
