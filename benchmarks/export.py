"""Eager PyTorch vs ONNX Runtime (float32 and dynamic int8) side by side, in one run.

Models: the faces Conv-4 (``runs/faces/model``, trained by ``siamkit train configs/faces.yaml``;
trained here first if missing), the signatures Conv-4 (the encoder and preprocessing of
``configs/signatures-conv4.yaml`` with seeded random weights: speed, size and parity only) and
all-MiniLM-L6-v2 (the bundled sentence-transformer as shipped). For each: encoder throughput
(inputs per second) at batch 1 and 64 with the same thread count for torch and ONNX Runtime,
interleaved rounds, median; file sizes; max |ONNX - eager| over real inputs (faces of the test
people, signatures, STS-B sentences). For faces, the verification EER over every pair of the
test people's images with the eager, fp32 and int8 embeddings, and the share of pairs decided
the same at the saved threshold.

    .venv/bin/python benchmarks/export.py              # 1 thread each, 5 rounds
    .venv/bin/python benchmarks/export.py --threads 2 --rounds 7

Writes benchmarks/results/export.json and export.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

import siamkit
from benchmarks_common import environment, markdown_table, shown, target_report, write_results
from siamkit.data.paths import dataset_dir
from siamkit.evaluation.faces_eval import PEOPLE, verification_metrics
from siamkit.evaluation.image_folder_eval import class_files, unseen_part
from siamkit.export import export_graph, export_onnx
from siamkit.runtime import load_onnx

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT / "runs" / "faces" / "model"
SEED = 0
PACKAGES = ["numpy", "torch", "onnx", "onnxruntime", "sentence-transformers"]


def faces_model() -> tuple[Path, list[Path], np.ndarray]:
    """The trained faces model (trained now if missing) and its test people's image files."""
    if not FACES.is_dir():
        from siamkit.recipe import load_recipe, run_recipe

        run_recipe(load_recipe(ROOT / "configs" / "faces.yaml"), FACES.parent)
    root = dataset_dir("att_faces")
    data, _ = unseen_part(siamkit.load(FACES), class_files(root), root, PEOPLE)
    return FACES, list(data.items), data.labels.numpy()


def signatures_model(tmp: Path) -> tuple[Path, list[Path]]:
    """configs/signatures-conv4.yaml's encoder and preprocessing, seeded random weights."""
    from siamkit.encoders import build_encoder
    from siamkit.heads import HEADS
    from siamkit.siamese import SiameseNetwork

    torch.manual_seed(SEED)
    encoder = {"name": "conv4", "params": {"input_size": [78, 110], "channels": 32,
                                           "embedding_dim": 64}}  # fmt: skip
    preprocess = {"name": "signature", "params": {"size": [78, 110], "canvas": [310, 440],
                                                  "std": 0.1}}  # fmt: skip
    head = {"name": "euclidean"}
    net = SiameseNetwork(build_encoder(encoder), HEADS.build(head)).eval()
    folder = siamkit.save_model(tmp / "signatures", net, encoder, head, preprocess, -1.0)
    files = sorted((dataset_dir("signatures") / "genuine").rglob("*.png"))[::8]
    return folder, files


def minilm_model(tmp: Path) -> tuple[Path, list[str]]:
    """all-MiniLM-L6-v2 as shipped (cosine head) and STS-B test sentences."""
    from siamkit.data.text import read_stsb
    from siamkit.encoders import build_encoder
    from siamkit.heads import HEADS
    from siamkit.siamese import SiameseNetwork

    encoder = {"name": "sentence_transformer", "params": {"model": "all-MiniLM-L6-v2"}}
    net = SiameseNetwork(build_encoder(encoder), HEADS.build({"name": "cosine"})).eval()
    folder = siamkit.save_model(tmp / "minilm", net, encoder, {"name": "cosine"}, None, 0.5)
    pairs = read_stsb("test", dataset_dir("stsbenchmark"))
    return folder, pairs.a[:128] + pairs.b[:128]


def throughput(run, calls: int, batch: int) -> float:
    """Inputs per second of ``calls`` calls of ``run`` on a batch of ``batch``."""
    run()  # warm-up
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return calls * batch / (time.perf_counter() - start)


