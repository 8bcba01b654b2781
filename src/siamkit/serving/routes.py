"""The ``/v1/`` endpoints: embed, verify, similarity (the model) and enroll, identify, people,
index, search (the gallery). See ``docs/serve.md`` for every endpoint with a curl example."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from siamkit.errors import DataError, GalleryError
from siamkit.serving.auth import require_read, require_write
from siamkit.serving.batcher import Finish
from siamkit.serving.inputs import (
    Blob,
    check_count,
    check_texts,
    content_kind,
    decode_base64,
    form_files,
    form_text,
    read_form,
    read_json,
)
from siamkit.serving.schemas import (
    FILE,
    FILES,
    Deleted,
    Embeddings,
    EmbedJSON,
    Enrolled,
    ExplainJSON,
    Explanation,
    Identification,
    Indexed,
    PairJSON,
    People,
    SearchResults,
    Verification,
    errors,
    multipart,
    multipart_or_json,
)

router = APIRouter(prefix="/v1", tags=["v1"])
READ = [Depends(require_read)]
WRITE = [Depends(require_write)]
MODEL_ERRORS = errors(400, 401, 413, 415, 503)
GALLERY_READ_ERRORS = errors(400, 401, 404, 409, 413, 415, 422, 503)
GALLERY_WRITE_ERRORS = errors(400, 401, 403, 404, 409, 413, 415, 503)


def _server(request: Request) -> Any:
    server = request.app.state.server
    if not server.ready:
        detail = f"start-up failed: {server.failure}" if server.failure else "the model is loading"
        raise HTTPException(503, detail, headers={"Retry-After": "1"})
    return server


def _gallery(server: Any) -> Any:
    if server.gallery is None:
        raise HTTPException(404, "this server has no gallery: start it with --gallery PATH")
    return server.gallery


def torch_model(server: Any, feature: str) -> Any:
    """The :class:`~siamkit.model.Model` behind a torch server, for features that need the torch
    network (e.g. attributions); on an ONNX server a 501 naming the runtime."""
    if server.model.runtime != "torch":
        raise HTTPException(501, f"{feature} needs the torch runtime; this server runs "
                                 f"{server.model.runtime} (serve the model folder, not its "
                                 "export, with siamkit serve MODEL --runtime torch)")  # fmt: skip
    return server.model.model


def _check_k(k: int, server: Any) -> int:
    if k > server.settings.max_k:
        raise HTTPException(422, f"query k: at most {server.settings.max_k}, got {k}")
    return k


async def _embed_images(server: Any, blobs: list[Blob], finish: Finish | None = None) -> Any:
    """Decode + preprocess on the decode threads, then embed through the batcher (and
    ``finish`` the embeddings on the model thread)."""
    if server.model.kind != "image":
        raise HTTPException(400, "this is a text model: send texts as JSON")
    loop = asyncio.get_running_loop()
    tensors = await loop.run_in_executor(server.decoder, server.model.prepare, blobs)
    return await server.batcher.embed(tensors, finish)


async def _embed_texts(
    server: Any, texts: list[str], where: str = "texts", finish: Finish | None = None
) -> Any:
    if server.model.kind != "text":
        raise HTTPException(400, "this is an image model: send images (multipart or base64)")
    return await server.batcher.embed(check_texts(texts, server.settings, where), finish)


def _pair(server: Any) -> Finish:
    return lambda emb: _calibrated(server, server.model.pair(emb[0], emb[1]))


def _probability(server: Any, score: float, k: int | None = None, aggregate: str = "mean"):
    """(p, [low, high]) of ``score`` from the model's saved calibration, or None."""
    calibration = getattr(getattr(server.model, "model", None), "calibration", None)
    calibrator = None if calibration is None else calibration(k, aggregate)
    if calibrator is None:
        return None
    p, low, high = calibrator.probability([score])
    return float(p[0]), [float(low[0]), float(high[0])]


