"""The spread of what the acceptance tests assert, over training seeds and torch thread counts.

Each configuration (seed, threads) runs the acceptance tests once in a pytest subprocess with
``SIAMKIT_TEST_SEED``, ``SIAMKIT_TEST_THREADS`` and ``SIAMKIT_FIGURES`` set (see
``tests/conftest.py``); the ``figures`` fixture records every asserted figure with its bound.
Results go to ``benchmarks/results/test_spread.json`` after every configuration, and the run
resumes: configurations already there are skipped (``--redo`` runs them again). One-thread runs
go ``--parallel`` at a time to save wall time; runs with more threads go alone.

    python benchmarks/test_spread.py                      # seeds 0 1 2 x threads 1 2
    python benchmarks/test_spread.py --paths tests --marker ""   # the whole make test each time
    python benchmarks/test_spread.py --report-only        # rewrite the Markdown from the JSON
    python benchmarks/test_spread.py --tree /tmp/snapshot # measure a snapshot of the repository
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks_common import REPOSITORY, RESULTS, console, environment, markdown_table

TOPIC = "test_spread"
LOCK = threading.Lock()
# the encoder of tests/acceptance/test_omniglot.py's recipe
OMNIGLOT_ENCODER = {"input_size": 28, "channels": 64, "normalize": True}
OUTCOMES = ("failure", "error", "skipped")


def config_key(seed: int, threads: int) -> str:
    return f"seed={seed} threads={threads}"


def read_junit(path: Path) -> dict[str, dict[str, Any]]:
    """Test id -> outcome and seconds, from pytest's JUnit XML."""
    tests = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        test_id = f"{module}.py::{case.get('name')}"
        outcome = next((tag for tag in OUTCOMES if case.find(tag) is not None), "passed")
        tests[test_id] = {"outcome": outcome, "seconds": round(float(case.get("time", 0)), 1)}
    return tests


def run_config(
    tree: Path, paths: list[str], seed: int, threads: int, keyword: str | None, marker: str
) -> dict[str, Any]:
    """Run the tests once with this seed and thread count; their outcomes, figures and times
    (``marker`` "": every test, as ``make test`` runs them)."""
    with tempfile.TemporaryDirectory(prefix="spread-") as tmp:
        figures, junit = Path(tmp) / "figures.json", Path(tmp) / "junit.xml"
        env = os.environ | {
            "SIAMKIT_TEST_SEED": str(seed),
            "SIAMKIT_TEST_THREADS": str(threads),
            "SIAMKIT_FIGURES": str(figures),
            "PYTHONPATH": str(tree / "src"),  # the tree measured, before any editable install
            "MPLBACKEND": "Agg",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   f"--junitxml={junit}", *paths]  # fmt: skip
        if marker:
            command += ["-m", marker]
        if keyword:
            command += ["-k", keyword]
        console.print(f"[bold]{config_key(seed, threads)}[/]: {' '.join(command)}")
        started = time.perf_counter()
        done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        tests = read_junit(junit) if junit.is_file() else {}
        recorded = json.loads(figures.read_text()) if figures.is_file() else {}
    for test_id, values in recorded.items():
        tests.setdefault(test_id, {})["figures"] = values
    tail = done.stdout.strip().splitlines()[-1:] if done.stdout.strip() else []
    console.print(f"{config_key(seed, threads)}: {' '.join(tail)} ({seconds / 60:.1f} min)")
    return {
        "seed": seed,
        "threads": threads,
        "commit": commit_of(tree),
        "returncode": done.returncode,
        "summary": " ".join(tail),
        "seconds": round(seconds, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "tests": tests,
        "failures": [
            line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))
        ],
    }


def open_set_counts(x: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, int]:
    """The faces test's open-set protocol on embeddings: two halves of the people, each enrolled
    in turn from its first image and probed with the others, the other half as strangers."""
    from siamkit.gallery import unit_vectors

    x, people = unit_vectors(x), np.unique(y)
    half = len(people) // 2
    counts = {"probes": 0, "right": 0, "strangers": 0, "accepted": 0, "enrolled": half}
    for known, strangers in ((people[:half], people[half:]), (people[half:], people[:half])):
        first = np.array([np.flatnonzero(y == p)[0] for p in known])
        probe = np.isin(y, known) & ~np.isin(np.arange(len(y)), first)
        scores = x[probe] @ x[first].T
        best = scores.max(1)
        right = (known[scores.argmax(1)] == y[probe]) & (best >= threshold)
        accepted = (x[np.isin(y, strangers)] @ x[first].T).max(1) >= threshold
        counts["probes"] += int(probe.sum())
        counts["right"] += int(right.sum())
        counts["strangers"] += len(accepted)
        counts["accepted"] += int(accepted.sum())
    return counts


