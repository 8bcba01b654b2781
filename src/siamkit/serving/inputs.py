"""Reading request bodies within the server's limits: multipart uploads or JSON (base64 images,
texts). Every problem is an :class:`~fastapi.HTTPException` with a one-line message: 400 for bad
input, 413 for too much of it, 415 for a content type the endpoint does not take.

Decoding images is not done here: :mod:`siamkit.serving.model` decodes the bytes with the same
function as the CLI (:func:`siamkit.data.transforms.open_image`), on a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, TypeVar

from fastapi import HTTPException, Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from siamkit.serving.settings import ServeSettings

Body = TypeVar("Body", bound=BaseModel)
Blob = tuple[str, bytes]  # (name for messages, encoded image bytes)


class BodyTooLarge(Exception):
    """The request body passed ``max_upload_bytes`` while it was being read."""


class BodyLimitMiddleware:
    """Refuse bodies over ``limit`` bytes: at once from ``Content-Length``, or while reading a
    chunked body (:class:`BodyTooLarge`, answered 413 by the app)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                await _send_413(send, self.limit)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge(too_large_message(self.limit))
            return message

        await self.app(scope, receive if self.limit <= 0 else counted, send)


def too_large_message(limit: int) -> str:
    return f"request body larger than the limit of {limit} bytes"


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps({"detail": too_large_message(limit)}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def content_kind(request: Request, allowed: tuple[str, ...] = ("multipart", "json")) -> str:
    """``"multipart"`` or ``"json"`` from the Content-Type, if the endpoint takes it; else 415."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    kind = {"multipart/form-data": "multipart", "application/json": "json"}.get(media)
    if kind not in allowed:
        wanted = " or ".join({"multipart": "multipart/form-data", "json": "application/json"}[a]
                             for a in allowed)  # fmt: skip
        raise HTTPException(415, f"expected Content-Type {wanted}, got {media or 'none'}")
    return kind


async def read_json(request: Request, model: type[Body]) -> Body:
    """The JSON body validated as ``model``; 400 naming the first problem."""
    try:
        raw = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HTTPException(400, f"request body is not valid JSON ({error})") from error
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]) or "body"
        raise HTTPException(400, f"JSON body, {where}: {problem['msg']}") from error


async def read_form(request: Request, settings: ServeSettings) -> FormData:
    """The multipart form, with at most ``max_items`` + 2 parts of each kind; 400 if malformed."""
    try:
        return await request.form(
            max_files=settings.max_items + 2, max_fields=settings.max_items + 4
        )
    except HTTPException as error:  # starlette's own: malformed body, too many parts
        raise HTTPException(400, f"bad multipart body: {error.detail}") from error
    except (ValueError, KeyError, AssertionError) as error:
        raise HTTPException(400, f"bad multipart body: {error}") from error


async def form_files(
    form: FormData, field: str, settings: ServeSettings, least: int = 1
) -> list[Blob]:
    """The uploads of form ``field`` as (name, bytes): at least ``least``, at most ``max_items``."""
    values = form.getlist(field)
    if len(values) < least:
        raise HTTPException(400, f"multipart field {field!r}: expected at least {least} file(s), "
                                 f"got {len(values)}")  # fmt: skip
    check_count(len(values), settings, f"multipart field {field!r}")
    blobs = []
    for i, value in enumerate(values):
        if not isinstance(value, UploadFile):
            raise HTTPException(400, f"multipart field {field!r}: expected a file upload, "
                                     "got a text value")  # fmt: skip
        name = _printable(value.filename) or f"{field}[{i}]"
        blobs.append((name, await value.read()))
        await value.close()
    return blobs


def form_text(form: FormData, field: str, limit: int = 200) -> str:
    """A required text field of the form (stripped, non-empty, at most ``limit`` characters)."""
    value = form.get(field)
    if not isinstance(value, str) or not value.strip():
        raise HTTPException(400, f"multipart field {field!r}: expected a non-empty text value")
    if len(value) > limit:
        raise HTTPException(413, f"multipart field {field!r}: longer than {limit} characters")
    return value.strip()


def check_count(n: int, settings: ServeSettings, where: str) -> None:
    """413 when a request carries more than ``max_items`` inputs."""
    if n > settings.max_items:
        raise HTTPException(
            413, f"{where}: {n} inputs, more than the limit of {settings.max_items} per request"
        )


def check_texts(texts: list[str], settings: ServeSettings, where: str = "texts") -> list[str]:
    """The texts, if there are 1..max_items of at most ``max_text_chars`` characters each."""
    if not texts:
        raise HTTPException(400, f"{where}: expected at least one text")
    check_count(len(texts), settings, where)
    for i, text in enumerate(texts):
        if len(text) > settings.max_text_chars:
            raise HTTPException(413, f"{where}[{i}]: {len(text)} characters, more than the limit "
                                     f"of {settings.max_text_chars}")  # fmt: skip
    return texts


def decode_base64(text: str, where: str) -> Blob:
    """A base64 string (or a ``data:...;base64,`` URL) -> (where, bytes); 400 if it is not one."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise HTTPException(400, f"{where}: not valid base64 ({error})") from error
    if not data:
        raise HTTPException(400, f"{where}: empty image")
    return where, data


def _printable(name: Any) -> str:
    """An upload's file name, shortened and stripped of control characters, for messages."""
    if not isinstance(name, str):
        return ""
    return "".join(c for c in name if c.isprintable())[:100]
