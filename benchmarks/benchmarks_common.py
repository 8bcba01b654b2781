"""What every benchmark records: the machine, versions, seed and command, and its results as
Markdown + JSON in ``benchmarks/results/``."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

RESULTS = Path(__file__).resolve().parent / "results"
REPOSITORY = RESULTS.parents[1]
PACKAGES = ("numpy", "torch")
console = Console()


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(
    seed: int | None = None,
    packages: list[str] | tuple[str, ...] = PACKAGES,
    threads: int | None = None,
) -> dict[str, Any]:
    """Machine, package versions, threads, seed, load and the command line of this run."""
    return {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "machine": f"{cpu_model()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {p: version(p) for p in packages},
        "threads": torch.get_num_threads() if threads is None else threads,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows of dicts as a Markdown table; the columns are every key, in the order first met (a
    row without one shows it empty)."""
    if not rows:
        return ""
    keys = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row.get(k, "")) for k in keys) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(topic: str, payload: dict, markdown: str, folder: Path = RESULTS) -> Path:
    """Save ``payload`` as ``<folder>/<topic>.json`` and ``markdown`` as ``<folder>/<topic>.md``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{topic}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (folder / f"{topic}.md").write_text(markdown)
    console.print(f"wrote {folder / topic}.md and .json")
    return folder / f"{topic}.md"


def write_table(
    topic: str, title: str, rows: list[dict[str, Any]], summary: dict[str, Any], notes: list[str]
) -> Path:
    """Print ``rows`` and save them as a titled Markdown table with notes and the environment,
    and as JSON (``summary`` + rows + environment)."""
    env = environment()
    table = markdown_table(rows)
    console.print(table, *notes, sep="\n")
    text = f"# {title}\n\n{table}\n" + "".join(f"{n}\n\n" for n in notes)
    text += "## Machine and run\n\n" + "\n".join(f"- {k}: `{v}`" for k, v in env.items()) + "\n"
    return write_results(topic, {**summary, "rows": rows, "environment": env}, text)


def shown(path: Path) -> Path:
    """``path`` relative to the repository when it is inside it (for copy-pasteable commands)."""
    path = Path(path).resolve()
    return path.relative_to(REPOSITORY) if path.is_relative_to(REPOSITORY) else path


def target_report(checks: list[tuple[str, float | None, float, str]]) -> str:
    """One clause per ``(name, value, goal, op)`` with ``op`` "<=" or ">=": met, or missed and
    by how much, e.g. ``"skilled EER missed by 0.0591 (0.1091 vs <= 0.05)"``; a value of
    ``None`` is reported as not measured."""
    out = []
    for name, value, goal, op in checks:
        if value is None:
            out.append(f"{name} not measured")
            continue
        gap = value - goal if op == "<=" else goal - value
        verdict = "met" if gap <= 0 else f"missed by {gap:.4g}"
        out.append(f"{name} {verdict} ({value:.4g} vs {op} {goal})")
    return "; ".join(out)
