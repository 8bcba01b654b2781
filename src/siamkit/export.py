"""Export a model folder to ONNX: ``encoder.onnx`` + the model's ``config.json`` + its assets.

The encoder is exported with torch's TorchScript-based exporter (``dynamo=False``: the default
dynamo exporter needs the ``onnxscript`` package, which the ``export`` extra does not install)
at its highest opset, with a dynamic batch axis (and a dynamic length for 1-D signals and
texts). Test-time averaging (``flip_average``, ``shift_average``) and L2 normalisation are part
of the graph; tokenisation stays outside (token ids in). The head, the thresholds and the
preprocessing stay in ``config.json``; :mod:`siamkit.runtime` runs the folder without torch.

``quantize="int8"`` writes an ONNX Runtime dynamically quantised graph instead (int8 weights of
every Conv, MatMul and Gemm; activations quantised at run time), which needs no calibration data.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siamkit.encoders.base import Encoder
from siamkit.encoders.text import VOCAB_FILE, RecurrentTextEncoder, masked_max, masked_mean
from siamkit.encoders.transformer import SentenceTransformerEncoder
from siamkit.errors import ConfigError
from siamkit.model import CONFIG_FILE, Model, load

ONNX_FILE = "encoder.onnx"
OPSET = 20  # torch.onnx's TorchScript exporter supports opsets up to 20
QUANTIZE = ("int8",)


class TextRnnGraph(nn.Module):
    """A :class:`RecurrentTextEncoder` on (B, T) padded ids and (B,) lengths (eval mode).

    Packed sequences do not export, so the RNN runs over the padded batch: for a one-directional
    RNN the states of the real steps do not depend on the padding after them, and pooling reads
    the real steps only (``last``: the state at step ``length - 1``), which is what
    ``pack_padded_sequence`` computes.
    """

    def __init__(self, encoder: RecurrentTextEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:  # noqa: D102
        enc = self.encoder
        states, _ = enc.rnn(enc.embedding(ids))
        steps = torch.arange(ids.shape[1], device=ids.device)
        mask = steps[None, :] < lengths[:, None]
        if enc.pooling == "last":
            out = states[torch.arange(ids.shape[0]), lengths - 1]
        elif enc.pooling == "max":
            out = masked_max(states, mask)
        elif enc.pooling == "mean":
            out = masked_mean(states, mask, lengths)
        else:
            out = torch.cat([masked_max(states, mask), masked_mean(states, mask, lengths)], 1)
        return F.normalize(out, dim=1) if enc.normalize else out


class SentenceTransformerGraph(nn.Module):
    """A sentence-transformer on word-piece ids: the pooled (and normalised) embedding."""

    def __init__(self, encoder: SentenceTransformerEncoder, names: list[str]) -> None:
        super().__init__()
        self.encoder, self.names = encoder, names

    def forward(self, *arrays: Tensor) -> Tensor:  # noqa: D102
        out = self.encoder.model(dict(zip(self.names, arrays, strict=True)))["sentence_embedding"]
        return F.normalize(out, dim=1) if self.encoder.normalize else out


def _tensor_graph(model: Model) -> tuple[nn.Module, dict[str, Any], list[Tensor], dict]:
    """An image, vector or signal encoder: (graph, manifest, sample inputs, dynamic axes)."""
    encoder = model.network.encoder
    spec = model.config.preprocess
    params = spec.params if spec is not None else {}
    if spec is not None and spec.name == "image":
        shape = (3 if params.get("mode", "L") == "RGB" else 1, *params["size"])
    elif spec is not None and spec.name == "signature":
        shape = (1, *params.get("size", (155, 220)))
    elif spec is not None and spec.name == "vector":
        shape = (int(params["dim"]),)
    elif encoder.input_ndim == 2 and hasattr(encoder, "in_features"):
        shape = (encoder.in_features,)
    elif encoder.input_ndim == 3:
        shape = (encoder.in_channels or 1, 32)
    else:
        raise ConfigError(
            f"encoder {model.config.encoder.name!r}: the model folder has no image "
            "preprocessing, so the input size to export is unknown"
        )
    axes = {0: "batch", 2: "length"} if encoder.input_ndim == 3 else {0: "batch"}
    manifest = {"kind": "tensor", "inputs": ["input"], "input_shape": list(shape)}
    sample = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    return encoder, manifest, [sample], {"input": axes}


def _text_rnn_graph(model: Model) -> tuple[nn.Module, dict[str, Any], list[Tensor], dict]:
    encoder = model.network.encoder
    if encoder.rnn.bidirectional or encoder.subwords is not None:
        what = "bidirectional" if encoder.rnn.bidirectional else "subword_buckets > 0"
        raise ConfigError(
            f"encoder 'text_rnn' with {what} cannot be exported to ONNX: its padded batch "
            "would change the backward states (bidirectional) or its hashed sub-words are "
            "computed in Python; export a one-directional text_rnn without sub-words"
        )
    ids, lengths = encoder.token_ids(["a sample text of five", "two"])
    manifest = {"kind": "text_rnn", "inputs": ["input_ids", "lengths"],
                "max_length": encoder.max_length}  # fmt: skip
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "lengths": {0: "batch"}}
    return TextRnnGraph(encoder), manifest, [ids, lengths], axes


def _sentence_transformer_graph(model: Model, out: Path):
    encoder = model.network.encoder
    st = encoder.model
    batch = st.tokenize(["a sample sentence for the export", "two"])
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in batch]
    tokenizer = st.tokenizer
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    first = st[0]
    manifest = {
        "kind": "sentence_transformer",
        "inputs": names,
        "max_length": int(st.max_seq_length),
        "pad_id": int(tokenizer.pad_token_id),
        "pad_token": str(tokenizer.pad_token),
        "lowercase": bool(getattr(first, "do_lower_case", False)),
    }
    axes = {name: {0: "batch", 1: "tokens"} for name in names}
    return SentenceTransformerGraph(encoder, names), manifest, [batch[n] for n in names], axes


def export_graph(model: Model, out: Path) -> tuple[nn.Module, dict[str, Any], list[Tensor], dict]:
    """What to export for this model's encoder; a clear error for an encoder that cannot be."""
    encoder = model.network.encoder
    if isinstance(encoder, RecurrentTextEncoder):
        return _text_rnn_graph(model)
    if isinstance(encoder, SentenceTransformerEncoder):
        return _sentence_transformer_graph(model, out)
    if isinstance(encoder, Encoder) and encoder.input_ndim in (2, 3, 4):
        return _tensor_graph(model)
    raise ConfigError(
        f"encoder {model.config.encoder.name!r} ({type(encoder).__name__}) cannot be exported to "
        "ONNX; exportable: image, vector and signal encoders, text_rnn, sentence_transformer"
    )


