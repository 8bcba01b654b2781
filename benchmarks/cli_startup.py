"""CLI start-up: how long ``siamkit --help`` and ``siamkit verify`` take, next to ``import torch``.

Each command runs in a fresh process, the three (and any ``--variant``) in turn, ``--repeats``
times, so machine noise hits all alike; medians are reported. Wall time is what a user waits;
child CPU time (user + system) is also recorded because on a shared machine the wall time swings
with the other jobs. ``verify`` scores the two demo images with the demo model (trained with
``siamkit demo --out runs/demo`` first when it is missing). One ``python -X importtime`` run of
``verify`` lists the imports that cost the most besides torch.

    python benchmarks/cli_startup.py                          # 7 repeats
    python benchmarks/cli_startup.py --variant lazy=/tmp/src  # also a source tree on PYTHONPATH

Targets (issue 17): ``siamkit --help`` <= 0.5 s, ``siamkit verify`` <= 3 s on an idle core.
Writes benchmarks/results/cli_startup.json and .md.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks_common import (
    REPOSITORY,
    environment,
    markdown_table,
    shown,
    target_report,
    write_results,
)

TARGETS = {"help_seconds": 0.5, "verify_seconds": 3.0}
HEAVY = ("torch", "torchvision", "sklearn", "scipy", "pandas", "matplotlib")
ENTRY = "import sys; from siamkit.cli import main; sys.exit(main())"


def siamkit_command() -> list[str]:
    """The installed ``siamkit`` script next to this interpreter, else the same entry point."""
    script = Path(sys.executable).with_name("siamkit")
    return [str(script)] if script.is_file() else [sys.executable, "-c", ENTRY]


def demo_model(folder: Path) -> tuple[Path, Path, Path]:
    """The demo model and two example images, training the demo into ``folder`` if missing."""
    model, examples = folder / "model", folder / "examples"
    if not (model / "config.json").is_file() or not (examples / "six_b.png").is_file():
        print(f"training the demo model into {folder} (siamkit demo)")
        subprocess.run([*siamkit_command(), "demo", "--out", str(folder)], check=True)
    return model, examples / "six_a.png", examples / "six_b.png"


def timed_run(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one run of ``command``; it must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def with_pythonpath(path: str | None) -> dict[str, str]:
    """This environment, with ``path`` first on PYTHONPATH when given."""
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH")) if p)
    return env


def heavy_modules(args: list[str], env: dict[str, str]) -> list[str]:
    """The heavy packages (:data:`HEAVY`) left in ``sys.modules`` after ``main(args)``."""
    code = (
        "import sys\nfrom siamkit.cli import main\nmain(sys.argv[1:])\n"
        f"print('HEAVY', *sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, check=True, capture_output=True, text=True
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("HEAVY"))
    return line.split()[1:]


def costly_imports(args: list[str], env: dict[str, str], floor: float = 0.03) -> dict[str, float]:
    """Top-level imports of one ``python -X importtime`` run of ``main(args)`` that took more
    than ``floor`` seconds (cumulative, in seconds)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", ENTRY, *args],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    costs: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        if len(name) - len(name.lstrip()) <= 1:  # imported by the command, not by a module
            costs[name.strip()] = costs.get(name.strip(), 0.0) + int(cumulative) / 1e6
    return {k: round(v, 3) for k, v in sorted(costs.items(), key=lambda kv: -kv[1]) if v > floor}