def faces_baselines() -> dict[str, dict[str, float]]:
    """What raw pixels and the untrained Conv-4 of configs/faces.yaml score on the faces test's
    figures (fold 0's 12 test people; the open-set threshold calibrated at FAR 1% on the 4
    validation people, as the test does)."""
    import torch

    from siamkit.data import build_dataset
    from siamkit.evaluation.embedding import embed_all
    from siamkit.evaluation.faces_eval import face_metrics
    from siamkit.gallery.calibration import impostor_cosines, threshold_at_far
    from siamkit.recipe import build_network, load_recipe

    recipe = load_recipe(REPOSITORY / "configs" / "faces.yaml")
    splits = build_dataset("att_faces", **recipe.data.params)
    torch.manual_seed(recipe.seed)
    network = build_network(recipe)[0].eval()
    embedders = {
        "raw pixels": lambda items: items.flatten(1).float().numpy(),
        "untrained Conv-4": lambda items: embed_all(network, items).numpy(),
    }
    found = {}
    for name, embed in embedders.items():
        val, test = embed(splits.val.items), embed(splits.test.items)
        threshold = threshold_at_far(impostor_cosines(val, splits.val.labels.numpy()), 0.01)
        labels = splits.test.labels.numpy()
        metrics = face_metrics(test, labels, trials=5)
        counts = open_set_counts(test, labels, threshold)
        found[name] = {
            "rank1": metrics["rank1"],
            "eer": metrics["eer"],
            "identified": counts["right"] / counts["probes"],
            "stranger_accept_rate": counts["accepted"] / counts["strangers"],
        }
    return found


def omniglot_baselines() -> dict[str, dict[str, float]]:
    """Raw pixels and the untrained Conv-4 of the omniglot test's recipe on its 1000 seeded
    5-way 1-shot episodes (unseen alphabets)."""
    import torch

    from siamkit.data import build_dataset
    from siamkit.encoders import build_encoder
    from siamkit.evaluation.fewshot import evaluate_episodes, raw_pixel_episodes
    from siamkit.heads import HEADS
    from siamkit.registry import ComponentSpec
    from siamkit.siamese import SiameseNetwork

    test = build_dataset("omniglot", size=28, rotations=True).test
    torch.manual_seed(0)
    encoder = build_encoder(ComponentSpec(name="conv4", params=OMNIGLOT_ENCODER))
    network = SiameseNetwork(encoder, HEADS.build(ComponentSpec(name="euclidean"))).eval()
    return {
        "raw pixels": {"5way_1shot": raw_pixel_episodes(test, 5, 1, 1000, 0).mean},
        "untrained Conv-4": {"5way_1shot": evaluate_episodes(network, test, 5, 1, 1000, 0).mean},
    }


def pretrained_faces_baselines() -> dict[str, dict[str, float]]:
    """dlib's face ResNet of configs/faces-pretrained.yaml before fine-tuning, and with random
    weights, on fold 0's 12 test people (skipped without ``make face-weights``)."""
    import torch

    from siamkit.data import build_dataset
    from siamkit.evaluation.embedding import embed_all
    from siamkit.evaluation.faces_eval import face_metrics
    from siamkit.recipe import build_network, load_recipe

    recipe = load_recipe(REPOSITORY / "configs" / "faces-pretrained.yaml")
    if not Path(recipe.init_weights).is_file():
        return {}
    test = build_dataset("att_faces", **recipe.data.params).test
    found = {}
    for name, init in [("pre-trained, not fine-tuned", recipe.init_weights), ("random", None)]:
        torch.manual_seed(recipe.seed)
        network = build_network(recipe.model_copy(update={"init_weights": init}))[0].eval()
        metrics = face_metrics(embed_all(network, test.items).numpy(), test.labels.numpy(), 5)
        found[name] = {"eer": metrics["eer"], "rank1": metrics["rank1"]}
    return found


