"""Trainer overhead: siamkit's ``fit`` vs a minimal hand-written PyTorch loop, side by side.

Both train the same Conv-4 pair model (contrastive loss, Adam) on the same balanced digit pairs for
the same number of steps, from the same initial weights. siamkit's run includes what users get by
default: the rich progress bar and a safetensors checkpoint every epoch. Runs alternate (siamkit,
plain, siamkit, ...) so machine noise hits both alike; the median time of each is compared.

Both wall time and process CPU time are recorded. On a shared machine wall time swings with the
other jobs, so the headline ratio uses CPU time with one torch thread (``--threads 1``, the
default), which counts the work each trainer does and not the time it waits for a core.

    python benchmarks/overhead.py            # 5 repeats x 2 epochs x 50 steps, 1 thread
    python benchmarks/overhead.py --quick    # 1 repeat, fewer steps
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from benchmarks_common import write_table
from siamkit.data.batches import PairBatches
from siamkit.data.datasets import build_dataset
from siamkit.data.pairs import make_pairs
from siamkit.encoders import build_encoder
from siamkit.heads import HEADS
from siamkit.losses import build_loss
from siamkit.siamese import SiameseNetwork
from siamkit.training import TrainConfig, fit

SEED, BATCH, MARGIN = 0, 64, 2.0


def make_network() -> SiameseNetwork:
    torch.manual_seed(SEED)
    encoder = build_encoder({"name": "conv4", "params": {"input_size": 28}})
    return SiameseNetwork(encoder, HEADS.build({"name": "euclidean"}))


def timed(run) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``run()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def run_siamkit(network, data, epochs: int, steps: int) -> tuple[float, float]:
    batches = PairBatches(data, steps * BATCH, BATCH, SEED)
    config = TrainConfig(epochs=epochs, lr=1e-3, seed=SEED)
    loss = build_loss({"name": "contrastive", "params": {"margin": MARGIN}}, network)
    with tempfile.TemporaryDirectory() as out:
        return timed(lambda: fit(network, loss, batches, config, out))


def run_plain(network, data, epochs: int, steps: int) -> tuple[float, float]:
    return timed(lambda: plain_loop(network, data, epochs, steps))


def plain_loop(network, data, epochs: int, steps: int) -> None:
    """The loop a PyTorch user would write by hand for the same model."""
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3, fused=True)  # as siamkit fit
    items, labels = data.items, data.labels
    network.train()
    for epoch in range(epochs):
        a, b, y = make_pairs(labels, steps * BATCH, SEED * 1_000_003 + epoch)
        for s in range(0, len(y), BATCH):
            x1 = items[a[s : s + BATCH]].float() / 255
            x2 = items[b[s : s + BATCH]].float() / 255
            target = y[s : s + BATCH]
            e1, e2 = network.encoder(torch.cat([x1, x2])).chunk(2)
            d = F.pairwise_distance(e1, e2)
            loss = 0.5 * (target * d**2 + (1 - target) * F.relu(MARGIN - d) ** 2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, 2 x 20 steps")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50, help="steps per epoch")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats, steps = (1, 20) if args.quick else (args.repeats, args.steps)
    epochs = 2
    data = build_dataset("digits", size=28).train
    initial = make_network()
    times: dict[str, list[tuple[float, float]]] = {"siamkit fit": [], "plain PyTorch loop": []}
    for _ in range(repeats):
        times["siamkit fit"].append(run_siamkit(copy.deepcopy(initial), data, epochs, steps))
        times["plain PyTorch loop"].append(run_plain(copy.deepcopy(initial), data, epochs, steps))
    wall = {name: statistics.median(w for w, _ in t) for name, t in times.items()}
    cpu = {name: statistics.median(c for _, c in t) for name, t in times.items()}
    ratio = cpu["siamkit fit"] / cpu["plain PyTorch loop"]
    wall_ratio = wall["siamkit fit"] / wall["plain PyTorch loop"]
    rows = [
        {"trainer": name, "median CPU s": round(cpu[name], 3),
         "median wall s": round(wall[name], 3),
         "steps per CPU s": round(epochs * steps / cpu[name], 2),
         "runs (wall/CPU s)": ", ".join(f"{w:.1f}/{c:.1f}" for w, c in times[name])}
        for name in times
    ]  # fmt: skip
    write_table(
        "overhead",
        title="Trainer overhead: siamkit fit vs a plain PyTorch loop",
        rows=rows,
        summary={"ratio": round(ratio, 4), "wall_ratio": round(wall_ratio, 4), "goal": 1.05,
                 "epochs": epochs, "steps_per_epoch": steps, "batch_pairs": BATCH,
                 "repeats": repeats, "threads": args.threads, "seed": SEED,
                 "model": "Conv-4 (64 ch) on 28x28 digits, contrastive, Adam"},
        notes=[f"CPU-time ratio siamkit / plain = **{ratio:.3f}** (goal <= 1.05); wall-time "
               f"ratio {wall_ratio:.3f} (noisy on a shared machine). siamkit's run includes its "
               "progress bar and a checkpoint per epoch."],
    )  # fmt: skip


if __name__ == "__main__":
    main()
