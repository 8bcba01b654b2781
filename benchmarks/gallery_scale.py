"""Gallery search at scale: numpy brute force, FAISS flat, FAISS HNSW and Milvus Lite side by side.

For galleries of 10k, 100k and 1M random unit vectors (dim 128) it measures build time, memory
(growth of the resident set of this process and its children), single-query latency p50/p99
over a bounded number of queries, and recall@1/@10 against exact search. Queries are probes
near a stored vector (a stored vector plus noise, cosine ~0.8 to it), as in identification.

    .venv/bin/python benchmarks/gallery_scale.py                 # 10k, 100k, 1M
    .venv/bin/python benchmarks/gallery_scale.py --sizes 10000   # quick look

Writes benchmarks/results/gallery_scale.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
from rich.progress import track
from rich.table import Table

from benchmarks_common import RESULTS, console, environment, markdown_table, write_results
from siamkit.gallery.faiss_store import FaissStore
from siamkit.gallery.milvus_store import MilvusStore

PACKAGES = ["numpy", "torch", "faiss-cpu", "pymilvus", "milvus-lite"]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_data(n: int, dim: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random unit vectors, and ``queries`` noisy copies of some of them."""
    rng = np.random.default_rng(seed)
    base = unit(rng.standard_normal((n, dim), dtype=np.float32))
    picked = base[rng.choice(n, queries, replace=False)]
    noise = unit(rng.standard_normal((queries, dim), dtype=np.float32))
    return base, unit(0.8 * picked + 0.6 * noise)


def rss_mb() -> float:
    """Resident memory of this process and its children, in MB (Linux /proc)."""
    pids = [os.getpid()]
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        children = (task / "children").read_text().split()
        pids += [int(p) for p in children]
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        total += int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS")).split()[1])
    return total / 1024


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ base.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Fraction of the true top-k found in the returned top-k (k=1: the nearest itself)."""
    hits = [len(set(f[:k]) & set(t[:k])) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits) / k)


class Numpy:
    name = "numpy brute force"

    def build(self, base: np.ndarray, folder: Path) -> None:
        self.base = base.copy()  # its own storage, so the memory column counts it

    def search(self, query: np.ndarray, k: int) -> np.ndarray:
        scores = self.base @ query[0]
        top = np.argpartition(-scores, k)[:k]
        return top[np.argsort(-scores[top])][None, :]

    def close(self) -> None:
        del self.base


class Store:
    """A siamkit store; ids are 0..n-1 in insertion order for FAISS, mapped back for Milvus."""

    def __init__(self, name: str, factory: Callable[[Path], object]) -> None:
        self.name, self.factory = name, factory

    def build(self, base: np.ndarray, folder: Path) -> None:
        self.store = self.factory(folder)
        self.ids = self.store.add(base)
        self.store.save()
        self.position = {int(i): p for p, i in enumerate(self.ids)}

    def search(self, query: np.ndarray, k: int) -> np.ndarray:
        return self.store.search(query, k).ids

    def set_ef(self, ef: int) -> None:
        """HNSW search breadth (a search-time setting: one build serves every value)."""
        self.store.ef_search = ef

    def positions(self, ids: np.ndarray) -> np.ndarray:
        return np.vectorize(lambda i: self.position.get(int(i), -1))(ids)

    def close(self) -> None:
        self.store.close()
        del self.store, self.position


def backends(args: argparse.Namespace) -> list:
    hnsw = dict(hnsw_m=args.hnsw_m, ef_construction=args.ef_construction)
    milvus = dict(index_params={"M": args.hnsw_m, "efConstruction": args.ef_construction})
    return [
        Numpy(),
        Store("FAISS flat (exact)", lambda f: FaissStore(f / "flat", index="flat")),
        Store("FAISS HNSW", lambda f: FaissStore(f / "hnsw", index="hnsw", **hnsw)),
        Store("Milvus Lite HNSW", lambda f: MilvusStore(str(f / "milvus.db"), **milvus)),
    ]


def query_all(backend, queries: np.ndarray, truth: np.ndarray, k: int, label: str) -> dict:
    """Single-query latency percentiles and recall against exact search."""
    found, latency = [], []
    for q in track(queries, description=f"  {label}: queries", console=console):
        start = time.perf_counter()
        ids = backend.search(q[None, :], k)
        latency.append(time.perf_counter() - start)
        found.append(ids[0])
    found = np.array(found)
    if isinstance(backend, Store):
        found = backend.positions(found)
    ms = np.array(latency) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "recall_at_1": round(recall(found, truth, 1), 4),
        "recall_at_10": round(recall(found, truth, 10), 4),
    }


def measure(
    backend, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int, efs: list[int]
) -> list[dict]:
    """Build once; query once (exact back-ends) or once per HNSW efSearch value."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        before = rss_mb()
        start = time.perf_counter()
        backend.build(base, Path(tmp))
        build = time.perf_counter() - start
        memory = rss_mb() - before
        rows = []
        for ef in efs if "HNSW" in backend.name else [None]:
            if ef is not None:
                backend.set_ef(ef)
            label = backend.name if ef is None else f"{backend.name} ef={ef}"
            row = {"backend": label, "build_s": round(build, 2), "memory_mb": round(memory, 1)}
            row["queries"] = len(queries)
            rows.append(row | query_all(backend, queries, truth, k, label))
        backend.close()
    return rows


