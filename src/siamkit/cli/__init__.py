"""The ``siamkit`` command line. Each topic module adds its commands to :data:`app`."""

from siamkit.cli.app import app, main

__all__ = ["app", "main"]