def speeds(folder: Path, fp32: Path, int8: Path, inputs: list, threads: int, rounds: int):
    """Median throughput of eager / ORT fp32 / ORT int8 at batch 1 and 64 (interleaved)."""
    loaded = siamkit.load(folder)
    graph, manifest, _, _ = export_graph(loaded, Path(tempfile.mkdtemp()))
    graph.eval()
    sessions = {"onnx_fp32": load_onnx(fp32, threads), "onnx_int8": load_onnx(int8, threads)}
    out: dict[int, dict[str, float]] = {}
    for batch in (1, 64):
        arrays = sessions["onnx_fp32"].prepare((inputs * 64)[:batch])
        tensors = [torch.from_numpy(arrays[name]) for name in manifest["inputs"]]
        calls = (
            max(3, 256 // batch) if manifest["kind"] != "sentence_transformer" else 24 // batch + 2
        )

        def eager(tensors: list[torch.Tensor] = tensors) -> None:
            with torch.inference_mode():
                graph(*tensors)

        runners = {"eager": eager}
        for name, model in sessions.items():
            runners[name] = lambda m=model, a=arrays: m.session.run(None, a)
        seen: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(rounds):
            for name, run in runners.items():
                seen[name].append(throughput(run, calls, batch))
        out[batch] = {name: statistics.median(values) for name, values in seen.items()}
    return out


def parity(folder: Path, fp32: Path, int8: Path, inputs: list) -> dict[str, Any]:
    eager = siamkit.load(folder).embed(inputs).numpy()
    a, b = load_onnx(fp32).embed(inputs), load_onnx(int8).embed(inputs)
    return {"eager": eager, "fp32": a, "int8": b,
            "max_abs_diff": float(np.abs(a - eager).max()),
            "int8_max_abs_diff": float(np.abs(b - eager).max())}  # fmt: skip


def faces_metrics(embeddings: dict[str, np.ndarray], labels: np.ndarray, threshold: float):
    """EER (%) of each embedding set and the share of pairs decided as eager decides them."""
    i, j = np.triu_indices(len(labels), 1)
    out: dict[str, float] = {}
    decisions = {}
    for name in ("eager", "fp32", "int8"):
        x = embeddings[name] / np.linalg.norm(embeddings[name], axis=1, keepdims=True)
        out[f"eer_{name}"] = 100 * verification_metrics(embeddings[name], labels)["eer"]
        decisions[name] = np.einsum("nd,nd->n", x[i], x[j]) >= threshold
    for name in ("fp32", "int8"):
        out[f"same_decisions_{name}"] = float((decisions[name] == decisions["eager"]).mean())
    out["pairs"] = float(len(i))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    tmp = Path(tempfile.mkdtemp(prefix="siamkit-export-"))
    faces, face_files, labels = faces_model()
    models = {
        "faces Conv-4": (faces, face_files),
        "signatures Conv-4": signatures_model(tmp),
        "MiniLM-L6": minilm_model(tmp),
    }
    rows, summary, found = [], {}, {}
    for name, (folder, inputs) in models.items():
        fp32 = export_onnx(folder, tmp / f"{name} fp32")
        int8 = export_onnx(folder, tmp / f"{name} int8", quantize="int8")
        sizes = {k: (p / "encoder.onnx").stat().st_size / 1e6 for k, p in (("fp32", fp32),
                 ("int8", int8))}  # fmt: skip
        found[name] = parity(folder, fp32, int8, inputs)
        speed = speeds(folder, fp32, int8, inputs, args.threads, args.rounds)
        for batch, values in speed.items():
            rows.append({
                "model": name, "batch": batch,
                "eager /s": f"{values['eager']:.1f}",
                "onnx fp32 /s": f"{values['onnx_fp32']:.1f}",
                "onnx int8 /s": f"{values['onnx_int8']:.1f}",
                "fp32 speed-up": f"{values['onnx_fp32'] / values['eager']:.2f}",
                "int8 speed-up": f"{values['onnx_int8'] / values['eager']:.2f}",
                "fp32 MB": f"{sizes['fp32']:.2f}", "int8 MB": f"{sizes['int8']:.2f}",
                "max abs diff fp32": f"{found[name]['max_abs_diff']:.1e}",
                "max abs diff int8": f"{found[name]['int8_max_abs_diff']:.1e}",
            })  # fmt: skip
            if name == "faces Conv-4":
                summary[f"onnx_speedup_batch{batch}"] = values["onnx_fp32"] / values["eager"]
                summary[f"int8_speedup_batch{batch}"] = values["onnx_int8"] / values["eager"]
        summary.setdefault("sizes_mb", {})[name] = sizes
        summary.setdefault("speeds", {})[name] = speed
        if name == "faces Conv-4":
            summary["int8_size_ratio"] = sizes["int8"] / sizes["fp32"]
    summary["max_abs_diff"] = max(v["max_abs_diff"] for v in found.values())
    summary["max_abs_diff_by_model"] = {k: v["max_abs_diff"] for k, v in found.items()}
    threshold = float(siamkit.load(faces).threshold)
    face = faces_metrics(found["faces Conv-4"], labels, threshold)
    summary["faces"] = face
    summary["int8_metric_delta"] = face["eer_int8"] - face["eer_fp32"]
    targets = target_report([
        ("ONNX fp32 speed-up at batch 1 on faces", summary["onnx_speedup_batch1"], 1.5, ">="),
        ("int8 size ratio on faces", summary["int8_size_ratio"], 0.30, "<="),
        ("|int8 EER delta| (points)", abs(summary["int8_metric_delta"]), 0.5, "<="),
        ("max abs diff fp32", summary["max_abs_diff"], 1e-4, "<="),
    ])  # fmt: skip
    summary["targets"] = targets
    env = environment(SEED, PACKAGES, args.threads)
    notes = [
        f"Encoder forward only (inputs preprocessed once), {args.threads} thread(s) for torch "
        f"and ONNX Runtime alike, median of {args.rounds} interleaved rounds; inputs/second.",
        f"Faces ({shown(faces)}, {len(face_files)} images of the test people, "
        f"{int(face['pairs'])} pairs): EER eager {face['eer_eager']:.2f}%, ONNX fp32 "
        f"{face['eer_fp32']:.2f}%, int8 {face['eer_int8']:.2f}% (int8 - fp32 = "
        f"{summary['int8_metric_delta']:+.2f} points); pairs decided as eager at the saved "
        f"threshold {threshold:.4f}: fp32 {100 * face['same_decisions_fp32']:.2f}%, int8 "
        f"{100 * face['same_decisions_int8']:.2f}%.",
        "int8 = ONNX Runtime dynamic quantisation (QInt8 weights of Conv/MatMul/Gemm, "
        "activations quantised at run time). The signatures Conv-4 has random weights "
        "(speed, size and parity only).",
        f"Targets: {targets}.",
    ]
    for note in notes:
        print(note)
    table = markdown_table(rows)
    print(table)
    text = "# Export: eager PyTorch vs ONNX Runtime\n\n" + table + "\n"
    text += "".join(f"{n}\n\n" for n in notes)
    text += "## Machine and run\n\n" + "\n".join(f"- {k}: `{v}`" for k, v in env.items()) + "\n"
    write_results("export", {**summary, "rows": rows, "environment": env}, text)


if __name__ == "__main__":
    main()
