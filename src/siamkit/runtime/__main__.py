"""``python -m siamkit.runtime verify FOLDER QUESTIONED OTHER [--references REF ...]``: the
``siamkit verify`` of an exported folder, without torch (and without typer or rich); and
``python -m siamkit.runtime serve FOLDER [--gallery PATH] ...``: ``siamkit serve`` of an exported
folder on ONNX Runtime (needs fastapi and uvicorn: ``pip install 'siamkit-runtime[serve]'``).
Installed as the ``siamkit-runtime`` command by the siamkit-runtime distribution."""

from __future__ import annotations

import argparse
import json
import sys

from siamkit.errors import SiamkitError


def verify(args: argparse.Namespace) -> dict:
    """Score, threshold and decision of one pair, or of QUESTIONED against K references."""
    from siamkit.runtime.model import load_onnx

    model = load_onnx(args.folder)
    if args.references:
        aggregate = args.aggregate or model.config.extra.get("reference_aggregate", "mean")
        score = model.score_references(args.questioned, args.others)[aggregate]
        threshold = model.reference_threshold(len(args.others), aggregate)
        row = {"score": score, "threshold": threshold, "aggregate": aggregate,
               "references": len(args.others)}  # fmt: skip
    else:
        if len(args.others) != 1:
            raise SiamkitError("give exactly one input to compare with, or --references")
        score = float(model.score([args.questioned], args.others)[0])
        row = {"score": score, "threshold": model.threshold}
    if row["threshold"] is not None:
        row["decision"] = "same" if row["score"] >= row["threshold"] else "different"
    return row


def serve(args: argparse.Namespace) -> None:
    """``siamkit serve`` of an exported folder: same endpoints, limits (``SIAMKIT_*`` variables),
    auth and metrics, on ONNX Runtime."""
    from pathlib import Path

    try:
        from siamkit.serving.launch import (
            check_folder,
            no_auth_warning,
            run_server,
            server_settings,
        )
    except ImportError as error:
        raise SiamkitError(f"serve needs the serve extra ({error}): "
                           "pip install 'siamkit-runtime[serve]'") from error  # fmt: skip
    folder = Path(args.folder)
    check_folder(folder, "onnx")
    settings = server_settings(args.workers, args.api_keys_file, no_auth=args.no_auth or None,
                               torch_threads=args.threads)  # fmt: skip
    if settings.no_auth:
        print(no_auth_warning(args.host, args.port), file=sys.stderr)
    print(f"siamkit serve: {folder} (onnx) on http://{args.host}:{args.port} (docs: /docs)",
          file=sys.stderr)  # fmt: skip
    run_server(folder, args.gallery, settings, "onnx", args.host, args.port, args.workers)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, print the result as one JSON line; errors as one line, exit 1."""
    parser = argparse.ArgumentParser(prog="python -m siamkit.runtime")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="score two inputs and decide at the threshold")
    check.add_argument("folder", help="exported model folder (siamkit export)")
    check.add_argument("questioned", help="the input to check (file or text)")
    check.add_argument("others", nargs="+", help="the input to compare with, or the references")
    check.add_argument("--references", action="store_true", help="OTHERS are K references")
    check.add_argument("--aggregate", choices=("mean", "max", "centroid"), default=None)
    http = commands.add_parser("serve", help="serve FOLDER over HTTP (as siamkit serve)")
    http.add_argument("folder", help="exported model folder (siamkit export)")
    http.add_argument("--gallery", help="gallery folder, Milvus Lite *.db or URI")
    http.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    http.add_argument("--port", type=int, default=8000)
    http.add_argument("--workers", type=int, default=1, help="worker processes (one gallery)")
    http.add_argument("--no-auth", action="store_true", help="no API keys: local experiments only")
    http.add_argument("--api-keys-file", help="file of keys, one a line: rw:<key> or ro:<key>")
    http.add_argument("--threads", type=int, help="ONNX Runtime threads per worker")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            serve(args)
            return 0
        print(json.dumps(verify(args)))
    except SiamkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
