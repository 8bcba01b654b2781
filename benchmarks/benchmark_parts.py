"""Benchmarks made of independent parts (``trust``: calibration, explanations, open-set;
``applications``: molecules, speech, ...), each run on its own and merged into one results file.

A part is a module ``<topic>_<part>.py`` beside this one with a function
``run(quick: bool) -> PartResult``. ``run_parts`` runs the chosen parts, saves each one as
``results/<topic>_parts/<part>.json`` (with its machine, versions and command), then merges every
saved part into ``results/<topic>.json`` (the parts' figures side by side at the top level) and
``results/<topic>.md`` (one section per part). Parts run at different times keep their own
environment record, so a part re-run never silently re-dates another part's figures.
"""

from __future__ import annotations

import argparse
import importlib
import json
from dataclasses import dataclass, field
from typing import Any

from benchmarks_common import RESULTS, console, environment, write_results


@dataclass
class PartResult:
    """One part's headline figures (top-level keys of the merged JSON), its details (kept under
    ``parts.<name>``) and its Markdown section (tables, notes, the variants tried)."""

    figures: dict[str, Any]
    markdown: str
    details: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None


def run_parts(topic: str, title: str, parts: list[str], argv: list[str] | None = None) -> None:
    """The command line of a parts benchmark: ``--parts a,b`` (default: all), ``--quick``."""
    parser = argparse.ArgumentParser(description=f"{title} (parts: {', '.join(parts)})")
    parser.add_argument("--parts", default=",".join(parts), help="comma-separated parts to run")
    parser.add_argument("--quick", action="store_true", help="a short run to try the script")
    parser.add_argument("--merge-only", action="store_true", help="only merge the saved parts")
    args = parser.parse_args(argv)
    chosen = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(chosen) - set(parts))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; expected some of {parts}")
    folder = RESULTS / f"{topic}_parts"
    if not args.merge_only:
        for name in chosen:
            module = importlib.import_module(f"{topic}_{name}")
            result: PartResult = module.run(quick=args.quick)
            save_part(folder, name, result, quick=args.quick)
    merge_parts(topic, title, folder, parts)


def save_part(folder, name: str, result: PartResult, quick: bool) -> None:
    """One part's figures, details, Markdown and environment as ``<folder>/<name>.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "figures": result.figures,
        "details": result.details,
        "markdown": result.markdown,
        "quick": quick,
        "environment": environment(seed=result.seed),
    }
    (folder / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    console.print(result.markdown)


def merge_parts(topic: str, title: str, folder, parts: list[str]) -> None:
    """Every saved part of ``topic`` merged into ``results/<topic>.json`` and ``.md``."""
    payload: dict[str, Any] = {"parts": {}}
    sections = [f"# {title}\n"]
    for name in parts:
        path = folder / f"{name}.json"
        if not path.is_file():
            sections.append(
                f"## {name}\n\nNot run yet: `python benchmarks/{topic}.py --parts {name}`.\n"
            )
            continue
        record = json.loads(path.read_text())
        payload.update(record["figures"])
        payload["parts"][name] = {k: record[k] for k in ("details", "quick", "environment")}
        env = record["environment"]
        quick = " (quick run: not the full protocol)" if record["quick"] else ""
        sections.append(
            f"## {name}{quick}\n\n{record['markdown'].strip()}\n\n"
            f"Run: `{env['command']}` on {env['machine']}, {env['date']}, "
            f"threads {env['threads']}, seed {env['seed']}, load {env['load_average']}.\n"
        )
    write_results(topic, payload, "\n".join(sections))
