"""``python -m siamkit.runtime verify FOLDER QUESTIONED OTHER [--references REF ...]``: the
``siamkit verify`` of an exported folder, without torch (and without typer or rich)."""

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
    args = parser.parse_args(argv)
    try:
        print(json.dumps(verify(args)))
    except SiamkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
