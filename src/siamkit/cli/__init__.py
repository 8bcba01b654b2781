"""The ``siamkit`` command line. Each topic module adds its commands to :data:`app`."""

from siamkit.cli.app import app, main

# Importing the command modules registers their commands.
from siamkit.cli import core  # noqa: E402,F401  isort: skip

__all__ = ["app", "main"]
