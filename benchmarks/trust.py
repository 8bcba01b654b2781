"""Answers a person can trust: calibrated probabilities, faithful explanations and open-set
thresholds that keep their promise, measured on classes never seen in training.

    .venv/bin/python benchmarks/trust.py                       # every part
    .venv/bin/python benchmarks/trust.py --parts calibration   # one part; the others are kept

Parts: ``calibration`` (benchmarks/trust_calibration.py), ``explain`` (trust_explain.py),
``openset`` (trust_openset.py). Writes benchmarks/results/trust.json and trust.md.
"""

from benchmark_parts import run_parts

if __name__ == "__main__":
    run_parts(
        "trust",
        "Trust: calibration, explanations, open-set thresholds",
        ["calibration", "explain", "openset"],
    )
