"""Which classes (writers, people, image classes) a saved model has seen, so that
``siamkit eval MODEL FOLDER`` scores only the ones it never saw, on any folder.

A model folder tells its seen classes in one of three ways, read in this order:

1. ``extra["seen_classes"] = {"train": [...], "val": [...]}``: the names themselves, as
   :func:`recorded_classes` writes them from a recipe's splits;
2. ``extra["writers"] = {"train": [...], "val": [...], "test": [...]}``: a signature model saved
   by :func:`siamkit.evaluation.signature_eval.save_signature_model`;
3. ``extra["recipe"]``: the recipe it was trained from. Its split is rebuilt by the reader's own
   seeded split function from the names in the training data's folder (signatures, AT&T faces,
   image folders, digits: no image is read; any other reader: its splits are built).

Validation classes count as seen: they chose the decision threshold (and often the epoch).
Classes are matched **by name** with the evaluated folder's class names (its sub-folders): a
trained-on writer copied under a new name is not recognised, an unrelated one under a trained-on
name is left out. A model that records none of the three is evaluated on every class, with a note.

Example::

    seen = seen_classes(siamkit.load("runs/signatures/model"))
    chosen = select_unseen(seen, ["003", "bank_003"], Path("bank"), Nouns("writer", "writers"))
    chosen.evaluated  # ['bank_003'] if 003 trained the model
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from siamkit.errors import DataError, SiamkitError
from siamkit.recipe_schema import SENTENCE_PAIR_DATASETS

if TYPE_CHECKING:
    from siamkit.data.labelled import Splits
    from siamkit.model import Model

ROLES = ("training", "validation")
SHOWN = 20  # evaluated names listed in the report's note
Split = tuple[list[str], list[str], list[str]]  # train, val, test class names


@dataclass(frozen=True)
class SeenClasses:
    """Class names a model was trained on and validated on, and where they were read."""

    train: frozenset[str]
    val: frozenset[str]
    source: str
    test: frozenset[str] | None = None  # the split's test classes, when known

    def role(self, name: str) -> str | None:
        """``"training"``, ``"validation"`` or ``None`` (never seen) for one class name."""
        if name in self.train:
            return "training"
        return "validation" if name in self.val else None


@dataclass(frozen=True)
class Nouns:
    """What the classes of a folder are called in messages (writer / writers...)."""

    one: str = "class"
    many: str = "classes"

    def count(self, n: int) -> str:
        return f"{n} {self.one if n == 1 else self.many}"


CLASSES = Nouns()


@dataclass(frozen=True)
class Selection:
    """A folder's class names split into the ones to evaluate and the ones left out (by role)."""

    evaluated: list[str]
    left_out: dict[str, str]  # name -> "training" | "validation"
    notes: list[str]


def recorded_classes(splits: Splits) -> dict[str, list[str]]:
    """``{"train": names, "val": names, "test": names}`` of a recipe's splits, to store as
    ``extra["seen_classes"]`` in the saved model (read back by :func:`seen_classes`)."""
    return {"train": _names(splits.train), "val": _names(splits.val), "test": _names(splits.test)}


def _names(part: Any) -> list[str]:
    ids = part.class_ids().tolist()
    return sorted(str(i) if part.classes is None else part.classes[i] for i in ids)


# --- rebuilding a recipe's split from the training data's names ---------------------------------


