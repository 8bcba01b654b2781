"""Every code block marked runnable in README.md and docs/ runs, in order, without an error.

A block is marked by an HTML comment on the line just before its opening fence (invisible on
GitHub and in the docs site)::

    <!-- runnable -->
    ```bash
    siamkit verify runs/demo/model runs/demo/examples/six_a.png runs/demo/examples/six_b.png
    ```

``<!-- runnable slow -->`` marks a block that trains for minutes: it runs only when
``SIAMKIT_DOCS_SLOW=1`` and is skipped otherwise (the default run stays near two minutes).

The blocks of one page run in the order they appear, in one workspace per page, so a block can
use what an earlier one wrote. The workspace is a temporary folder laid out like the repository:
``configs/``, ``benchmarks/`` and ``.venv/`` link to the repository's, ``../shared/datasets`` to
the datasets root, and ``runs/demo`` to the demo (``siamkit demo``) trained once per session, so
commands are written in the docs exactly as a user types them at the repository root, and
everything they write stays in the temporary folder. ``python`` blocks run with this venv's
interpreter, ``bash`` blocks with ``bash -eo pipefail`` (every command must succeed), with the
venv's ``bin/`` first on ``PATH``. A block that names ``../shared/datasets/<name>`` is skipped
when that dataset is missing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import dataset_or_skip
from siamkit.data.paths import datasets_root

pytestmark = pytest.mark.acceptance

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^<!--\s*runnable(?P<slow>\s+slow)?\s*-->\s*$")
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
LANGUAGES = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
LINKED = ("configs", "benchmarks")  # repository folders the examples read
DATASET = re.compile(r"shared/datasets/(?P<name>[\w.-]+)")
TIMEOUT = {False: 600, True: 3 * 3600}  # seconds per block: normal, slow


@dataclass(frozen=True)
class Block:
    """One runnable code block: where it is, its language and its code."""

    page: str  # path relative to the repository root
    line: int  # 1-based line of the opening fence
    language: str  # "python" or "bash"
    code: str
    slow: bool

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def runnable_blocks(page: Path) -> list[Block]:
    """The blocks of ``page`` marked runnable; a marker not followed by a fence is an error."""
    lines = page.read_text(encoding="utf-8").splitlines()
    name = page.relative_to(ROOT).as_posix() if page.is_relative_to(ROOT) else str(page)
    blocks = []
    for i, line in enumerate(lines):
        marker = MARKER.match(line.strip())
        if not marker:
            continue
        opening = FENCE.match(lines[i + 1].strip()) if i + 1 < len(lines) else None
        if opening is None or LANGUAGES.get(opening["lang"]) is None:
            raise ValueError(f"{name}:{i + 1}: runnable marker not followed by a python/bash fence")
        indent = len(lines[i + 1]) - len(lines[i + 1].lstrip())
        end = next(
            (j for j in range(i + 2, len(lines)) if lines[j].strip() == opening["fence"]), None
        )
        if end is None:
            raise ValueError(f"{name}:{i + 2}: code block never closed")
        code = "\n".join(text[indent:] for text in lines[i + 2 : end]) + "\n"
        blocks.append(Block(name, i + 2, LANGUAGES[opening["lang"]], code, bool(marker["slow"])))
    return blocks


def pages() -> list[Path]:
    """README.md and every Markdown page of the docs site."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


BLOCKS = [block for page in pages() for block in runnable_blocks(page)]


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """The demo's output folder (``siamkit demo``: model, examples, report), trained once."""
    from siamkit.demo import run_demo

    out = tmp_path_factory.mktemp("docs-demo") / "demo"
    run_demo(out, show_progress=False)
    return out


@pytest.fixture(scope="session")
def workspaces(tmp_path_factory, demo_dir) -> Callable[[str], Path]:
    """One workspace per page, made on first use (see the module docstring for its layout)."""
    made: dict[str, Path] = {}

    def workspace(page: str) -> Path:
        if page not in made:
            base = tmp_path_factory.mktemp("docs-" + re.sub(r"\W", "-", page))
            (base / "shared").mkdir()
            (base / "shared" / "datasets").symlink_to(datasets_root())
            project = base / "project"
            (project / "runs").mkdir(parents=True)
            (project / "runs" / "demo").symlink_to(demo_dir)
            (project / ".venv").symlink_to(sys.prefix)
            for folder in LINKED:
                (project / folder).symlink_to(ROOT / folder)
            made[page] = project
        return made[page]

    return workspace


def environment() -> dict[str, str]:
    """The user's environment, with the venv first on PATH and nothing fetched from a network."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        MPLBACKEND="Agg",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        SIAMKIT_DATA=str(datasets_root()),
        PYTHONUNBUFFERED="1",
        COLUMNS="120",
    )
    return env


def run_block(block: Block, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run one block in ``cwd``: python with this venv's interpreter, bash stopping at the first
    failing command."""
    if block.language == "python":
        command = [sys.executable, "-c", block.code]
    else:
        command = ["bash", "-eo", "pipefail", "-c", block.code]
    return subprocess.run(
        command,
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT[block.slow],
    )


def test_markers_are_found():
    """The README tour and the Python page are marked: a renamed marker must not pass silently."""
    marked = {block.page for block in BLOCKS}
    assert {"README.md", "docs/python.md"} <= marked, marked


def test_a_failing_block_fails(tmp_path):
    """The harness itself: a failing command anywhere in a bash block, or a raising python
    block, is a non-zero exit; markers and fences are found as documented."""
    page = tmp_path / "page.md"
    page.write_text(
        "text\n<!-- runnable -->\n```bash\nfalse\ntrue\n```\n\n```bash\nnot marked\n```\n"
        "<!-- runnable slow -->\n```python\nraise SystemExit('boom')\n```\n"
        "<!-- runnable -->\n```bash\necho fine | cat\n```\n",
        encoding="utf-8",
    )
    blocks = runnable_blocks(page)
    assert [(b.line, b.language, b.slow) for b in blocks] == [
        (3, "bash", False),
        (12, "python", True),
        (16, "bash", False),
    ]
    codes = [run_block(block, tmp_path).returncode for block in blocks]
    assert codes[0] != 0 and codes[1] != 0 and codes[2] == 0, codes
    page.write_text("<!-- runnable -->\n```yaml\na: 1\n```\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not followed by a python/bash fence"):
        runnable_blocks(page)


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_runnable_block(block: Block, workspaces):
    if block.slow and os.environ.get("SIAMKIT_DOCS_SLOW") != "1":
        pytest.skip(f"{block.id} trains for minutes: set SIAMKIT_DOCS_SLOW=1 to run it")
    for match in DATASET.finditer(block.code):
        dataset_or_skip(match["name"])
    cwd = workspaces(block.page)
    done = run_block(block, cwd)
    assert done.returncode == 0, (
        f"{block.id} ({block.language}) exited with {done.returncode} in {cwd}\n"
        f"--- code\n{block.code}--- stdout (end)\n{done.stdout[-3000:]}\n"
        f"--- stderr (end)\n{done.stderr[-3000:]}"
    )
