"""The spread of what the acceptance tests assert, over training seeds and torch thread counts.

Each configuration (seed, threads) runs the acceptance tests once in a pytest subprocess with
``SIAMKIT_TEST_SEED``, ``SIAMKIT_TEST_THREADS`` and ``SIAMKIT_FIGURES`` set (see
``tests/conftest.py``); the ``figures`` fixture records every asserted figure with its bound.
Results go to ``benchmarks/results/test_spread.json`` after every configuration, and the run
resumes: configurations already there are skipped (``--redo`` runs them again). One-thread runs
go ``--parallel`` at a time to save wall time; runs with more threads go alone.

    python benchmarks/test_spread.py                      # seeds 0 1 2 x threads 1 2
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

from benchmarks_common import REPOSITORY, RESULTS, console, environment, markdown_table

TOPIC = "test_spread"
LOCK = threading.Lock()
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
    tree: Path, paths: list[str], seed: int, threads: int, keyword: str | None
) -> dict[str, Any]:
    """Run the tests once with this seed and thread count; their outcomes, figures and times."""
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
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m",
                   "acceptance", f"--junitxml={junit}", *paths]  # fmt: skip
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
        "returncode": done.returncode,
        "summary": " ".join(tail),
        "seconds": round(seconds, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "tests": tests,
        "failures": [
            line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))
        ],
    }


def margin(op: str, value: float, bound: float) -> float:
    """How far ``value`` is on the passing side of ``bound`` (negative: it fails)."""
    return value - bound if op in (">=", ">") else bound - value


def figure_rows(runs: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per (test, figure): every run's value, min, max, bound and the smallest margin."""
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for key, run in runs.items():
        for test_id, test in run["tests"].items():
            for name, fig in test.get("figures", {}).items():
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


def markdown(payload: dict[str, Any]) -> str:
    runs = payload["runs"]
    env = payload["environment"]
    order = ", ".join(f"{k} ({r['seconds'] / 60:.1f} min, {r['summary']})" for k, r in runs.items())
    return (
        "# Spread of the acceptance tests' asserted figures\n\n"
        f"Runs (in the order of the columns below): {order}.\n\n"
        "Margin: distance of the worst run from the bound, on the passing side (negative = "
        "a run failed). The faces stranger bound is computed per run from that run's "
        "calibration, so its range is shown.\n\n"
        + markdown_table(figure_rows(runs))
        + "\n## Durations (seconds, same run order; 1-thread runs went two at a time)\n\n"
        + markdown_table(duration_rows(runs))
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
    parser.add_argument("-k", dest="keyword", help="pytest -k expression (a subset of tests)")
    parser.add_argument("--parallel", type=int, default=2, help="one-thread runs at a time")
    parser.add_argument("--redo", action="store_true", help="run stored configurations again")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    path = args.results / f"{TOPIC}.json"
    payload = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    payload |= {"environment": environment(), "tree": str(args.tree),
                "commit": commit_of(args.tree)}  # fmt: skip
    if not args.report_only:
        wanted = [(s, t) for t in args.threads for s in args.seeds]
        todo = [c for c in wanted if args.redo or config_key(*c) not in payload["runs"]]
        console.print(f"{len(todo)} of {len(wanted)} configurations to run")

        def one(config: tuple[int, int]) -> None:
            run = run_config(args.tree, args.paths, *config, args.keyword)
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
    save(path, payload)
    console.print(markdown_table(figure_rows(payload["runs"])))
    console.print(f"wrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
