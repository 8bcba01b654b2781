"""API-key checks: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

Keys are held as sha256 digests (see :class:`~siamkit.serving.settings.ServeSettings`); a
presented key is hashed and compared with every stored digest by ``hmac.compare_digest``, so the
time taken says nothing about how close a wrong key came. A missing or wrong key is a 401 with
``WWW-Authenticate: Bearer``; a read-only key on a write endpoint is a 403.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from siamkit.serving.settings import Role, ServeSettings, digest

bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key")
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="siamkit"'}


def role_of(settings: ServeSettings, key: str | None) -> Role | None:
    """The role of ``key`` (``"rw"``/``"ro"``), or ``None`` for a missing or unknown key."""
    if not key:
        return None
    presented = digest(key)
    found: Role | None = None
    for stored, role in settings.key_digests.items():  # no early exit: same time for every key
        if hmac.compare_digest(presented, stored):
            found = role
    return found


async def caller_role(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    header_key: Annotated[str | None, Depends(api_key_header)],
) -> Role:
    """The role of the request's key; 401 when it is missing or wrong (``rw`` with no auth)."""
    settings: ServeSettings = request.app.state.settings
    if settings.no_auth:
        return "rw"
    key = credentials.credentials if credentials is not None else header_key
    if not key:
        raise HTTPException(401, "missing API key: send Authorization: Bearer <key>", CHALLENGE)
    role = role_of(settings, key)
    if role is None:
        raise HTTPException(401, "invalid API key", CHALLENGE)
    return role


async def require_read(role: Annotated[Role, Depends(caller_role)]) -> Role:
    """Any valid key (verify, embed, identify, search, list people)."""
    return role


async def require_write(role: Annotated[Role, Depends(caller_role)]) -> Role:
    """A read-write key (enroll, delete, index); 403 for a read-only key."""
    if role != "rw":
        raise HTTPException(403, "this API key is read-only; enroll, delete and index need a "
                                 "read-write key")  # fmt: skip
    return role