def signatures_baselines() -> dict[str, dict[str, float]]:
    """The untrained Conv-4 of configs/signatures.yaml through the signature test's protocol
    (fold 0, K = 5 references, aggregate and normalisation chosen on the validation writers)."""
    import torch

    from siamkit.data.paths import datasets_root
    from siamkit.data.signatures import read_signature_tree, writer_folds
    from siamkit.evaluation.signature_eval import evaluate_fold, preprocess_of
    from siamkit.recipe import build_network, load_recipe

    recipe = load_recipe(REPOSITORY / "configs" / "signatures.yaml")
    data = read_signature_tree(datasets_root() / "signatures")
    split = writer_folds(data.writer_ids(), n_folds=5, n_val=8, seed=0)[0]
    images = preprocess_of(recipe)(data.paths)
    torch.manual_seed(recipe.seed)
    network = build_network(recipe)[0].eval()
    result = evaluate_fold(network, images, data, split, test_ks=(5,))
    rows = {(r["forgery"], r["aggregate"]): r for r in result.rows}
    return {"untrained Conv-4": {
        "skilled_eer": rows["skilled", result.aggregate]["eer"],
        "random_auc": rows["random", result.aggregate]["auc"],
    }}  # fmt: skip


def demo_baselines() -> dict[str, dict[str, float]]:
    """The demo's Conv net untrained, on the demo's unseen digits (its episodes and test pairs)."""
    import torch

    from siamkit.data import build_dataset
    from siamkit.demo import DEMO_RECIPE
    from siamkit.evaluation.fewshot import evaluate_episodes
    from siamkit.evaluation.verification import equal_error_rate, pair_scores
    from siamkit.recipe import build_network, parse_recipe

    recipe = parse_recipe(DEMO_RECIPE, "demo recipe")
    test = build_dataset("digits", size=16).test
    torch.manual_seed(recipe.seed)
    network = build_network(recipe)[0].eval()
    scores, labels = pair_scores(network, test, recipe.evaluation.test_pairs, recipe.seed + 1)
    return {"untrained Conv": {
        "4way_1shot": evaluate_episodes(network, test, 4, 1, 1000, recipe.seed).mean,
        "eer": equal_error_rate(scores, labels)[0],
    }}  # fmt: skip


def baselines() -> dict[str, dict[str, dict[str, float]]]:
    """Broken-model references for the bounds' comments: test file -> model -> figure -> value."""
    found = {}
    for test, measure in [("test_demo.py", demo_baselines),
                          ("test_faces.py", faces_baselines),
                          ("test_faces.py::pretrained", pretrained_faces_baselines),
                          ("test_omniglot.py", omniglot_baselines),
                          ("test_signatures.py", signatures_baselines)]:  # fmt: skip
        console.print(f"baselines of {test}")
        found[test] = measure()
        console.print(found[test])
    return found


def complete(runs: dict[str, dict], key: str) -> bool:
    """Whether configuration ``key`` ran to its end (a stopped run, killed by a signal, keeps
    the figures it had and is run again on resume)."""
    return key in runs and runs[key]["returncode"] >= 0


def margin(op: str, value: float, bound: float) -> float:
    """How far ``value`` is on the passing side of ``bound`` (negative: it fails)."""
    return value - bound if op in (">=", ">") else bound - value