def hnsw_headline(rows: list[dict], size: int, min_recall: float = 0.99) -> dict:
    """Exact p50 / FAISS HNSW p50 at ``size``: the fastest efSearch reaching ``min_recall`` at
    recall@1, or (none does) the one of best recall."""
    at = [r for r in rows if r["size"] == size]
    exact = next(r for r in at if r["backend"] == "FAISS flat (exact)")
    hnsw = [r for r in at if r["backend"].startswith("FAISS HNSW")]
    good = [r for r in hnsw if r["recall_at_1"] >= min_recall]
    pick = (
        min(good, key=lambda r: r["p50_ms"]) if good else max(hnsw, key=lambda r: r["recall_at_1"])
    )
    tag = "1m" if size == 1_000_000 else str(size)
    return {
        f"hnsw_speedup_{tag}": round(exact["p50_ms"] / pick["p50_ms"], 1),
        f"hnsw_recall1_{tag}": pick["recall_at_1"],
        "hnsw_setting": pick["backend"],
        "target_met": bool(good) and exact["p50_ms"] / pick["p50_ms"] >= 20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument(
        "--ef-search",
        type=int,
        nargs="+",
        default=[128, 256, 512, 1024],
        help="HNSW efSearch values",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for the results")
    parser.add_argument(
        "--milvus-max", type=int, default=10**9, help="skip Milvus Lite above this size"
    )
    parser.add_argument(
        "--milvus-queries", type=int, default=50, help="queries for Milvus Lite (it is slow)"
    )
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    rows = []
    for n in args.sizes:
        console.rule(f"{n:,} vectors, dim {args.dim}")
        base, queries = make_data(n, args.dim, args.queries, args.seed)
        truth = exact_topk(base, queries, 10)
        for backend in backends(args):
            if isinstance(backend, Store) and "Milvus" in backend.name and n > args.milvus_max:
                console.print(f"  {backend.name}: skipped above {args.milvus_max:,} vectors")
                continue
            count = args.milvus_queries if "Milvus" in backend.name else args.queries
            for row in measure(backend, base, queries[:count], truth[:count], 10, args.ef_search):
                row = {"size": n, **row}
                console.print(row)
                rows.append(row)
    table = Table(title="Gallery search: single-query latency, recall against exact search")
    for key in rows[0]:
        table.add_column(key, justify="right")
    for row in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()))
    console.print(table)

    largest = max(args.sizes)
    headline = hnsw_headline(rows, largest)
    skipped = any(n > args.milvus_max for n in args.sizes)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    env = environment(args.seed, PACKAGES, threads=faiss.omp_get_max_threads())
    write_results(
        "gallery_scale",
        {**headline, "settings": settings, "environment": env, "rows": rows},
        "# Gallery search at scale\n\n"
        f"Command: `{env['command']}`  \n"
        f"Machine: {env['machine']}; faiss threads {env['threads']}; versions {env['versions']}; "
        f"seed {args.seed}; load average at the end {env['load_average']} (above the core count "
        "means other jobs shared the machine: compare rows, not absolute times).\n\n"
        f"Random unit vectors (dim {args.dim}); {args.queries} queries ({args.milvus_queries} of "
        "them for Milvus Lite), each a stored vector plus "
        "noise (cosine 0.8 to it), searched one at a time; recall against exact search. "
        f"HNSW: M={args.hnsw_m}, efConstruction={args.ef_construction}, "
        f"efSearch={args.ef_search}."
        + (f" Milvus Lite skipped above {args.milvus_max:,} vectors." if skipped else "")
        + "\n\n"
        + markdown_table(rows)
        + f"\nHeadline: {json.dumps(headline)} (speedup = p50 exact / p50 HNSW per query).\n",
        args.results,
    )


if __name__ == "__main__":
    main()
