"""Molecules with assay labels (Tox21, SIDER, MUV): SMILES -> Morgan fingerprints, assays as tasks.

Each data set is a CSV (MUV gzipped) of a ``smiles`` column and one 0/1 column per assay; an
empty cell means "not measured" and that molecule is left out of that assay only. SMILES that
RDKit cannot parse are **counted** (:attr:`MoleculeSet.skipped`) and dropped, never a crash.

Molecules become RDKit Morgan fingerprints (radius 2, 2048 bits by default, through
``rdFingerprintGenerator.GetMorganGenerator``), computed once and cached under
``cache_dir()/molecules`` as a safetensors file keyed by the CSV's SHA-256 (no pickles).

**Assays are the classes of the few-shot problem**: training uses some assays, evaluation the
others (:func:`assay_split`, the task split of Altae-Tran et al. 2017: the assays cut into 4
folds of ``round(n / 4)``, the last fold, with the spill-over, held out: Tox21 the last 3 of 12,
SIDER the last 6 of 27, MUV the last 5 of 17). Registered readers (``tox21``, ``sider``,
``muv``) give :class:`~siamkit.data.labelled.Splits` whose items are fingerprint rows, one per
(molecule, assay) measurement, labelled ``2 * assay + activity`` and grouped by assay, so a
class-balanced batch drawn from one group (``batches.groups_per_batch: 1``) holds the actives
and inactives of one assay. Items are uint8 with 255 for a set bit, because siamkit reads
uint8 items as ``x / 255``.

Example::

    data = read_molecules("../shared/datasets/molecules/tox21.csv")
    data.skipped, data.tasks[:2]          # (0, ['NR-AR', 'NR-AR-LBD'])
    rows, active = data.assay(0)          # measured molecules of NR-AR and their 0/1 labels
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from siamkit.data.datasets import DATASETS
from siamkit.data.labelled import LabelledData, Splits
from siamkit.data.paths import cache_dir, dataset_dir
from siamkit.errors import ConfigError, DataError

FOLDER = "molecules"
FILES = {"tox21": "tox21.csv", "sider": "sider.csv", "muv": "muv.csv.gz"}
"""Dataset name -> its file in the ``molecules`` folder."""
FOLDS = 4
"""The paper's task split: 4 folds of assays, the last one held out."""