def declared_bounds(tree: Path, test_file: str) -> dict[str, dict[str, list]]:
    """The ``BOUNDS`` a test module declares today (test -> figure -> [comparison, bound]), so
    that bounds moved after the runs are reported as they now stand; ``{}`` if it has none."""
    import importlib.util

    path = tree / test_file
    sys.path[:0] = [str(tree / "tests")]
    try:
        spec = importlib.util.spec_from_file_location(f"spread_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001  (a module that no longer imports keeps its runs')
        console.print(f"[yellow]{test_file}: bounds as recorded by the runs ({error})[/]")
        return {}
    finally:
        sys.path.remove(str(tree / "tests"))
    declared = getattr(module, "BOUNDS", {})
    return {t: {f: list(b) for f, b in figs.items()} for t, figs in declared.items()}


def current_bounds(tree: Path, runs: dict[str, dict]) -> dict[str, dict[str, list]]:
    """Test id -> figure -> [comparison, bound] as the test files now declare them."""
    found = {}
    for test_id in sorted({t for run in runs.values() for t in run["tests"]}):
        test_file, test = test_id.split("::")
        declared = declared_bounds(tree, test_file) if (tree / test_file).is_file() else {}
        found[test_id] = declared.get(test, {})
    return found


def figure_rows(runs: dict[str, dict], bounds: dict | None = None) -> list[dict[str, Any]]:
    """One row per (test, figure): every run's value, min, max, bound and the smallest margin.

    ``bounds`` (test id -> figure -> [comparison, bound]) replaces the bounds the runs recorded
    where given; figures missing from it (bounds computed per run) keep their own."""
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for key, run in runs.items():
        for test_id, test in run["tests"].items():
            for name, fig in test.get("figures", {}).items():
                now = (bounds or {}).get(test_id, {}).get(name)
                if now is not None:
                    fig = fig | {"op": now[0], "bound": now[1]}
                row = table.setdefault((test_id, name), {"op": fig["op"], "values": {}})
                row["values"][key] = fig
    rows = []
    for (test_id, name), row in table.items():
        figs = row["values"]
        values = [f["value"] for f in figs.values()]
        bounds = sorted({round(f["bound"], 4) for f in figs.values() if f["bound"] is not None})
        margins = [margin(f["op"], f["value"], f["bound"]) for f in figs.values() if f["op"]]
        rows.append({
            "test": test_id.split("::")[-1],
            "figure": name,
            "runs": " / ".join(f"{figs[k]['value']:.4g}" for k in runs if k in figs),
            "min": f"{min(values):.4g}",
            "max": f"{max(values):.4g}",
            "bound": f"{row['op']} {' .. '.join(f'{b:.4g}' for b in bounds)}" if bounds else "-",
            "smallest margin": f"{min(margins):.4g}" if margins else "-",
        })  # fmt: skip
    return rows


def duration_rows(runs: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per test: its seconds in each run, slowest first, and each run's total."""
    tests = sorted({t for run in runs.values() for t in run["tests"]})
    rows = []
    for test_id in tests:
        seconds = [run["tests"].get(test_id, {}).get("seconds") for run in runs.values()]
        known = [s for s in seconds if s is not None]
        rows.append({
            "test": test_id,
            "seconds per run": " / ".join("-" if s is None else f"{s:.0f}" for s in seconds),
            "max": max(known) if known else "-",
            "outcomes": " / ".join(
                run["tests"].get(test_id, {}).get("outcome", "-") for run in runs.values()
            ),
        })  # fmt: skip
    rows.sort(key=lambda r: -(r["max"] if r["max"] != "-" else 0))
    return rows


def baselines_markdown(found: dict[str, dict[str, dict[str, float]]]) -> str:
    """The broken-model references (``--baselines``) as a table, if measured."""
    rows = [
        {
            "test": test,
            "model": model,
            "figures": ", ".join(f"{k} {v:.4g}" for k, v in figs.items()),
        }
        for test, models in found.items()
        for model, figs in models.items()
    ]
    if not rows:
        return ""
    return "\n## What broken models score on the same figures (`--baselines`)\n\n" + markdown_table(
        rows
    )


def run_summary(run: dict[str, Any]) -> str:
    """Minutes, pytest's summary line and the commit measured (runs record it since 22:10)."""
    commit = f", commit {run['commit']}" if "commit" in run else ""
    return f"{run['seconds'] / 60:.1f} min, {run['summary']}{commit}"


def markdown(payload: dict[str, Any]) -> str:
    runs = payload["runs"]
    env = payload["environment"]
    order = ", ".join(f"{k} ({run_summary(r)})" for k, r in runs.items())
    return (
        "# Spread of the acceptance tests' asserted figures\n\n"
        f"Runs (in the order of the columns below): {order}.\n\n"
        "Bound: as the test files declare it now (`BOUNDS`); the faces stranger bound is "
        "computed per run from that run's calibration, so its range is shown. Margin: distance "
        "of the worst run from the bound, on the passing side (negative = a run is outside).\n\n"
        + markdown_table(figure_rows(runs, payload.get("bounds")))
        + "\n## Durations (seconds, same run order; "
        + f"1-thread runs went {payload.get('parallel', 2)} at a time)\n\n"
        + markdown_table(duration_rows(runs))
        + "".join(f"\n- {note}" for note in payload.get("notes", []))
        + ("\n" if payload.get("notes") else "")
        + baselines_markdown(payload.get("baselines", {}))
        + f"\nMachine: {env['machine']}; Python {env['python']}; "
        + ", ".join(f"{p} {v}" for p, v in env["versions"].items())
        + f".\nTree measured: {payload['tree']} (commit {payload['commit']}).\n"
        + f"Command: `{env['command']}`\n"
    )


def commit_of(tree: Path) -> str:
    """The measured tree's git commit: its ``COMMIT`` file (a snapshot), else git's HEAD."""
    marker = tree / "COMMIT"
    if marker.is_file():
        return marker.read_text().strip()
    try:
        git = ["git", "rev-parse", "--short", "HEAD"]
        return subprocess.run(
            git, cwd=tree, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def save(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    (path.with_suffix(".md")).write_text(markdown(payload))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tree", type=Path, default=REPOSITORY, help="repository to measure")
    parser.add_argument("--paths", nargs="+", default=["tests/acceptance"])
    parser.add_argument(
        "--bounds-tree",
        type=Path,
        default=REPOSITORY,
        help="repository whose test files give the reported bounds",
    )
    parser.add_argument("-k", dest="keyword", help="pytest -k expression (a subset of tests)")
    parser.add_argument(
        "--marker",
        default="acceptance",
        help='pytest -m expression; "" runs every test, as make test does (with --paths tests)',
    )
    parser.add_argument("--parallel", type=int, default=2, help="one-thread runs at a time")
    parser.add_argument("--redo", action="store_true", help="run stored configurations again")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--baselines",
        action="store_true",
        help="(re)measure raw pixels and untrained networks on the figures",
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--note", action="append", help="a note for the report (replaces the stored notes)"
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=[],
        help="add the runs of other test_spread.json files (parallel sessions)",
    )
    args = parser.parse_args(argv)
    path = args.results / f"{TOPIC}.json"
    payload = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    payload |= {
        "environment": environment(),
        "tree": str(args.tree),
        "commit": commit_of(args.tree),
        "paths": args.paths,
        "marker": args.marker,
    }
    if not args.report_only:
        payload["parallel"] = args.parallel
    for other in args.merge:
        merged = json.loads(other.read_text())
        for key, run in merged.get("runs", {}).items():
            if not complete(payload["runs"], key):
                payload["runs"][key] = run | {"merged_from": str(other)}
        if "baselines" in merged:
            payload["baselines"] = merged["baselines"]
        if "parallel" in merged:  # how the merged 1-thread runs went
            payload.setdefault("parallel", merged["parallel"])
        payload.setdefault("merged", []).append(str(other))
    if args.note is not None:
        payload["notes"] = args.note
    if args.baselines:
        payload["baselines"] = baselines()
        save(path, payload)
    if not args.report_only and not args.baselines:
        wanted = [(s, t) for t in args.threads for s in args.seeds]
        todo = [c for c in wanted if args.redo or not complete(payload["runs"], config_key(*c))]
        console.print(f"{len(todo)} of {len(wanted)} configurations to run")

        def one(config: tuple[int, int]) -> None:
            run = run_config(args.tree, args.paths, *config, args.keyword, args.marker)
            with LOCK:
                payload["runs"][config_key(*config)] = run
                save(path, payload)

        single = [c for c in todo if c[1] == 1]
        with ThreadPoolExecutor(max(1, args.parallel)) as pool:
            list(pool.map(one, single))
        for config in [c for c in todo if c[1] != 1]:
            one(config)
    order = sorted(payload["runs"].items(), key=lambda kv: (kv[1]["threads"], kv[1]["seed"]))
    payload["runs"] = dict(order)
    payload["bounds"] = current_bounds(args.bounds_tree, payload["runs"])
    save(path, payload)
    console.print(markdown_table(figure_rows(payload["runs"], payload["bounds"])))
    console.print(f"wrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
