"""The typer application and the ``siamkit`` entry point (errors as one line, exit code 1).

The command modules are imported to register their commands, so they must stay cheap: torch,
scikit-learn and every task module are imported inside the command functions that use them, and
``siamkit --help`` or a gallery command (``people``, ``remove``) never loads torch.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from siamkit.errors import SiamkitError

app = typer.Typer(
    name="siamkit",
    help="Siamese (twin) networks: train, evaluate, verify, identify and search.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()


def _print_version(asked: bool) -> None:
    if asked:
        import siamkit

        typer.echo(f"siamkit {siamkit.__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Siamese (twin) networks: train, evaluate, verify, identify and search."""


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """Print rows (dicts with the same keys) as a rich table; floats with 4 decimals."""
    table = Table(title=title)
    columns = list(rows[0]) if rows else []
    for column in columns:
        table.add_column(str(column))
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(table)


COMMAND_MODULES = ("core", "gallery", "text", "serve", "export", "ensemble", "tune", "explain")


def register_commands() -> None:
    """Import the command modules of :data:`COMMAND_MODULES` present in this installation."""
    for name in COMMAND_MODULES:
        module = f"siamkit.cli.{name}"
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a :class:`SiamkitError` is printed as ``error: ...`` and exits with 1."""
    register_commands()

    try:
        app(args=argv, standalone_mode=False)
    except SiamkitError as error:
        typer.echo(f"error: {error}", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except (typer.Abort, typer.Exit) as stop:
        return getattr(stop, "exit_code", 1)
    except Exception as error:  # usage errors, from click or typer's bundled copy of it
        show, code = getattr(error, "show", None), getattr(error, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            return code
        raise
    return 0