def _with_defaults(factory: Callable[..., Any], params: dict[str, Any]) -> dict[str, Any]:
    """The reader's parameters as it ran: its defaults, overridden by the recipe's ``params``."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(factory).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return defaults | params


def _signature_writers(params: dict[str, Any], data_dir: Path | None) -> Split:
    from siamkit.data.paths import dataset_dir
    from siamkit.data.signatures import read_signature_tree, signatures, writer_folds

    p = _with_defaults(signatures, params)
    writers = read_signature_tree(dataset_dir("signatures", data_dir)).writer_ids()
    split = writer_folds(writers, p["n_folds"], p["n_val"], p["seed"])[p["fold"]]
    return split.train, split.val, split.test


def _class_dirs(root: Path) -> list[str]:
    """Class folder names in the order the image readers label them (sorted)."""
    return [d.name for d in sorted(p for p in root.iterdir() if p.is_dir())]


def _att_people(params: dict[str, Any], data_dir: Path | None) -> Split:
    from siamkit.data.faces import NAME, att_faces, people_folds
    from siamkit.data.paths import dataset_dir

    p = _with_defaults(att_faces, params)
    names = _class_dirs(dataset_dir(NAME, data_dir))
    train, val, test = people_folds(
        len(names), p["test_people"], p["val_people"], p["fold"], p["seed"]
    )
    return tuple([names[i] for i in part.tolist()] for part in (train, val, test))  # type: ignore


def _image_folder_classes(params: dict[str, Any], data_dir: Path | None) -> Split:
    from siamkit.data.datasets import IMAGE_SUFFIXES, image_folder
    from siamkit.data.labelled import LabelledData
    from siamkit.data.paths import dataset_dir
    from siamkit.data.splits import split_classes

    p = _with_defaults(image_folder, params)
    root = dataset_dir("image_folder", data_dir)
    dirs = sorted(d for d in root.iterdir() if d.is_dir())
    files = [(f, i) for i, d in enumerate(dirs) for f in d.iterdir()
             if f.suffix.lower() in IMAGE_SUFFIXES]  # fmt: skip
    labelled = LabelledData([f for f, _ in files], torch.tensor([i for _, i in files]),
                            [d.name for d in dirs])  # fmt: skip
    splits = split_classes(labelled, p["fractions"], p["seed"])
    return _names(splits.train), _names(splits.val), _names(splits.test)


def _digit_classes(params: dict[str, Any], data_dir: Path | None) -> Split:
    from siamkit.data.datasets import digits

    seen = [str(c) for c in _with_defaults(digits, params)["train_classes"]]
    # validation holds other images of the training digits
    return seen, seen, [str(c) for c in range(10) if str(c) not in seen]


def _any_dataset(name: str, params: dict[str, Any], data_dir: Path | None) -> Split:
    """Any other registered reader: build its splits (reads the data) and take their names."""
    from siamkit.data.datasets import build_dataset

    splits = build_dataset(name, data_dir, **params)
    return _names(splits.train), _names(splits.val), _names(splits.test)


SPLITS_BY_NAME: dict[str, Callable[[dict[str, Any], Path | None], Split]] = {
    "signatures": _signature_writers,
    "att_faces": _att_people,
    "image_folder": _image_folder_classes,
    "digits": _digit_classes,
}


def _from_recipe(recipe: dict[str, Any]) -> SeenClasses:
    data = recipe["data"]
    name, params = data["name"], data.get("params", {})
    data_dir = Path(recipe["data_dir"]) if recipe.get("data_dir") else None
    try:
        if name in SPLITS_BY_NAME:
            train, val, test = SPLITS_BY_NAME[name](params, data_dir)
        else:
            train, val, test = _any_dataset(name, params, data_dir)
    except (SiamkitError, OSError) as error:
        raise DataError(
            f"the model does not list the classes it was trained on, and its recipe's {name!r} "
            f"data, needed to rebuild its split, is not at hand: {error}"
        ) from error
    fold = f", fold {params['fold']}" if "fold" in params else ""
    source = f"its recipe's split of {name}{fold}, rebuilt from the data's names"
    return SeenClasses(frozenset(train), frozenset(val), source, frozenset(test))


def seen_classes(model: Model) -> SeenClasses | None:
    """The classes ``model`` was trained and validated on, or ``None`` if it records none."""
    extra = model.config.extra
    for key, source in (("seen_classes", "the model's saved split"),
                        ("writers", "the model's saved writer split")):  # fmt: skip
        saved = extra.get(key)
        if saved:
            test = saved.get("test")
            return SeenClasses(
                frozenset(saved["train"]), frozenset(saved.get("val", [])), source,
                None if test is None else frozenset(test),
            )  # fmt: skip
    recipe = extra.get("recipe") or {}
    name = recipe.get("data", {}).get("name")
    if name and name not in SENTENCE_PAIR_DATASETS:  # sentence pairs have no classes
        return _from_recipe(recipe)
    return None


# --- choosing what to evaluate -------------------------------------------------------------


def _listing(roles: dict[str, str]) -> str:
    """``2 in training: a, b; 1 in validation: c``."""
    parts = []
    for role in ROLES:
        named = sorted(n for n, r in roles.items() if r == role)
        if named:
            parts.append(f"{len(named)} in {role}: {', '.join(named)}")
    return "; ".join(parts)


def _shown(names: Sequence[str], most: int = SHOWN) -> str:
    """The first ``most`` names, and how many more."""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def select_unseen(
    seen: SeenClasses | None,
    names: Sequence[str],
    root: Path,
    nouns: Nouns = CLASSES,
    minimum: int = 2,
) -> Selection:
    """Keep the ``names`` (the folder's classes) the model never trained or validated on.

    The notes say how many were evaluated and which were left out (and why); raises
    :class:`DataError` saying why when fewer than ``minimum`` are left.
    """
    names = sorted(set(names))
    if seen is None:
        note = (
            f"the model records no training classes: all {nouns.count(len(names))} of {root} "
            "evaluated (any it was trained on would make the figures optimistic)"
        )
        return _checked(Selection(names, {}, [note]), root, nouns, minimum)
    roles = {n: r for n in names if (r := seen.role(n)) is not None}
    evaluated = [n for n in names if n not in roles]
    which = ""
    if seen.test is not None and set(evaluated) == seen.test:
        which = f": its test {nouns.many}"
    notes = [
        f"evaluated {nouns.count(len(evaluated))} of {root} that the model never trained or "
        f"validated on{which} ({_shown(evaluated)}; by name, from {seen.source})"
    ]
    if roles:
        notes.append(
            f"left out {nouns.count(len(roles))} the model was trained or validated on "
            f"({_listing(roles)})"
        )
    return _checked(Selection(evaluated, roles, notes), root, nouns, minimum)


def _checked(selection: Selection, root: Path, nouns: Nouns, minimum: int) -> Selection:
    evaluated, left_out = selection.evaluated, selection.left_out
    if len(evaluated) >= minimum:
        return selection
    total = len(evaluated) + len(left_out)
    if total == 0:
        why = f"it holds no {nouns.many}"
    elif not evaluated:
        were = "was" if total == 1 else "were"
        everyone = "the only" if total == 1 else f"all {total}"
        why = (
            f"{everyone} {nouns.one if total == 1 else nouns.many} in it {were} seen by the "
            f"model ({_listing(left_out)})"
        )
    else:
        why = f"only {', '.join(evaluated)} {'is' if len(evaluated) == 1 else 'are'} unseen"
        if left_out:
            were = "was" if len(left_out) == 1 else "were"
            why += f"; the other {nouns.count(len(left_out))} {were} seen by the model "
            why += f"({_listing(left_out)})"
    what = "too few to evaluate" if evaluated else "nothing to evaluate"
    raise DataError(
        f"{root}: {what}: {why}; siamkit eval needs at least {minimum} "
        f"{nouns.many} the model never trained or validated on"
    )
