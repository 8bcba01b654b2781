"""Beyond one machine: DistributedDataParallel equivalence and throughput with gloo processes on
this machine, and a shared Optuna search on the digits recipe.

    .venv/bin/python benchmarks/scale_out.py                # every part
    .venv/bin/python benchmarks/scale_out.py --parts ddp    # one part; the others are kept

Parts: ``ddp`` (benchmarks/scale_out_ddp.py), ``tune`` (scale_out_tune.py).
Writes benchmarks/results/scale_out.json and scale_out.md.
"""

from benchmark_parts import run_parts

if __name__ == "__main__":
    run_parts("scale_out", "Scale out: distributed training and shared tuning", ["ddp", "tune"])
