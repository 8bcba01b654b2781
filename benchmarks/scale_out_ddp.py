"""Part ``ddp`` of benchmarks/scale_out.py: DistributedDataParallel with gloo processes on this
machine, on the Omniglot batch-hard recipe (configs/omniglot-batch-hard.yaml).

Every run trains ``STEPS`` steps of one epoch with the recipe's data (background alphabets with
rotations), Conv-4 encoder, batch-hard triplet loss and class-balanced batches, in worker
processes forked from this one after the dataset is read (``siamkit.distributed.run_local``:
gloo, one thread per process, what ``torchrun --nproc-per-node N`` starts):

- equivalence: 2 processes with batch 64 each against 1 process with batch 128, both in float32
  (the recipe's bfloat16 autocast off), for the recipe's batch-hard loss (``mined``) and for a
  contrastive pair loss on the same network (``pairs``): the largest absolute difference of any
  weight or BatchNorm statistic after 1, 2, 5, 10 and 20 steps, with SGD and with the
  recipe's Adam. Float summation order alone separates them, and training amplifies such
  differences step by step (a ReLU or a max-pool choice flips, a near-zero Adam gradient changes
  sign). The figures are the differences after ``FIGURE_STEP`` steps;
- throughput: images per second of the recipe as it is (bfloat16 autocast, channels-last) with
  1 process x batch 128 and 2 processes x batch 64 (the same training), and 1 process x 64 (one
  rank's share alone: the difference is what the all-gather and all-reduce cost).

This machine has 2 cores shared with other jobs, so 2 processes cannot be much faster than 1: the
point is that the runs are equivalent and what the communication costs, not a speed-up.

    .venv/bin/python benchmarks/scale_out.py --parts ddp
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmark_parts import PartResult
from benchmarks_common import console, markdown_table
from siamkit import distributed
from siamkit.checkpoint import load_tensors, save_tensors
from siamkit.data.datasets import build_dataset
from siamkit.recipe import build_batches, build_network, build_recipe_loss, load_recipe
from siamkit.registry import ComponentSpec
from siamkit.training import fit

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "omniglot-batch-hard.yaml"
STEPS, GLOBAL_BATCH = 20, 128
SNAPSHOTS = (1, 2, 5, 10, 20)  # steps after which the equivalence runs' weights are compared
FIGURE_STEP = 5


def variant(
    kind: str,
    batch_size: int,
    steps: int,
    amp: bool,
    optimizer: str = "adam",
    per_step: bool = False,
) -> Any:
    """The recipe trained for ``steps`` steps of ``batch_size`` per process, constant lr (the
    recipe's 1e-3 for Adam, 1e-2 for SGD); the ``pairs`` kind swaps the batch-hard loss for a
    contrastive loss on pair batches. ``per_step``: one step per epoch (so the epoch callback
    sees the weights after every step)."""
    recipe = load_recipe(CONFIG)
    epochs, per_epoch = (steps, 1) if per_step else (1, steps)
    batches = recipe.batches.model_copy(
        update={"batch_size": batch_size, "batches_per_epoch": per_epoch,
                "examples_per_epoch": per_epoch * GLOBAL_BATCH}
    )  # fmt: skip
    training = recipe.training.model_copy(
        update={"epochs": epochs, "schedule": "none", "amp": amp,
                "channels_last": amp,
                "threads": 1, "optimizer": optimizer,
                "lr": recipe.training.lr if optimizer == "adam" else 0.01}
    )  # fmt: skip
    update: dict[str, Any] = {"batches": batches, "training": training}
    if kind == "pairs":
        update["loss"] = ComponentSpec(name="contrastive", params={"margin": 1.0})
    return recipe.model_copy(update=update)


def train_worker(recipe: Any, train: Any, folder: str) -> None:
    """One process of a run: build as ``run_recipe`` does, fit, and (rank 0) save the weights
    and the epoch's seconds."""
    torch.manual_seed(recipe.seed)
    network, _ = build_network(recipe)
    loss = build_recipe_loss(recipe, network, train.labels)
    config = recipe.training.model_copy(update={"seed": recipe.seed})

    def snapshot(epoch: int, record: dict) -> None:  # rank 0 only, after each epoch (= step)
        if epoch + 1 in SNAPSHOTS and recipe.batches.batches_per_epoch == 1:
            save_tensors(Path(folder) / f"step{epoch + 1}.safetensors", network.state_dict())

    history = fit(network, loss, build_batches(recipe, loss, train), config, folder,
                  show_progress=False, callbacks=[snapshot])  # fmt: skip
    if distributed.is_main():
        save_tensors(Path(folder) / "weights.safetensors", network.state_dict())
        record = history.epochs[-1]
        Path(folder, "timing.json").write_text(json.dumps(record))


def run_once(recipe: Any, train: Any, processes: int, folder: Path) -> dict[str, Any]:
    """Train ``recipe`` in ``processes`` forked processes; the weights and the epoch record."""
    folder.mkdir(parents=True, exist_ok=True)
    codes = distributed.run_local(
        train_worker, processes, (recipe, train, str(folder)), wait=3600, start_method="fork"
    )
    if codes != [0] * processes:
        raise RuntimeError(f"{processes}-process run in {folder} failed: exit codes {codes}")
    record = json.loads((folder / "timing.json").read_text())
    steps = {n: load_tensors(folder / f"step{n}.safetensors") for n in SNAPSHOTS
             if (folder / f"step{n}.safetensors").is_file()}  # fmt: skip
    return {**record, "weights": load_tensors(folder / "weights.safetensors"), "snapshots": steps}


def trajectory(a: dict[str, Any], b: dict[str, Any]) -> dict[int, float]:
    """Step -> largest absolute difference between two per-step runs."""
    return {n: max_abs_diff(a["snapshots"][n], b["snapshots"][n]) for n in a["snapshots"]}


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest absolute difference of any floating-point tensor of two state dicts."""
    return max(
        float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point()
    )


def run(quick: bool) -> PartResult:
    steps = 4 if quick else STEPS
    half = GLOBAL_BATCH // 2
    base = load_recipe(CONFIG)
    splits = build_dataset(base.data.name, base.data_dir, **base.data.params)
    work = Path(tempfile.mkdtemp(prefix="scale_out_ddp-"))
    console.print(f"training set: {len(splits.train)} images; {steps} steps per run; in {work}")
    load_before = [round(x, 2) for x in os.getloadavg()]

    curves, runs = {}, {}
    for optimizer, kinds in (("sgd", ("pairs", "mined")), ("adam", ("mined",))):
        for kind in kinds:
            name = f"{kind}_{optimizer}"

            def once(batch, processes, kind=kind, optimizer=optimizer):
                recipe = variant(kind, batch, steps, False, optimizer, per_step=True)
                folder = work / f"{kind}_{optimizer}-{processes}x{batch}"
                return run_once(recipe, splits.train, processes, folder)

            curves[name] = trajectory(once(half, 2), once(GLOBAL_BATCH, 1))
            console.print(f"{name}: 2 processes x 64 vs 1 x 128 by step: {curves[name]}")
    for name, batch, processes in (("1proc", GLOBAL_BATCH, 1), ("2proc", half, 2),
                                   ("1proc_half", half, 1)):  # fmt: skip
        runs[name] = run_once(variant("mined", batch, steps, True), splits.train, processes,
                              work / f"speed-{name}")  # fmt: skip
        runs[name]["images"] = steps * batch * processes
        runs[name]["images_per_s"] = runs[name]["images"] / runs[name]["seconds"]
        console.print(f"{name}: {runs[name]['images_per_s']:.1f} images/s")
    amp_diff = max_abs_diff(runs["2proc"]["weights"], runs["1proc"]["weights"])
    at = max(n for n in SNAPSHOTS if n <= min(FIGURE_STEP, steps))
    load_after = [round(x, 2) for x in os.getloadavg()]
    figures = {
        "ddp_max_abs_diff_pairs": curves["pairs_sgd"][at],
        "ddp_max_abs_diff_mined": curves["mined_sgd"][at],
        "images_per_s_1proc": round(runs["1proc"]["images_per_s"], 1),
        "images_per_s_2proc": round(runs["2proc"]["images_per_s"], 1),
    }
    curve_rows = [
        {"run": name, **{f"step {n}": f"{d:.2g}" for n, d in curve.items()}}
        for name, curve in curves.items()
    ]
    rows = [
        {"run": "1 process x 128", "images/s": round(runs["1proc"]["images_per_s"], 1),
         "s per step": round(runs["1proc"]["seconds"] / steps, 3)},
        {"run": "2 processes x 64 (same training)", "images/s": figures["images_per_s_2proc"],
         "s per step": round(runs["2proc"]["seconds"] / steps, 3)},
        {"run": "1 process x 64 (one rank's share alone)",
         "images/s": round(runs["1proc_half"]["images_per_s"], 1),
         "s per step": round(runs["1proc_half"]["seconds"] / steps, 3)},
    ]  # fmt: skip
    step_cost = runs["2proc"]["seconds"] / steps - runs["1proc_half"]["seconds"] / steps
    markdown = f"""Omniglot batch-hard recipe (Conv-4, 64 characters x 2 drawers per global batch of
{GLOBAL_BATCH}), {steps} steps per run, gloo processes forked on this 2-core machine (load average
{load_before} at the start, {load_after} at the end: shared with other jobs; the point is
correctness and overhead, not speed).

**Equivalence** (float32; SGD at lr 0.01 with momentum 0.9, or the recipe's Adam at lr 1e-3):
the largest absolute difference of any weight or BatchNorm statistic between 2 processes x 64 and
1 process x 128, after each number of steps. BatchNorm statistics are taken over
the global batch (`training.sync_batchnorm`, default on). The figures `ddp_max_abs_diff_pairs`
(contrastive pairs on the recipe's network) and `ddp_max_abs_diff_mined` (the recipe's
batch-hard loss) are the SGD differences after {at} steps.

{markdown_table(curve_rows)}

The runs start equal up to float rounding; training then amplifies any difference in summation
order (a ReLU or max-pool choice flips; Adam's first steps are about lr x sign(gradient), so a
near-zero gradient whose sign flips moves a weight by 2 lr), so the later columns measure that
amplification rather than a difference in what is computed. (A control without DDP, the same
1-process run with channels-last convolutions, was started but ran about 20 times slower in
float32 on this loaded machine and was dropped.) With the recipe's bfloat16
autocast (the throughput runs below, {steps} steps) 2 x 64 and 1 x 128 end {amp_diff:.2g} apart.

**Throughput** (the recipe as it is: bfloat16 autocast, channels-last, 1 thread per process):

{markdown_table(rows)}

On 2 cores the 2 processes share the CPU with each other and with the machine's other jobs; the
step of 2 processes x 64 took {step_cost:+.3f} s more than one process's step of 64 alone: the
gradient all-reduce, the all-gather of embeddings and labels, the BatchNorm statistics'
all-reduce and the contention for the 2 cores together.
"""
    details = {
        "steps": steps, "global_batch": GLOBAL_BATCH, "load_average_start": load_before,
        "load_average_end": load_after,
        "ddp_max_abs_diff_mined_bf16": amp_diff,
        "max_abs_diff_by_step": curves,
        "images_per_s_1proc_half_batch": round(runs["1proc_half"]["images_per_s"], 1),
        "seconds": {k: v["seconds"] for k, v in runs.items()},
        "final_loss": {k: v["loss"] for k, v in runs.items()},
    }  # fmt: skip
    return PartResult(figures=figures, markdown=markdown, details=details, seed=base.seed)
