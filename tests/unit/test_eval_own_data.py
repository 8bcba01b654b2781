"""``siamkit eval MODEL FOLDER`` on the user's own folders (synthetic data, untrained models: the
point is which writers / people / classes are evaluated and which are left out as seen)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import siamkit
from siamkit.cli import main
from siamkit.data.datasets import build_dataset
from siamkit.data.signatures import read_signature_tree, writer_folds
from siamkit.errors import DataError
from siamkit.evaluation.seen_classes import recorded_classes, seen_classes
from siamkit.evaluation.tasks import evaluate_path
from unit.test_faces import SIZE, tiny_model, write_faces
from unit.test_signatures import RECIPE, WRITERS, write_tree


def flat(text: str) -> str:
    """Console output on one line (the console wraps at 80 columns)."""
    return " ".join(text.split())


def copy_classes(source: Path, target: Path, names: dict[str, str], kinds=("",)) -> Path:
    """Copy class folders ``source/<kind>/<old>`` to ``target/<kind>/<new>``."""
    for kind in kinds:
        for old, new in names.items():
            shutil.copytree(source / kind / old, target / kind / new)
    return target


# --- signatures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signatures(tmp_path_factory):
    """A synthetic tree of 6 writers and an (untrained) model saved with its writer split."""
    from siamkit.evaluation.signature_eval import TrainedFold, save_signature_model
    from siamkit.recipe import build_network, parse_recipe
    from siamkit.training import History

    root = tmp_path_factory.mktemp("sig")
    tree = write_tree(root / "tree")
    split = writer_folds(WRITERS, n_folds=3, n_val=1, seed=0)[0]  # 3 train, 1 val, 2 test
    recipe = parse_recipe(RECIPE)
    torch.manual_seed(0)
    network, head = build_network(recipe)
    fold = TrainedFold(network.eval(), head, History(), 0.0)
    thresholds = {k: {"mean": -1.0, "max": -0.5, "centroid": -0.7} for k in (1, 3, 5)}
    model = save_signature_model(root / "model", fold, recipe, thresholds, split)
    return tree, split, model


def test_renamed_writers_are_evaluated_and_trained_ones_left_out(signatures, tmp_path, capsys):
    tree, split, model_dir = signatures
    renamed = {w: f"bank_{w}" for w in split.test + split.train[:1]}  # any writer, new name
    kept = {w: w for w in [split.train[1], split.val[0]]}  # trained-on names kept
    bank = copy_classes(tree, tmp_path / "bank", renamed | kept, ("genuine", "forged"))
    report = evaluate_path(siamkit.load(model_dir), bank)
    notes = " ".join(report.notes)
    assert f"evaluated 3 writers of {bank}" in notes
    assert (
        f"left out 2 writers the model was trained or validated on (1 in training: "
        f"{split.train[1]}; 1 in validation: {split.val[0]})" in notes
    )
    assert {r["forgery"] for r in report.rows} == {"skilled", "random"}
    assert {r["k"] for r in report.rows} == {1, 3, 5}  # 7 genuine per writer
    # the same through the command line
    assert main(["eval", str(model_dir), str(bank)]) == 0
    out = flat(capsys.readouterr().out)
    assert "signature verification on bank" in out and "left out 2 writers" in out


def test_the_evaluated_writers_are_exactly_the_unseen_ones(signatures, tmp_path, monkeypatch):
    """Spy on the embedding step: only the renamed writers' images are scored."""
    from siamkit.evaluation import signature_eval

    tree, split, model_dir = signatures
    renamed = {w: f"new_{w}" for w in WRITERS[3:]}
    bank = copy_classes(tree, tmp_path / "bank", renamed | {split.train[0]: split.train[0]},
                        ("genuine", "forged"))  # fmt: skip
    embedded = []
    original = signature_eval.EmbeddedSignatures.of.__func__

    def spy(cls, network, images, data, writers):
        embedded.append((sorted(writers), sorted(set(data.writers.tolist()))))
        return original(cls, network, images, data, writers)

    monkeypatch.setattr(signature_eval.EmbeddedSignatures, "of", classmethod(spy))
    evaluate_path(siamkit.load(model_dir), bank)
    assert embedded == [(sorted(renamed.values()), sorted(renamed.values()))]


