"""``siamkit eval MODEL FOLDER`` on a user's own folder of real data: writers, people or classes
copied under new names are all evaluated; the ones the model trained or validated on are left
out, counted and named. The models are trained for a few batches only: the point is the
evaluation path, not the figures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from conftest import dataset_or_skip

pytestmark = pytest.mark.acceptance

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def copy_classes(source: Path, target: Path, names: dict[str, str], kinds=("",)) -> Path:
    """Copy class folders ``source/<kind>/<old>`` to ``target/<kind>/<new>``."""
    for kind in kinds:
        for old, new in names.items():
            shutil.copytree(source / kind / old, target / kind / new)
    return target


def brief(recipe, epochs: int = 1, batches: int = 2, **data_params):
    """The recipe trained for ``batches`` batches per epoch, with ``data_params`` overridden."""
    return recipe.model_copy(
        update={
            "data": recipe.data.model_copy(update={"params": recipe.data.params | data_params}),
            "training": recipe.training.model_copy(update={"epochs": epochs, "threads": None}),
            "batches": recipe.batches.model_copy(update={"batches_per_epoch": batches}),
        }
    )


def test_a_bank_evaluates_its_own_writers(tmp_path, capsys):
    """The signatures recipe (small images, 2 batches), saved with its writer split as the
    benchmark saves it; the bank's tree holds 3 test writers under new names, 2 training
    writers and 1 validation writer under their own names."""
    from siamkit.cli import main
    from siamkit.data.signatures import read_signature_tree, writer_folds
    from siamkit.evaluation.signature_eval import (
        EmbeddedSignatures,
        calibrate,
        preprocess_of,
        save_signature_model,
        train_fold,
    )
    from siamkit.recipe import load_recipe

    folder = dataset_or_skip("signatures")
    recipe = brief(load_recipe(CONFIGS / "signatures.yaml"), size=[78, 110])
    encoder = recipe.encoder.params | {"input_size": [78, 110], "channels": 16, "shift_average": 0}
    recipe = recipe.model_copy(update={"encoder": recipe.encoder.model_copy(
        update={"params": encoder})})  # fmt: skip
    data = read_signature_tree(folder)
    split = writer_folds(data.writer_ids(), n_folds=5, n_val=8, seed=0)[0]
    images = preprocess_of(recipe)(data.paths)
    fold = train_fold(recipe, data, images, split, tmp_path / "run", show_progress=False)
    thresholds = calibrate(EmbeddedSignatures.of(fold.network, images, data, split.val), split.val)
    model = save_signature_model(tmp_path / "model", fold, recipe, thresholds, split)

    renamed = {w: f"bank_{w}" for w in split.test[:3]}
    seen = {w: w for w in [*split.train[:2], split.val[0]]}
    bank = copy_classes(folder, tmp_path / "bank", renamed | seen, ("genuine", "forged"))
    capsys.readouterr()
    assert main(["eval", str(model), str(bank)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"evaluated 3 writers of {bank}" in out
    assert (
        f"left out 3 writers the model was trained or validated on (2 in training: "
        f"{', '.join(split.train[:2])}; 1 in validation: {split.val[0]})" in out
    )
    assert "skilled" in out and "random" in out

    only_seen = copy_classes(folder, tmp_path / "seen", seen, ("genuine", "forged"))
    assert main(["eval", str(model), str(only_seen)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "nothing to evaluate: all 3 writers in it were seen by the model" in err


def test_new_people_in_a_faces_folder(tmp_path):
    """The faces recipe through ``siamkit train`` (the model records only its recipe: the split
    is rebuilt from the AT&T folder's names); a folder of 5 renamed test people and 3 seen."""
    import siamkit
    from siamkit.data.datasets import build_dataset
    from siamkit.evaluation.tasks import evaluate_path
    from siamkit.recipe import load_recipe, run_recipe

    att = dataset_or_skip("att_faces")
    recipe = brief(load_recipe(CONFIGS / "faces.yaml"))
    recipe = recipe.model_copy(update={"data_dir": str(att)})
    result = run_recipe(recipe, tmp_path / "run", show_progress=False)
    model = siamkit.load(result.model_dir)
    splits = build_dataset("att_faces", att, **recipe.data.params)

    def people(part) -> list[str]:
        return sorted(part.classes[i] for i in part.class_ids().tolist())

    test, train, val = people(splits.test), people(splits.train), people(splits.val)
    renamed = {p: f"visitor_{i}" for i, p in enumerate(test[:5])}
    ours = copy_classes(att, tmp_path / "visitors", renamed | {p: p for p in [*train[:2], val[0]]})
    report = evaluate_path(model, ours)
    notes = " ".join(report.notes)
    assert report.title == "face recognition on visitors"
    assert f"evaluated 5 people of {ours}" in notes and "50 images" in notes
    assert f"2 in training: {', '.join(train[:2])}; 1 in validation: {val[0]}" in notes
    assert {"eer", "rank1", "dir_at_far_1pct"} <= {r["metric"] for r in report.rows}

    own = evaluate_path(model, att)  # the model's own data: its 12 test people, as before
    assert "evaluated 12 people" in own.notes[0] and "its test people" in own.notes[0]
    assert "left out 28 people" in own.notes[1]
    assert evaluate_path(model, copy_classes(att, tmp_path / "t", {p: p for p in test})).rows == (
        own.rows
    )


def test_new_classes_in_an_image_class_folder(tmp_path):
    """An image-folder recipe trained on the writers' genuine signatures as classes
    (``genuine/<writer>/``); a folder of 3 renamed test classes, 2 training and 1 validation."""
    import siamkit
    from siamkit.data.datasets import build_dataset
    from siamkit.evaluation.tasks import evaluate_path
    from siamkit.recipe import parse_recipe, run_recipe

    classes = dataset_or_skip("signatures") / "genuine"
    params = {"size": [32, 48], "mode": "L", "seed": 0}
    recipe = parse_recipe({
        "data": {"name": "image_folder", "params": params}, "data_dir": str(classes),
        "encoder": {"name": "conv4", "params": {"input_size": [32, 48], "channels": 16,
                                                "embedding_dim": 16}},
        "loss": {"name": "contrastive"},
        "batches": {"batch_size": 32, "examples_per_epoch": 64},
        "training": {"epochs": 1},
        "evaluation": {"val_pairs": 200, "test_pairs": 200, "plots": False},
    })  # fmt: skip
    torch.manual_seed(0)
    result = run_recipe(recipe, tmp_path / "run", show_progress=False)
    splits = build_dataset("image_folder", classes, **params)

    def names(part) -> list[str]:
        return sorted(part.classes[i] for i in part.class_ids().tolist())

    test, train, val = names(splits.test), names(splits.train), names(splits.val)
    renamed = {c: f"client_{c}" for c in test[:3]}
    ours = copy_classes(
        classes, tmp_path / "clients", renamed | {c: c for c in [*train[:2], val[0]]}
    )
    report = evaluate_path(siamkit.load(result.model_dir), ours)
    notes = " ".join(report.notes)
    assert report.title == "evaluation on clients"
    assert f"evaluated 3 classes of {ours}" in notes and "in 3 classes" in notes
    assert f"2 in training: {', '.join(train[:2])}; 1 in validation: {val[0]}" in notes
    assert {"auc", "eer"} <= {r["metric"] for r in report.rows}