def _calibrated(server: Any, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with ``probability`` and ``probability_interval`` when the model is calibrated
    (per K and aggregate for reference sets)."""
    found = _probability(server, body["score"], body.get("references"),
                         body.get("aggregate") or "mean")  # fmt: skip
    if found is None:
        return body
    return body | {"probability": found[0], "probability_interval": found[1]}


def _as_body(emb: Any) -> dict[str, Any]:
    rows = np.asarray(emb)  # a torch tensor or a numpy array, whichever runtime serves
    if not np.isfinite(rows).all():
        raise DataError("the model gave non-finite embeddings for these inputs")
    return {"embeddings": rows.tolist(), "dim": int(rows.shape[1])}


@router.post(
    "/embed", dependencies=READ, response_model=None,
    responses={200: {"model": Embeddings}, **MODEL_ERRORS},
    openapi_extra=multipart_or_json(
        {"type": "object", "properties": {"files": FILES}, "required": ["files"]}, EmbedJSON
    ),
)  # fmt: skip
async def embed(request: Request) -> JSONResponse:
    """Embeddings of 1..n images (multipart ``files`` or JSON ``images`` in base64) or of texts
    (JSON ``texts``)."""
    server = _server(request)
    if content_kind(request) == "multipart":
        form = await read_form(request, server.settings)
        blobs = await form_files(form, "files", server.settings)
        return JSONResponse(await _embed_images(server, blobs, _as_body))
    else:
        body = await read_json(request, EmbedJSON)
        if (body.images is None) == (body.texts is None):
            raise HTTPException(400, 'JSON body: give exactly one of "images" or "texts"')
        if body.images is not None:
            if not body.images:
                raise HTTPException(400, "images: expected at least one image")
            check_count(len(body.images), server.settings, "images")
            blobs = [decode_base64(b, f"images[{i}]") for i, b in enumerate(body.images)]
            return JSONResponse(await _embed_images(server, blobs, _as_body))
        return JSONResponse(await _embed_texts(server, body.texts or [], finish=_as_body))


VERIFY_FORM = {
    "type": "object",
    "properties": {
        "a": FILE, "b": FILE, "questioned": FILE, "references": FILES,
        "aggregate": {"type": "string", "enum": ["mean", "max", "centroid"]},
    },
}  # fmt: skip


@router.post(
    "/verify", dependencies=READ, response_model=None,
    responses={200: {"model": Verification}, **MODEL_ERRORS},
    openapi_extra=multipart_or_json(VERIFY_FORM, PairJSON),
)  # fmt: skip
async def verify(request: Request) -> JSONResponse:
    """Are ``a`` and ``b`` the same (person, writer, meaning)? Multipart files ``a`` and ``b``, or
    JSON ``{"a", "b"}`` (base64 images; strings for a text model). Reference-set form: multipart
    ``questioned`` + ``references`` (K files, optional ``aggregate``)."""
    server = _server(request)
    if content_kind(request) == "json":
        body = await read_json(request, PairJSON)
        if server.model.kind == "text":
            return JSONResponse(await _embed_texts(server, [body.a, body.b], "a/b", _pair(server)))
        blobs = [decode_base64(body.a, "a"), decode_base64(body.b, "b")]
        return JSONResponse(await _embed_images(server, blobs, _pair(server)))
    form = await read_form(request, server.settings)
    if "questioned" in form or "references" in form:
        questioned = await form_files(form, "questioned", server.settings)
        references = await form_files(form, "references", server.settings)
        if len(questioned) != 1:
            raise HTTPException(400, "multipart field 'questioned': expected exactly one file")
        aggregate = form.get("aggregate")
        if aggregate is not None and not isinstance(aggregate, str):
            raise HTTPException(400, "multipart field 'aggregate': expected a text value")
        aggregate = aggregate or None
        answer = await _embed_images(
            server,
            questioned + references,
            lambda emb: _calibrated(server, server.model.against_references(emb, aggregate)),
        )
        return JSONResponse(answer)  # fmt: skip
    pair = []
    for field in ("a", "b"):
        files = await form_files(form, field, server.settings)
        if len(files) != 1:
            raise HTTPException(400, f"multipart field {field!r}: expected exactly one file")
        pair += files
    return JSONResponse(await _embed_images(server, pair, _pair(server)))


@router.post(
    "/similarity", dependencies=READ, response_model=None,
    responses={200: {"model": Verification}, **MODEL_ERRORS},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": PairJSON.model_json_schema()}}}},
)  # fmt: skip
async def similarity(request: Request) -> JSONResponse:
    """Similarity of two texts (text models only) and the decision at the model's threshold."""
    server = _server(request)
    content_kind(request, ("json",))
    body = await read_json(request, PairJSON)
    if server.model.kind != "text":
        raise HTTPException(400, "/v1/similarity is for text models; use /v1/verify for images")
    return JSONResponse(await _embed_texts(server, [body.a, body.b], "a/b", _pair(server)))


@router.post(
    "/enroll", dependencies=WRITE, response_model=None,
    responses={200: {"model": Enrolled}, **GALLERY_WRITE_ERRORS},
    openapi_extra=multipart(
        {"name": {"type": "string", "minLength": 1}, "files": FILES}, ["name", "files"]
    ),
)  # fmt: skip
async def enroll(request: Request) -> JSONResponse:
    """Enroll identity ``name`` with one template per image in ``files`` (read-write key)."""
    server = _server(request)
    gallery = _gallery(server)
    content_kind(request, ("multipart",))
    form = await read_form(request, server.settings)
    name = form_text(form, "name")
    blobs = await form_files(form, "files", server.settings)
    emb = np.asarray(await _embed_images(server, blobs))
    try:
        templates = await gallery.enroll(name, emb, [n for n, _ in blobs])
    except GalleryError as error:
        raise HTTPException(409, " ".join(str(error).split())) from error
    return JSONResponse({"name": name, "templates": templates})


async def _probe(request: Request, server: Any) -> np.ndarray:
    content_kind(request, ("multipart",))
    form = await read_form(request, server.settings)
    blobs = await form_files(form, "file", server.settings)
    if len(blobs) != 1:
        raise HTTPException(400, "multipart field 'file': expected exactly one file")
    return np.asarray(await _embed_images(server, blobs))


ONE_FILE = multipart({"file": FILE}, ["file"])


@router.post(
    "/identify", dependencies=READ, response_model=None,
    responses={200: {"model": Identification}, **GALLERY_READ_ERRORS}, openapi_extra=ONE_FILE,
)  # fmt: skip
async def identify(
    request: Request, k: Annotated[int, Query(ge=1, description="candidates to return")] = 3
) -> JSONResponse:
    """Who is in ``file``: the top-k enrolled identities; ``identity`` is null ("unknown") when
    the best score is below the model's gallery threshold."""
    server = _server(request)
    gallery = _gallery(server)
    _check_k(k, server)
    probe = await _probe(request, server)
    try:
        found, threshold = await gallery.identify(probe, k, server.model.gallery_threshold)
    except GalleryError as error:
        raise HTTPException(409, " ".join(str(error).split())) from error
    if not found.candidates:  # only indexed items, no enrolled identity
        raise HTTPException(409, "no identity is enrolled in the gallery: enroll someone first")
    candidates = [{"name": c.identity, "score": c.score} for c in found.candidates]
    body = {"identity": found.identity, "score": found.score, "threshold": threshold,
            "candidates": candidates}  # fmt: skip
    if _probability(server, found.score) is not None:  # P(same) of each probe-template pair
        for candidate in candidates:
            candidate["probability"] = _probability(server, candidate["score"])[0]  # type: ignore[index]
        body = _calibrated(server, body)
    return JSONResponse(body)


@router.get(
    "/people", dependencies=READ, response_model=None,
    responses={200: {"model": People}, **errors(401, 404, 503)},
)  # fmt: skip
async def people(request: Request) -> JSONResponse:
    """The enrolled identities and their number of image templates."""
    gallery = _gallery(_server(request))
    names = await gallery.people()
    return JSONResponse({"people": [{"name": n, "templates": c} for n, c in names.items()]})


@router.delete(
    "/people/{name}", dependencies=WRITE, response_model=None,
    responses={200: {"model": Deleted}, **errors(401, 403, 404, 422, 503)},
)  # fmt: skip
async def delete_person(request: Request, name: str) -> JSONResponse:
    """Remove identity ``name`` and all its templates (read-write key); 404 if not enrolled."""
    gallery = _gallery(_server(request))
    try:
        await gallery.remove(name)
    except GalleryError as error:
        raise HTTPException(404, f"identity {name!r} is not enrolled") from error
    return JSONResponse({"deleted": name})


@router.post(
    "/index", dependencies=WRITE, response_model=None,
    responses={200: {"model": Indexed}, **GALLERY_WRITE_ERRORS},
    openapi_extra=multipart(
        {"files": FILES, "ids": {"type": "string", "description": "comma-separated ids"}},
        ["files"],
    ),
)  # fmt: skip
async def index(request: Request) -> JSONResponse:
    """Store images for ``/v1/search`` under ``ids`` (comma-separated; default: file names)."""
    server = _server(request)
    gallery = _gallery(server)
    content_kind(request, ("multipart",))
    form = await read_form(request, server.settings)
    blobs = await form_files(form, "files", server.settings)
    raw = form.get("ids")
    if raw is not None and not isinstance(raw, str):
        raise HTTPException(400, "multipart field 'ids': expected comma-separated text")
    ids = [i.strip() for i in raw.split(",")] if raw else [n for n, _ in blobs]
    if len(ids) != len(blobs) or not all(ids):
        raise HTTPException(400, f"multipart field 'ids': expected {len(blobs)} non-empty "
                                 f"comma-separated ids (one per file), got {len(ids)}")  # fmt: skip
    emb = np.asarray(await _embed_images(server, blobs))
    try:
        added = await gallery.index(emb, ids)
    except GalleryError as error:
        raise HTTPException(409, " ".join(str(error).split())) from error
    return JSONResponse({"indexed": added})


@router.post(
    "/search", dependencies=READ, response_model=None,
    responses={200: {"model": SearchResults}, **GALLERY_READ_ERRORS}, openapi_extra=ONE_FILE,
)  # fmt: skip
async def search(
    request: Request, k: Annotated[int, Query(ge=1, description="results to return")] = 5
) -> JSONResponse:
    """The ``k`` stored images most similar to ``file`` (cosine similarity)."""
    server = _server(request)
    gallery = _gallery(server)
    _check_k(k, server)
    query = await _probe(request, server)
    try:
        results = await gallery.search(query, k)
    except GalleryError as error:
        raise HTTPException(409, " ".join(str(error).split())) from error
    return JSONResponse({"results": results})


EXPLAIN_FORM = {
    "type": "object",
    "properties": {"a": FILE, "b": FILE, "method": ExplainJSON.model_json_schema()["properties"][
        "method"], "baseline": ExplainJSON.model_json_schema()["properties"]["baseline"]},
    "required": ["a", "b"],
}  # fmt: skip


@router.post(
    "/explain", dependencies=READ, response_model=None,
    responses={200: {"model": Explanation}, **errors(400, 401, 413, 415, 501, 503)},
    openapi_extra=multipart_or_json(EXPLAIN_FORM, ExplainJSON),
)  # fmt: skip
async def explain(request: Request) -> JSONResponse:
    """Why did the model score images ``a`` and ``b`` as it did? Multipart files ``a``, ``b``
    (optional text fields ``method``, ``baseline``) or JSON (base64 images): the score, decision
    and one PNG per input with its attribution map overlaid (see docs/explain.md). Image models
    on the torch runtime only (501 on an ONNX server)."""
    server = _server(request)
    model = torch_model(server, "/v1/explain")
    if content_kind(request) == "json":
        body = await read_json(request, ExplainJSON)
        blobs = [decode_base64(body.a, "a"), decode_base64(body.b, "b")]
    else:
        form = await read_form(request, server.settings)
        blobs = []
        for field in ("a", "b"):
            files = await form_files(form, field, server.settings)
            if len(files) != 1:
                raise HTTPException(400, f"multipart field {field!r}: expected exactly one file")
            blobs += files
        options = {k: form.get(k) for k in ("method", "baseline") if form.get(k) is not None}
        body = _form_options(options)
    if server.model.kind != "image":
        raise HTTPException(400, "/v1/explain explains image pairs; use siamkit explain for text")
    loop = asyncio.get_running_loop()
    a, b = await loop.run_in_executor(server.decoder, server.model.prepare, blobs)
    answer = await loop.run_in_executor(None, _explained, model, a, b, body.method, body.baseline)
    return JSONResponse(_calibrated(server, answer))


def _form_options(options: dict[str, Any]) -> ExplainJSON:
    """The multipart form's text options checked by the JSON body's schema (400 if invalid)."""
    from pydantic import ValidationError

    try:
        return ExplainJSON.model_validate({"a": "", "b": "", **options})
    except ValidationError as error:
        first = error.errors()[0]
        raise HTTPException(400, f"multipart field {first['loc'][0]!r}: {first['msg']}") from error


def _explained(model: Any, a: Any, b: Any, method: str, baseline: str) -> dict[str, Any]:
    from siamkit.explain import explain_images, overlay_body

    explanation = explain_images(model.network, a, b, method, baseline, model.threshold)
    return overlay_body(explanation)