@dataclass
class MoleculeSet:
    """Parsed molecules of one file: fingerprints (N, bits) uint8 0/1, labels (N, T) int8 with
    -1 for "not measured", the assay names, and how many rows RDKit could not parse."""

    fingerprints: np.ndarray
    labels: np.ndarray
    tasks: list[str]
    smiles: list[str]
    skipped: int = 0
    skipped_smiles: list[str] = field(default_factory=list)

    def assay(self, task: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the molecules measured on assay ``task`` and their 0/1 activities."""
        rows = np.flatnonzero(self.labels[:, task] >= 0)
        return rows, self.labels[rows, task].astype(np.int64)


def read_table(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """(assay names, SMILES, labels (N, T) int8 with -1 = missing) of a CSV or CSV.gz file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: molecule CSV not found")
    raw = path.read_bytes()
    text = gzip.decompress(raw).decode("utf-8") if path.suffix == ".gz" else raw.decode("utf-8")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or "smiles" not in header:
        raise DataError(f"{path}: expected a header with a 'smiles' column, got {header}")
    col = header.index("smiles")
    tasks = [h for i, h in enumerate(header) if i != col]
    if not tasks:
        raise DataError(f"{path}: no assay columns besides 'smiles'")
    smiles, labels = [], []
    for line_no, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(f"{path} line {line_no}: {len(row)} fields, expected {len(header)}")
        smiles.append(row[col])
        values = [v.strip() for i, v in enumerate(row) if i != col]
        labels.append([_label(v, path, line_no) for v in values])
    return tasks, smiles, np.asarray(labels, dtype=np.int8).reshape(len(smiles), len(tasks))


def _label(value: str, path: Path, line_no: int) -> int:
    if value == "":
        return -1
    try:
        number = float(value)
    except ValueError:
        number = -2.0
    if number not in (0.0, 1.0):
        raise DataError(f"{path} line {line_no}: label {value!r}, expected 0, 1 or empty")
    return int(number)


def morgan_fingerprints(
    smiles: Sequence[str], radius: int = 2, bits: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """(fingerprints (M, bits) uint8 0/1 of the parsable SMILES, parsed mask (N,) bool)."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdFingerprintGenerator

    RDLogger.DisableLog("rdApp.*")  # unparsable SMILES are counted, not printed
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=bits)
    parsed = np.zeros(len(smiles), dtype=bool)
    rows = []
    for i, s in enumerate(smiles):
        mol = Chem.MolFromSmiles(s) if s else None
        if mol is None:
            continue
        parsed[i] = True
        rows.append(generator.GetFingerprintAsNumPy(mol).astype(np.uint8))
    fps = np.stack(rows) if rows else np.zeros((0, bits), dtype=np.uint8)
    return fps, parsed


def _cached_fingerprints(
    path: Path, smiles: list[str], radius: int, bits: int, cache: Path | None
) -> tuple[np.ndarray, np.ndarray]:
    from safetensors.numpy import load_file, save_file

    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:20]
    folder = Path(cache) if cache is not None else cache_dir() / FOLDER
    file = folder / f"{path.name.split('.')[0]}-{digest}-r{radius}-b{bits}.safetensors"
    if file.is_file():
        stored = load_file(str(file))
        return stored["fingerprints"], stored["parsed"].astype(bool)
    fps, parsed = morgan_fingerprints(smiles, radius, bits)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    save_file({"fingerprints": fps, "parsed": parsed.astype(np.uint8)}, str(tmp))
    tmp.replace(file)
    return fps, parsed


def read_molecules(
    path: str | Path, radius: int = 2, bits: int = 2048, cache: str | Path | None = None
) -> MoleculeSet:
    """Read a molecule CSV: fingerprints of every parsable SMILES (cached in ``cache``, default
    ``cache_dir()/molecules``), their labels, and the count of SMILES RDKit could not parse."""
    if radius < 0 or bits < 8:
        raise ConfigError(f"fingerprints need radius >= 0 and bits >= 8, got {radius}, {bits}")
    path = Path(path)
    tasks, smiles, labels = read_table(path)
    fps, parsed = _cached_fingerprints(path, smiles, radius, bits, Path(cache) if cache else None)
    bad = [s for s, ok in zip(smiles, parsed, strict=True) if not ok]
    kept = [s for s, ok in zip(smiles, parsed, strict=True) if ok]
    return MoleculeSet(fps, labels[parsed], tasks, kept, len(bad), bad)


def assay_split(n_tasks: int, folds: int = FOLDS) -> tuple[list[int], list[int]]:
    """(training assays, held-out assays): ``folds`` folds of ``round(n / folds)`` assays in
    column order, the last fold (with any spill-over) held out, as in Altae-Tran et al. 2017."""
    if folds < 2 or n_tasks < folds:
        raise ConfigError(f"cannot cut {n_tasks} assays into {folds} folds")
    per_fold = int(np.round(n_tasks / folds))
    start = per_fold * (folds - 1)
    return list(range(start)), list(range(start, n_tasks))


def molecules_path(name: str, data_dir: str | Path | None = None) -> Path:
    """The file of dataset ``name`` (``data_dir`` is the ``molecules`` folder or the file)."""
    if name not in FILES:
        raise ConfigError(f"unknown molecule dataset {name!r}; known: {', '.join(FILES)}")
    if data_dir is not None and Path(data_dir).is_file():
        return Path(data_dir)
    return dataset_dir(FOLDER, data_dir) / FILES[name]


def assay_rows(
    data: MoleculeSet, tasks: Sequence[int], molecules: np.ndarray | None = None
) -> LabelledData:
    """One item per measurement of ``tasks`` (optionally of ``molecules`` only): fingerprint
    rows as uint8 0/255, labels ``2 * assay + activity``, groups = assay."""
    index, labels, groups = [], [], []
    for t in tasks:
        rows, active = data.assay(t)
        if molecules is not None:
            keep = np.isin(rows, molecules)
            rows, active = rows[keep], active[keep]
        index.append(rows)
        labels.append(2 * t + active)
        groups.append(np.full(len(rows), t))
    idx = np.concatenate(index)
    items = torch.from_numpy(data.fingerprints[idx] * np.uint8(255))
    classes = [f"{name}:{kind}" for name in data.tasks for kind in ("inactive", "active")]
    return LabelledData(
        items, torch.from_numpy(np.concatenate(labels)), classes,
        torch.from_numpy(np.concatenate(groups)), list(data.tasks),
    )  # fmt: skip


def molecule_splits(
    name: str,
    data_dir: str | Path | None = None,
    radius: int = 2,
    bits: int = 2048,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> Splits:
    """Training assays (minus a seeded ``val_fraction`` of their molecules, the validation part)
    and the held-out assays (test) of dataset ``name``."""
    if not 0 < val_fraction < 1:
        raise ConfigError(f"{name}: val_fraction must lie in (0, 1), got {val_fraction}")
    data = read_molecules(molecules_path(name, data_dir), radius, bits)
    train_tasks, test_tasks = assay_split(len(data.tasks))
    order = np.random.default_rng(seed).permutation(len(data.smiles))
    n_val = int(round(val_fraction * len(order)))
    val_mols, train_mols = np.sort(order[:n_val]), np.sort(order[n_val:])
    return Splits(
        assay_rows(data, train_tasks, train_mols),
        assay_rows(data, train_tasks, val_mols),
        assay_rows(data, test_tasks),
    )


def _register(name: str) -> None:
    def reader(
        data_dir: Path | None = None,
        radius: int = 2,
        bits: int = 2048,
        val_fraction: float = 0.1,
        seed: int = 0,
    ) -> Splits:
        return molecule_splits(name, data_dir, radius, bits, val_fraction, seed)

    reader.__doc__ = f"{name}: training assays / held-out assays (see siamkit.data.molecules)."
    DATASETS.register(name)(reader)


for _name in FILES:
    _register(_name)
