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

from siamkit.audio_features import LogMelFeatures
from siamkit.encoders.base import Encoder
from siamkit.encoders.text import (
    VOCAB_FILE,
    RecurrentTextEncoder,
    masked_max,
    masked_mean,
    tokenize,
)
from siamkit.encoders.transformer import SentenceTransformerEncoder
from siamkit.errors import ConfigError
from siamkit.model import CONFIG_FILE, Model, load

ONNX_FILE = "encoder.onnx"
OPSET = 20  # torch.onnx's TorchScript exporter supports opsets up to 20
QUANTIZE = ("int8",)


def _direction(rnn: nn.RNNBase, layer: int, suffix: str, input_size: int) -> nn.RNNBase:
    """One direction of one layer of ``rnn`` as a one-layer, one-directional RNN (same weights)."""
    single = type(rnn)(input_size, rnn.hidden_size, batch_first=True, bias=rnn.bias)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        if hasattr(single, f"{name}_l0"):
            getattr(single, f"{name}_l0").data.copy_(getattr(rnn, f"{name}_l{layer}{suffix}"))
    return single.eval()


def _reverse_index(lengths: Tensor, steps: int) -> Tensor:
    """(B, T) index reversing each row's first ``length`` steps and leaving the padding."""
    t = torch.arange(steps, device=lengths.device)[None, :]
    return torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)


def _take(x: Tensor, index: Tensor) -> Tensor:
    return torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[2]))


class TextRnnGraph(nn.Module):
    """A :class:`RecurrentTextEncoder` on (B, T) padded ids and (B,) lengths (eval mode), plus
    (B, T, G) sub-word bucket ids and mask when the encoder has hashed sub-words.

    Packed sequences do not export, so each direction of each layer runs as a one-directional
    RNN over the padded batch: forwards on the steps as they are, backwards on each row's real
    steps reversed in place (padding left at the end). The states of the real steps then equal
    what ``pack_padded_sequence`` computes, and pooling reads the real steps only (``last``: the
    forward state at step ``length - 1`` and the backward state at step 0).
    """

    def __init__(self, encoder: RecurrentTextEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        rnn = encoder.rnn
        suffixes = ["", "_reverse"] if rnn.bidirectional else [""]
        layers = []
        for layer in range(rnn.num_layers):
            size = rnn.input_size if layer == 0 else rnn.hidden_size * len(suffixes)
            layers.append(nn.ModuleList(_direction(rnn, layer, s, size) for s in suffixes))
        self.layers = nn.ModuleList(layers)

    def forward(self, ids: Tensor, lengths: Tensor, *subwords: Tensor) -> Tensor:  # noqa: D102
        enc = self.encoder
        x = enc.embedding(ids)
        if subwords:
            bucket_ids, bucket_mask = subwords
            vectors = enc.subwords.table.weight[bucket_ids] * bucket_mask[..., None]
            x = x + vectors.sum(2) / bucket_mask.sum(2, keepdim=True).clamp_min(1.0)
        reverse = _reverse_index(lengths, ids.shape[1])
        finals = []
        for directions in self.layers:
            forward_states, _ = directions[0](x)
            outputs, finals = [forward_states], [_at(forward_states, lengths - 1)]
            if len(directions) == 2:
                backward_states, _ = directions[1](_take(x, reverse))
                backward_states = _take(backward_states, reverse)
                outputs.append(backward_states)
                finals.append(backward_states[:, 0])
            x = torch.cat(outputs, 2) if len(outputs) == 2 else outputs[0]
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]
        if enc.pooling == "last":
            out = torch.cat(finals, 1) if len(finals) == 2 else finals[0]
        elif enc.pooling == "max":
            out = masked_max(x, mask)
        elif enc.pooling == "mean":
            out = masked_mean(x, mask, lengths)
        else:
            out = torch.cat([masked_max(x, mask), masked_mean(x, mask, lengths)], 1)
        return F.normalize(out, dim=1) if enc.normalize else out


def _at(states: Tensor, steps: Tensor) -> Tensor:
    """(B, T, D) states at one step per row -> (B, D)."""
    return states[torch.arange(states.shape[0], device=states.device), steps]


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
    elif spec is not None and spec.name == "audio":
        features = LogMelFeatures(**params)
        shape = (1, features.n_mels, features.frames)
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
    texts = ["a sample text of five", "two"]
    ids, lengths = encoder.token_ids(texts)
    manifest: dict[str, Any] = {"kind": "text_rnn", "inputs": ["input_ids", "lengths"],
                                "max_length": encoder.max_length}  # fmt: skip
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "lengths": {0: "batch"}}
    sample = [ids, lengths]
    if encoder.subwords is not None:
        from siamkit.runtime.preprocess import subword_buckets

        buckets, sizes = encoder.subwords.buckets, list(encoder.subwords.sizes)
        manifest |= {"subword_buckets": buckets, "subword_sizes": sizes}
        manifest["inputs"] += ["subword_ids", "subword_mask"]
        words = [tokenize(t) for t in texts]
        bucket_ids, mask = subword_buckets(words, ids.shape[1], buckets, tuple(sizes))
        sample += [torch.from_numpy(bucket_ids), torch.from_numpy(mask)]
        axes |= {n: {0: "batch", 1: "tokens", 2: "pieces"} for n in manifest["inputs"][2:]}
    return TextRnnGraph(encoder), manifest, sample, axes


def _sentence_transformer_graph(model: Model, out: Path):
    encoder = model.network.encoder
    st = encoder.model
    tokenize = getattr(st, "preprocess", None) or st.tokenize  # preprocess: sentence-transformers 6
    batch = tokenize(["a sample sentence for the export", "two"])
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