def inline_identities(graph_model: Any) -> Any:
    """Drop ``Identity`` nodes that alias an initializer (the exporter's shared weights, e.g. the
    trunk run twice by ``flip_average``), so ONNX Runtime's quantiser sees initializers."""
    graph = graph_model.graph
    initializers = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias, kept = {}, []
    for node in graph.node:
        shared = node.op_type == "Identity" and node.input[0] in initializers
        if shared and node.output[0] not in outputs:
            alias[node.output[0]] = node.input[0]
            continue
        kept.append(node)
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = alias.get(name, name)
    del graph.node[:]
    graph.node.extend(kept)
    return graph_model


def _head_weights(model: Model) -> dict[str, Any] | None:
    head = model.network.head
    if model.config.head.name != "learned":
        return None
    return {"weight": head.linear.weight.detach().reshape(-1).tolist(),
            "bias": float(head.linear.bias.detach()[0])}  # fmt: skip


def _run_onnx(path: Path, names: list[str], sample: list[Tensor]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {n: t.numpy() for n, t in zip(names, sample, strict=True)})[0]


def export_onnx(
    model: str | Path, out: str | Path | None = None, quantize: str | None = None
) -> Path:
    """Export the model folder ``model`` to ``out`` (default ``<model>-onnx``); returns ``out``.

    Writes ``encoder.onnx``, ``config.json`` (the model's, with an ``extra["onnx"]`` manifest:
    graph inputs, opset, quantisation, the export-time parity check) and the tokenizer assets
    (``vocab.json`` or ``tokenizer.json``). Load it with :func:`siamkit.runtime.load_onnx`.
    """
    import onnx

    if quantize is not None and quantize not in QUANTIZE:
        raise ConfigError(f"quantize: expected one of {', '.join(QUANTIZE)}, got {quantize!r}")
    source = Path(model)
    loaded = load(source)
    out = Path(out) if out is not None else source.with_name(source.name + "-onnx")
    out.mkdir(parents=True, exist_ok=True)
    graph, manifest, sample, axes = export_graph(loaded, out)
    names = manifest["inputs"]
    path = out / ONNX_FILE
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings on shape checks, exporter deprecation
        torch.onnx.export(
            graph.eval(), tuple(sample), str(path), input_names=names,
            output_names=["embedding"], dynamic_axes={**axes, "embedding": {0: "batch"}},
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )  # fmt: skip
        expected = graph(*sample).float().numpy()
    onnx.save(inline_identities(onnx.load(str(path))), str(path))
    onnx.checker.check_model(str(path))
    fp32_diff = float(np.abs(_run_onnx(path, names, sample) - expected).max())
    if quantize == "int8":
        _quantize_int8(path)
    if manifest["kind"] == "text_rnn":
        shutil.copyfile(source / VOCAB_FILE, out / VOCAB_FILE)
    config = json.loads((source / CONFIG_FILE).read_text())
    config.setdefault("extra", {})["onnx"] = {
        **manifest,
        "file": ONNX_FILE,
        "opset": OPSET,
        "quantize": quantize,
        "head_weights": _head_weights(loaded),
        "export_max_abs_diff": fp32_diff,
        "torch_version": torch.__version__,
        "source": str(source),
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return out


def _quantize_int8(path: Path) -> None:
    """Replace ``path`` by its ONNX Runtime dynamic int8 quantisation (per-tensor weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = path.with_name("encoder.fp32.onnx")
    path.replace(fp32)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser's root-logger advice to pre-process the graph
    try:
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
        fp32.unlink(missing_ok=True)
