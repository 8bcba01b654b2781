"""MkDocs hook: serve the benchmarks' own results files as ``results/`` in the site.

The benchmarks write their tables, JSON and plots to ``benchmarks/results/`` (never by hand). The
task pages link to them as ``results/<name>.md`` / ``results/<name>.png``; this hook adds those
files to the site as they are, so the links are checked by ``mkdocs build --strict`` and no copy of
a results file lives under ``docs/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
SUFFIXES = {".md", ".json", ".png", ".svg"}


def on_files(files: Files, config: Any) -> Files:
    """Add every results file (Markdown, JSON, plots) under ``results/``."""
    for path in sorted(RESULTS.rglob("*")):
        if path.is_file() and path.suffix in SUFFIXES:
            uri = "results/" + path.relative_to(RESULTS).as_posix()
            files.append(
                File(uri, str(RESULTS.parent), config["site_dir"], config["use_directory_urls"])
            )
    return files


def on_serve(server: Any, config: Any, builder: Any) -> Any:
    """``mkdocs serve`` rebuilds when a benchmark rewrites its results."""
    server.watch(str(RESULTS))
    return server
