"""What every benchmark records: the machine, versions, command, and a table as Markdown + JSON."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, Any]:
    """CPU, core count, threads, Python / torch versions and the command that was run."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows of dicts (same keys) as a Markdown table."""
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row.get(k, "")) for k in keys) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(
    name: str,
    title: str,
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    notes: list[str],
    machine: dict[str, Any],
) -> Path:
    """Print the table and write ``results/<name>.md`` and ``results/<name>.json``."""
    RESULTS.mkdir(exist_ok=True)
    table = markdown_table(rows)
    machine_lines = "\n".join(f"- {k}: `{v}`" for k, v in machine.items())
    text = f"# {title}\n\n{table}\n" + "".join(f"{n}\n\n" for n in notes)
    text += f"## Machine and run\n\n{machine_lines}\n"
    (RESULTS / f"{name}.md").write_text(text)
    payload = {**summary, "rows": rows, "machine": machine}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(table)
    for note in notes:
        print(note)
    return RESULTS / f"{name}.md"