def measure(
    commands: dict[str, tuple[list[str], dict[str, str]]], repeats: int
) -> dict[str, dict[str, Any]]:
    """Run every command once per round, ``repeats`` rounds; medians and all samples."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for round_ in range(repeats):
        for name, (command, env) in commands.items():
            samples[name].append(timed_run(command, env))
        print(f"round {round_ + 1}/{repeats}: " + ", ".join(
            f"{name} {samples[name][-1][0]:.2f} s" for name in commands
        ))  # fmt: skip
    return {
        name: {
            "median_wall": round(statistics.median(w for w, _ in runs), 3),
            "min_wall": round(min(w for w, _ in runs), 3),
            "median_cpu": round(statistics.median(c for _, c in runs), 3),
            "wall": [round(w, 3) for w, _ in runs],
            "cpu": [round(c, 3) for _, c in runs],
        }
        for name, runs in samples.items()
    }


def beyond(command: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float]:
    """Median over rounds of ``command``'s time minus ``baseline``'s (wall and CPU)."""
    return {
        kind: round(statistics.median(a - b for a, b in zip(command[kind], baseline[kind],
                                                                strict=True)), 3)
        for kind in ("wall", "cpu")
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--demo", type=Path, default=REPOSITORY / "runs" / "demo")
    parser.add_argument(
        "--variant", action="append", default=[], metavar="NAME=PATH",
        help="also time help and verify with source tree PATH first on PYTHONPATH",
    )  # fmt: skip
    args = parser.parse_args()
    model, image_a, image_b = demo_model(args.demo)
    siamkit = siamkit_command()
    verify_args = ["verify", str(model), str(image_a), str(image_b)]
    variants: dict[str, str | None] = {"": None}
    variants |= dict(v.split("=", 1) for v in args.variant)
    commands: dict[str, tuple[list[str], dict[str, str]]] = {
        "import_torch": ([sys.executable, "-c", "import torch"], with_pythonpath(None))
    }
    for label, path in variants.items():
        suffix = f"[{label}]" if label else ""
        env = with_pythonpath(path)
        commands[f"help{suffix}"] = ([*siamkit, "--help"], env)
        commands[f"verify{suffix}"] = ([*siamkit, *verify_args], env)
    load_before = [round(x, 2) for x in os.getloadavg()]
    timings = measure(commands, args.repeats)
    default_env = with_pythonpath(None)
    probes = {
        "help_heavy_imports": heavy_modules(["--help"], default_env),
        "people_help_heavy_imports": heavy_modules(["people", "--help"], default_env),
        "verify_costly_imports": costly_imports(verify_args, default_env),
    }
    for label, path in variants.items():
        if label:
            probes[f"verify_costly_imports[{label}]"] = costly_imports(
                verify_args, with_pythonpath(path)
            )
    summary = {
        "help_seconds": timings["help"]["median_wall"],
        "verify_seconds": timings["verify"]["median_wall"],
        "import_torch_seconds": timings["import_torch"]["median_wall"],
        "help_cpu_seconds": timings["help"]["median_cpu"],
        "verify_cpu_seconds": timings["verify"]["median_cpu"],
        "import_torch_cpu_seconds": timings["import_torch"]["median_cpu"],
        "targets": TARGETS,
        "variants": {k: v for k, v in variants.items() if k},
        "repeats": args.repeats,
        "model": str(shown(model)),
        "load_average_before": load_before,
    }
    checks = {f"{kind}{f'[{label}]' if label else ''}": TARGETS[f"{kind}_seconds"]
              for label in variants for kind in ("help", "verify")}  # fmt: skip
    verdict, cpu_verdict = (
        target_report([(f"{name} {kind}", timings[name][f"median_{kind}"], goal, "<=")
                       for name, goal in checks.items()])
        for kind in ("wall", "cpu")
    )  # fmt: skip
    rows = [{"command": name, **{k: v for k, v in t.items() if k not in ("wall", "cpu")}}
            for name, t in timings.items()]  # fmt: skip
    beyond_torch = {name: beyond(timings[name], timings["import_torch"])
                    for name in timings if name.startswith("verify")}  # fmt: skip
    summary["verify_beyond_import_torch"] = beyond_torch
    env = environment(None, ["torch", "torchvision", "scikit-learn", "typer", "rich"])
    payload = {
        **summary, "verdict": verdict, "cpu_verdict": cpu_verdict, "timings": timings, **probes,
        "environment": env,
    }  # fmt: skip
    notes = [
        f"Targets on wall time: {verdict}.",
        f"On child CPU time (user + system; what one idle core would take, as the commands are "
        f"single-threaded but for torch's thread pool): {cpu_verdict}.",
        f"Median of {args.repeats} fresh processes each, interleaved; seconds. Load average "
        f"before {load_before}, after {env['load_average']} on {env['cores']} cores: on a busy "
        "machine every figure, import torch included, grows alike; compare with import_torch.",
        f"`siamkit --help` leaves {probes['help_heavy_imports'] or 'none'} of {', '.join(HEAVY)} "
        f"imported; `siamkit people --help` {probes['people_help_heavy_imports'] or 'none'}.",
        "verify beyond import torch (median over rounds of verify minus import torch, the part "
        "siamkit adds; less sensitive to the machine's load): "
        + "; ".join(f"{k}: wall {v['wall']} s, CPU {v['cpu']} s" for k, v in beyond_torch.items()),
        "Costliest top-level imports of `siamkit verify` (one -X importtime run, seconds): "
        + ", ".join(f"{k} {v}" for k, v in probes["verify_costly_imports"].items()),
    ]
    notes += [
        f"Variant {label}: PYTHONPATH={path}. Costliest imports of its verify: "
        + ", ".join(f"{k} {v}" for k, v in probes[f"verify_costly_imports[{label}]"].items())
        for label, path in variants.items() if label
    ]  # fmt: skip
    print(markdown_table(rows), *notes, sep="\n")
    text = "# CLI start-up\n\n" + markdown_table(rows) + "\n" + "".join(f"{n}\n\n" for n in notes)
    text += "## Machine and run\n\n" + "\n".join(f"- {k}: `{v}`" for k, v in env.items()) + "\n"
    write_results("cli_startup", payload, text)


if __name__ == "__main__":
    main()