def test_the_models_own_tree_gives_its_test_writers_figures(signatures, tmp_path):
    """On the training tree itself exactly the test split is evaluated: same rows as on a tree
    holding only the test writers (and one trained-on writer: the reader needs 3)."""
    tree, split, model_dir = signatures
    model = siamkit.load(model_dir)
    full = evaluate_path(model, tree)
    assert "its test writers" in full.notes[0]
    assert "left out 4 writers" in full.notes[1]
    only = copy_classes(
        tree, tmp_path / "t", {w: w for w in [*split.test, split.train[0]]}, ("genuine", "forged")
    )
    assert evaluate_path(model, only).rows == full.rows


def test_nothing_left_to_evaluate_says_why(signatures, tmp_path, capsys):
    tree, split, model_dir = signatures
    seen = copy_classes(tree, tmp_path / "seen", {w: w for w in [*split.train, *split.val]},
                        ("genuine", "forged"))  # fmt: skip
    assert main(["eval", str(model_dir), str(seen)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "nothing to evaluate: all 4 writers in it were seen by the model" in flat(err)
    assert f"3 in training: {', '.join(split.train)}; 1 in validation: {split.val[0]}" in err
    one = copy_classes(tree, tmp_path / "one", {split.test[0]: "bank_1",
                       split.train[0]: split.train[0], split.val[0]: split.val[0]},
                       ("genuine", "forged"))  # fmt: skip
    with pytest.raises(DataError, match="only bank_1 is unseen; the other 2 writers were seen"):
        evaluate_path(siamkit.load(model_dir), one)


def test_a_recipe_model_rebuilds_its_writer_split(signatures, tmp_path):
    """A model saved by ``siamkit train`` records only its recipe: the split is rebuilt from the
    training tree's writer names and equals the reader's."""
    tree, _, model_dir = signatures
    params = {"n_folds": 3, "n_val": 1, "fold": 1, "size": [32, 48], "canvas": [64, 96]}
    recipe = {"data": {"name": "signatures", "params": params}, "data_dir": str(tree)}
    config = json.loads((model_dir / "config.json").read_text())
    config["extra"] = {"recipe": recipe}
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    shutil.copy(model_dir / "model.safetensors", tmp_path / "m")
    seen = seen_classes(siamkit.load(tmp_path / "m"))
    split = writer_folds(read_signature_tree(tree).writer_ids(), 3, 1, 0)[1]
    assert (seen.train, seen.val, seen.test) == tuple(map(frozenset, (split.train, split.val,
                                                                       split.test)))  # fmt: skip
    splits = build_dataset("signatures", tree, **params)
    assert {n for n in recorded_classes(splits)["train"] if "/" not in n} == seen.train
    report = evaluate_path(siamkit.load(tmp_path / "m"), tree)
    assert (
        "its test writers" in report.notes[0] and "split of signatures, fold 1" in report.notes[0]
    )
    recipe["data_dir"] = str(tmp_path / "gone")
    config["extra"] = {"recipe": recipe}
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match="does not list the classes it was trained on.*gone"):
        evaluate_path(siamkit.load(tmp_path / "m"), tree)


# --- faces -----------------------------------------------------------------------------------

FACE_PARAMS = {"size": SIZE, "test_people": 4, "val_people": 2, "fold": 0, "seed": 0}


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    att = write_faces(root / "att", people=10, images=4)
    recipe = {"data": {"name": "att_faces", "params": FACE_PARAMS}, "data_dir": str(att)}
    model = tiny_model(root / "model", extra={"recipe": recipe})
    return att, build_dataset("att_faces", att, **FACE_PARAMS), model


def people(part) -> list[str]:
    return sorted(part.classes[i] for i in part.class_ids().tolist())


def test_a_folder_of_new_people_is_evaluated_as_faces(faces, tmp_path, capsys):
    att, splits, model_dir = faces
    trained, validated = people(splits.train)[0], people(splits.val)[0]
    new = {p: name for p, name in zip(people(splits.test), ["ann", "bob", "cy", "di"],
                                      strict=True)}  # fmt: skip
    ours = copy_classes(att, tmp_path / "staff", new | {trained: trained, validated: validated})
    for image in (ours / "ann").iterdir():  # any image format the preprocessing reads
        Image.open(image).save(image.with_suffix(".png"))
        image.unlink()
    report = evaluate_path(siamkit.load(model_dir), ours)
    assert report.title == "face recognition on staff"
    notes = " ".join(report.notes)
    assert f"evaluated 4 people of {ours}" in notes
    assert "left out 2 people" in notes and f"1 in training: {trained}" in notes
    assert f"1 in validation: {validated}" in notes and "16 images" in notes
    metrics = {r["metric"] for r in report.rows}
    assert {"eer", "rank1", "rank5", "dir_at_far_1pct"} <= metrics
    assert main(["eval", str(model_dir), str(ours)]) == 0
    assert "left out 2 people" in flat(capsys.readouterr().out)


def test_the_att_tree_itself_gives_the_test_peoples_figures(faces, tmp_path):
    att, splits, model_dir = faces
    model = siamkit.load(model_dir)
    full = evaluate_path(model, att)
    assert "its test people" in full.notes[0] and "left out 6 people" in full.notes[1]
    test_people = people(splits.test)
    only = copy_classes(att, tmp_path / "t", {p: p for p in test_people})
    assert evaluate_path(model, only).rows == full.rows
    few = copy_classes(att, tmp_path / "few", {p: f"x{p}" for p in test_people[:3]})
    report = evaluate_path(model, few)
    assert "open-set identification skipped" in " ".join(report.notes)
    assert "rank1" in {r["metric"] for r in report.rows}


def test_only_seen_people_is_a_clear_error(faces, tmp_path):
    att, splits, model_dir = faces
    seen = copy_classes(att, tmp_path / "seen", {p: p for p in people(splits.train)[:3]})
    with pytest.raises(DataError, match="all 3 people in it were seen by the model"):
        evaluate_path(siamkit.load(model_dir), seen)


# --- image class folders ---------------------------------------------------------------------

CLASSES = [f"shape_{c}" for c in "abcdefghij"]


def write_classes(root: Path, names=CLASSES, images=3, seed=0) -> Path:
    """PNG class folders ``root/<class>/<i>.png``, each class a distinct random pattern."""
    rng = np.random.default_rng(seed)
    for name in names:
        base = rng.integers(0, 255, (40, 40))
        (root / name).mkdir(parents=True)
        for i in range(images):
            noisy = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(root / name / f"{i}.png")
    return root


def test_an_image_folder_model_leaves_out_its_training_classes(tmp_path, capsys):
    data = write_classes(tmp_path / "train")
    params = {"size": SIZE, "fractions": [0.6, 0.2, 0.2], "seed": 0}
    recipe = {"data": {"name": "image_folder", "params": params}, "data_dir": str(data)}
    model_dir = tiny_model(tmp_path / "model", extra={"recipe": recipe})
    splits = build_dataset("image_folder", data, **params)
    seen = seen_classes(siamkit.load(model_dir))
    assert recorded_classes(splits) == {
        "train": sorted(seen.train), "val": sorted(seen.val), "test": sorted(seen.test)
    }  # fmt: skip
    trained, validated = people(splits.train)[:2], people(splits.val)[0]
    new = {c: f"mine_{i}" for i, c in enumerate(people(splits.train)[2:5])}
    ours = copy_classes(data, tmp_path / "ours", new | {c: c for c in [*trained, validated]})
    report = evaluate_path(siamkit.load(model_dir), ours)
    assert report.title == "evaluation on ours"
    notes = " ".join(report.notes)
    assert f"evaluated 3 classes of {ours}" in notes and "9 images in 3 classes" in notes
    assert f"2 in training: {', '.join(trained)}; 1 in validation: {validated}" in notes
    assert main(["eval", str(model_dir), str(data)]) == 0  # the model's own folder: its test
    out = flat(capsys.readouterr().out)
    assert "its test classes" in out and "6 images in 2 classes" in out


def test_digits_and_unrecorded_models(tmp_path):
    """A digits model left out its training digits by name; a model that records no training
    classes is evaluated on every class, with a note saying so."""
    ours = write_classes(tmp_path / "ours", names=["3", "7", "8", "nine"])
    recipe = {"data": {"name": "digits", "params": {"train_classes": [0, 1, 2, 3]}}}
    digits = tiny_model(tmp_path / "digits", extra={"recipe": recipe})
    report = evaluate_path(siamkit.load(digits), ours)
    assert "evaluated 3 classes" in report.notes[0] and "1 in training: 3)" in report.notes[1]
    bare = tiny_model(tmp_path / "bare")
    report = evaluate_path(siamkit.load(bare), ours)
    assert "records no training classes: all 4 classes" in report.notes[0]
    assert "12 images in 4 classes" in report.notes[1]


def test_a_tree_without_forgeries_gets_random_forgery_rows(signatures, tmp_path):
    tree, split, model_dir = signatures
    genuine_only = copy_classes(tree, tmp_path / "g", {w: f"g{w}" for w in WRITERS[:3]},
                                ("genuine",))  # fmt: skip
    report = evaluate_path(siamkit.load(model_dir), genuine_only)
    assert {r["forgery"] for r in report.rows} == {"random"} and len(report.rows) == 9
    assert "no skilled forgeries" in report.notes[-1]
