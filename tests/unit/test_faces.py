"""Faces: the AT&T reader (on a small synthetic tree), face metrics, and the gallery CLI flow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import siamkit
from siamkit.cli import main
from siamkit.data import build_dataset
from siamkit.data.faces import people_folds
from siamkit.data.transforms import build_preprocessor
from siamkit.encoders import build_encoder
from siamkit.errors import ConfigError, DataError
from siamkit.evaluation.faces_eval import (
    closed_set,
    face_metrics,
    is_att_faces,
    open_set,
    verification_metrics,
)
from siamkit.gallery.calibration import threshold_at_far
from siamkit.gallery.images import cosine_threshold
from siamkit.heads import HEADS
from siamkit.siamese import SiameseNetwork

SIZE = [28, 24]


def write_faces(root, people=10, images=4, seed=0):
    """An AT&T-like tree: ``sN/Y.pgm``, 92x112 grey, each person a distinct random pattern."""
    rng = np.random.default_rng(seed)
    for p in range(1, people + 1):
        base = rng.integers(0, 255, (112, 92))
        (root / f"s{p}").mkdir(parents=True)
        for i in range(1, images + 1):
            noisy = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(root / f"s{p}" / f"{i}.pgm")
    return root


def test_reader_splits_by_person_and_matches_the_saved_preprocessing(tmp_path):
    root = write_faces(tmp_path / "att")
    splits = build_dataset("att_faces", root, size=SIZE, test_people=3, val_people=2, fold=1)
    parts = [set(s.labels.tolist()) for s in (splits.train, splits.val, splits.test)]
    assert [len(p) for p in parts] == [5, 2, 3]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert splits.train.items.shape[1:] == (1, *SIZE) and splits.train.items.dtype == torch.uint8
    # a raw .pgm through the saved preprocessing equals the training item
    pre = build_preprocessor(splits.preprocess)
    i = 0
    person = splits.train.classes[int(splits.train.labels[i])]
    first = sorted((root / person).iterdir())[0]
    raw = pre([str(first)])[0]
    assert torch.allclose(raw, splits.train.items[i].float() / 255, atol=1 / 255)


def test_folds_are_seeded_and_rotate_the_test_people():
    train, val, test = people_folds(40, 12, 4, fold=0, seed=0)
    assert (len(train), len(val), len(test)) == (24, 4, 12)
    assert torch.equal(test, people_folds(40, 12, 4, fold=0, seed=0)[2])
    tests = [set(people_folds(40, 12, 4, fold=f, seed=0)[2].tolist()) for f in range(3)]
    assert not (tests[0] & tests[1] or tests[1] & tests[2] or tests[0] & tests[2])
    assert tests[0] != set(people_folds(40, 12, 4, fold=0, seed=1)[2].tolist())


def test_reader_errors_name_the_problem(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="expected the AT&T layout"):
        build_dataset("att_faces", tmp_path / "empty")
    with pytest.raises(DataError, match="not found"):
        build_dataset("att_faces", tmp_path / "missing")
    with pytest.raises(ConfigError, match="fewer than 2"):
        people_folds(10, 6, 3, fold=0, seed=0)
    with pytest.raises(ConfigError, match="size"):
        build_dataset("att_faces", write_faces(tmp_path / "att"), size=[4])
    assert is_att_faces(tmp_path / "att") and not is_att_faces(tmp_path / "empty")


def clusters(people=8, per=5, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((people, 16))
    labels = np.repeat(np.arange(people), per)
    return centres[labels] + noise * rng.standard_normal((len(labels), 16)), labels


def test_face_metrics_are_perfect_on_separable_people_and_poor_on_noise():
    x, y = clusters()
    good = face_metrics(x, y, trials=3, threshold=0.9)
    assert good["eer"] == 0 and good["tar_at_far_1pct"] == 1
    assert good["rank1"] == good["rank5"] == 1 and good["dir_at_far_1pct"] == 1
    assert good["dir_at_threshold"] == 1 and good["far_at_threshold"] == 0
    noise = np.random.default_rng(1).standard_normal(x.shape)
    assert verification_metrics(noise, y)["eer"] > 0.3
    assert closed_set(noise, y, trials=3)["rank1"] < 0.5
    assert open_set(noise, y, trials=3)["dir_at_far_1pct"] < 0.5


def test_threshold_at_far_accepts_at_most_that_fraction():
    impostors = np.linspace(0, 1, 200, dtype=np.float32)  # scores as the gallery gives them
    t = np.float32(threshold_at_far(impostors, 0.01))
    assert (impostors >= t).sum() == 2 and (impostors >= np.nextafter(t, np.float32(-1))).sum() == 3
    assert (np.arange(10.0) >= threshold_at_far(np.arange(10.0), 0.01)).sum() == 0


def tiny_model(path, dim=8, threshold=0.5, extra=None):
    torch.manual_seed(0)
    encoder = {"name": "conv4", "params": {"input_size": SIZE, "channels": 8,
                                           "embedding_dim": dim, "normalize": True}}  # fmt: skip
    net = SiameseNetwork(build_encoder(encoder), HEADS.build({"name": "cosine"})).eval()
    pre = {"name": "image", "params": {"size": SIZE, "mode": "L"}}
    return siamkit.save_model(path, net, encoder, {"name": "cosine"}, pre, threshold, extra)


@pytest.mark.parametrize("backend", ["faces.gallery", "faces.db"])
def test_enroll_identify_remove_via_the_cli(tmp_path, capsys, backend):
    faces = write_faces(tmp_path / "att", people=3, images=2)
    model, gallery = str(tiny_model(tmp_path / "m")), str(tmp_path / backend)
    assert main(["identify", model, gallery, str(faces / "s1/1.pgm")]) == 1
    assert "is empty" in capsys.readouterr().err
    for p in (1, 2):
        assert main(["enroll", model, gallery, "--name", f"person{p}", str(faces / f"s{p}/1.pgm"),
                     str(faces / f"s{p}/2.pgm"), "--mean"]) == 0  # fmt: skip
    assert main(["people", gallery]) == 0
    assert "person1" in capsys.readouterr().out
    assert main(["identify", model, gallery, str(faces / "s2/1.pgm"), "-k", "2"]) == 0
    assert "identity: person2" in capsys.readouterr().out
    # an untrained net scores different faces high: a strict threshold still says "unknown"
    assert (
        main(["identify", model, gallery, str(faces / "s3/1.pgm"), "--threshold", "0.99999"]) == 0
    )
    assert "identity: unknown" in capsys.readouterr().out
    assert main(["enroll", model, gallery, "--name", "person1", str(faces / "s3/1.pgm")]) == 1
    assert "already enrolled" in capsys.readouterr().err
    assert main(["remove", gallery, "--name", "person1"]) == 0
    assert "removed 'person1': 3 templates" in capsys.readouterr().out
    assert main(["identify", model, gallery, str(faces / "s1/1.pgm"), "-k", "5"]) == 0
    assert "person1" not in capsys.readouterr().out


def test_cli_bad_inputs_give_one_line_errors(tmp_path, capsys):
    faces = write_faces(tmp_path / "att", people=2, images=1)
    model, gallery = str(tiny_model(tmp_path / "m")), str(tmp_path / "g")
    (tmp_path / "broken.pgm").write_bytes(b"P5 not really an image")
    assert main(["enroll", model, gallery, "--name", "x", str(tmp_path / "broken.pgm")]) == 1
    assert "broken.pgm: not a readable image" in capsys.readouterr().err
    assert main(["enroll", model, gallery, "--name", "a", str(faces / "s1/1.pgm")]) == 0
    other = str(tiny_model(tmp_path / "m6", dim=6))
    assert main(["identify", other, gallery, str(faces / "s2/1.pgm")]) == 1
    assert "holds 8-d vectors; got 6-d" in capsys.readouterr().err
    assert main(["remove", gallery, "--name", "nobody"]) == 1
    assert "not enrolled" in capsys.readouterr().err


def test_index_then_search_via_the_cli(tmp_path, capsys, monkeypatch):
    faces = write_faces(tmp_path / "att", people=3, images=2)
    model, gallery = str(tiny_model(tmp_path / "m")), str(tmp_path / "images.gallery")
    assert main(["index", model, str(faces), "--gallery", gallery]) == 0
    assert "indexed 6 files (0 already there)" in capsys.readouterr().out
    (faces / "s4").mkdir()
    Image.open(faces / "s1/1.pgm").save(faces / "s4/1.pgm")
    assert main(["index", model, str(faces), "--gallery", gallery]) == 0
    assert "indexed 1 files (6 already there)" in capsys.readouterr().out
    assert main(["search", model, gallery, str(faces / "s2/2.pgm"), "-k", "3"]) == 0
    assert "s2/2.pgm" in capsys.readouterr().out
    from siamkit.gallery import Gallery
    from siamkit.gallery.images import search_files

    with Gallery.open(gallery) as g:
        top = search_files(siamkit.load(model), g, [faces / "s2/2.pgm"], k=3)[0]
    assert top[0].metadata == {"source": str(faces / "s2/2.pgm"), "label": "s2"}
    assert top[0].score == pytest.approx(1.0, abs=1e-5)
    monkeypatch.chdir(tmp_path / "m")  # without --gallery: ./<folder name>.gallery
    assert main(["index", model, str(faces)]) == 0
    assert (tmp_path / "m" / "att.gallery" / "items.sqlite").is_file()


def test_gallery_threshold_is_calibrated_on_the_validation_people(tmp_path, capsys):
    root = write_faces(tmp_path / "att", people=8, images=3)
    params = {"size": SIZE, "test_people": 2, "val_people": 3}
    recipe = {"data": {"name": "att_faces", "params": params}, "data_dir": str(root)}
    model = tiny_model(tmp_path / "m", threshold=0.5, extra={"recipe": recipe})
    assert cosine_threshold(siamkit.load(model)) == 0.5  # the pair threshold until calibrated
    assert main(["gallery-threshold", str(model), "--far", "0.0"]) == 0
    assert "of 27 impostor pairs of 3 validation people" in " ".join(
        capsys.readouterr().out.split()
    )
    t = cosine_threshold(siamkit.load(model))
    # at FAR 0 no impostor pair of the validation people reaches it
    from siamkit.evaluation.embedding import embed_all
    from siamkit.gallery.calibration import impostor_cosines

    val = build_dataset("att_faces", root, **params).val
    scores = impostor_cosines(embed_all(siamkit.load(model).network, val.items), val.labels)
    assert len(scores) == 27 and t > float(scores.max())
    assert t == float(np.nextafter(scores.max(), np.float32(2)))
    assert main(["gallery-threshold", str(tiny_model(tmp_path / "bare"))]) == 1
    assert "no training recipe" in capsys.readouterr().err


def test_conv4_flip_average_makes_eval_embeddings_mirror_invariant():
    torch.manual_seed(0)
    spec = {"in_channels": 1, "input_size": SIZE, "blocks": 3, "channels": 8, "embedding_dim": 16}
    plain = build_encoder({"name": "conv4", "params": spec}).eval()
    flip = build_encoder({"name": "conv4", "params": {**spec, "flip_average": True}})
    flip.load_state_dict(plain.state_dict())
    flip.eval()
    x = torch.rand(3, 1, *SIZE)
    with torch.no_grad():
        assert not torch.allclose(plain(x), plain(x.flip(-1)), atol=1e-4)
        assert torch.allclose(flip(x), flip(x.flip(-1)), atol=1e-5)
        assert torch.allclose(flip(x), (plain(x) + plain(x.flip(-1))) / 2, atol=1e-5)
        flip.train()  # training sees the images as given (augmentation flips them at random)
        assert not torch.allclose(flip(x), flip(x.flip(-1)), atol=1e-4)


def test_conv4_shift_average_is_eval_only_and_averages_shifted_copies():
    from siamkit.encoders.conv import shifted

    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert shifted(x, 1, 0)[0, 0, 0].tolist() == [0.0, 0.0, 1.0, 2.0]
    assert shifted(x, 0, -1)[0, 0, :, 0].tolist() == [4.0, 8.0, 12.0, 0.0]
    torch.manual_seed(0)
    spec = {"input_size": 16, "channels": 8, "embedding_dim": 6}
    plain = build_encoder({"name": "conv4", "params": spec}).eval()
    tta = build_encoder({"name": "conv4", "params": {**spec, "shift_average": 2}})
    tta.load_state_dict(plain.state_dict())
    images = torch.rand(3, 1, 16, 16)
    views = [images] + [shifted(images, dx, dy) for dx, dy in ((2, 0), (-2, 0), (0, 2), (0, -2))]
    with torch.no_grad():
        expected = torch.stack([plain(v) for v in views]).mean(0)
        torch.testing.assert_close(tta.eval()(images), expected)
        assert torch.equal(tta.train()(images), plain.train()(images))
    with pytest.raises(ConfigError, match="shift_average"):
        build_encoder({"name": "conv4", "params": {**spec, "shift_average": -1}})
