"""``siamkit export``: a model folder -> a deployable ONNX folder (torch and onnx are imported
only when the command runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from siamkit.cli.app import app, console, print_table
from siamkit.errors import ConfigError


@app.command("export")
def export(
    model: Annotated[Path, typer.Argument(help="Model folder (from siamkit train).")],
    format: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
    out: Annotated[Path | None, typer.Option(help="Folder to write (default MODEL-onnx).")] = None,
    quantize: Annotated[
        str | None, typer.Option(help="int8: ONNX Runtime dynamic int8 weights.")
    ] = None,
) -> None:
    """Export MODEL for ONNX Runtime: encoder.onnx, config.json and the tokenizer assets; run it
    without torch with siamkit.runtime.load_onnx or python -m siamkit.runtime verify."""
    if format != "onnx":
        raise ConfigError(f"--format: expected onnx, got {format!r}")
    from siamkit.export import export_onnx
    from siamkit.runtime.model import read_export_config

    folder = export_onnx(model, out, quantize)
    manifest = read_export_config(folder).onnx
    size = (folder / manifest["file"]).stat().st_size
    rows = [
        {"item": "folder", "value": str(folder)},
        {"item": "graph inputs", "value": ", ".join(manifest["inputs"])},
        {"item": "opset", "value": str(manifest["opset"])},
        {"item": "quantize", "value": str(manifest["quantize"] or "none (float32)")},
        {"item": "encoder.onnx MB", "value": f"{size / 1e6:.2f}"},
        {"item": "max |onnx - torch| (fp32)", "value": f"{manifest['export_max_abs_diff']:.2e}"},
    ]
    print_table("siamkit export", rows)
    console.print(f"run it without torch: python -m siamkit.runtime verify {folder} A B")
