"""What a server is allowed to do: API keys, input limits and micro-batching knobs.

:class:`ServeSettings` holds only **sha256 digests** of the API keys, never the keys. It is built
from code (:meth:`ServeSettings.with_keys`), from the environment (:meth:`ServeSettings.from_env`)
or by ``siamkit serve`` from its flags, and travels to ``uvicorn --workers`` processes as JSON
(:data:`SETTINGS_ENV`), digests included.

Environment variables (each overrides the default; flags of ``siamkit serve`` override them):
``SIAMKIT_API_KEYS`` (read-write keys, comma-separated), ``SIAMKIT_READONLY_API_KEYS``,
``SIAMKIT_API_KEYS_FILE`` (lines ``rw:<key>`` or ``ro:<key>``; a bare key is read-write),
``SIAMKIT_MAX_UPLOAD_BYTES``, ``SIAMKIT_MAX_IMAGE_PIXELS``, ``SIAMKIT_MAX_ITEMS``,
``SIAMKIT_MAX_TEXT_CHARS``, ``SIAMKIT_BATCHING`` (0/1), ``SIAMKIT_MAX_BATCH``,
``SIAMKIT_MAX_WAIT_MS``, ``SIAMKIT_QUEUE_SIZE``, ``SIAMKIT_TORCH_THREADS``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from siamkit.errors import ConfigError

Role = Literal["ro", "rw"]
SETTINGS_ENV = "SIAMKIT_SERVE_SETTINGS"
ENV_FIELDS = {
    "SIAMKIT_MAX_UPLOAD_BYTES": "max_upload_bytes",
    "SIAMKIT_MAX_IMAGE_PIXELS": "max_image_pixels",
    "SIAMKIT_MAX_ITEMS": "max_items",
    "SIAMKIT_MAX_TEXT_CHARS": "max_text_chars",
    "SIAMKIT_BATCHING": "batching",
    "SIAMKIT_MAX_BATCH": "max_batch",
    "SIAMKIT_MAX_WAIT_MS": "max_wait_ms",
    "SIAMKIT_QUEUE_SIZE": "queue_size",
    "SIAMKIT_TORCH_THREADS": "torch_threads",
}


def digest(key: str) -> str:
    """The sha256 hex digest under which an API key is stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ServeSettings(BaseModel):
    """Settings of one server (every worker process gets the same).

    ``key_digests`` maps the sha256 digest of each API key to its role: ``"rw"`` keys may call
    every endpoint, ``"ro"`` keys everything but enroll, delete and index.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    key_digests: dict[str, Role] = Field(default_factory=dict)
    no_auth: bool = False
    max_upload_bytes: int = Field(20 * 2**20, ge=1, description="request body bytes")
    max_image_pixels: int = Field(16_000_000, ge=1, description="width x height of one image")
    max_items: int = Field(32, ge=1, description="images or texts in one request")
    max_text_chars: int = Field(10_000, ge=1, description="characters of one text")
    batching: bool = True
    max_batch: int = Field(64, ge=1, description="inputs in one forward pass")
    max_wait_ms: float = Field(2.0, ge=0, description="wait for a batch to fill")
    queue_size: int = Field(256, ge=1, description="requests waiting for the model")
    torch_threads: int | None = Field(None, ge=1, description="torch or ONNX Runtime threads")
    max_k: int = Field(100, ge=1, description="largest k of identify and search")

    def with_keys(self, rw: Iterable[str] = (), ro: Iterable[str] = ()) -> ServeSettings:
        """A copy that also accepts the read-write keys ``rw`` and read-only keys ``ro``."""
        digests = dict(self.key_digests)
        for role, keys in (("ro", ro), ("rw", rw)):
            for key in keys:
                if key.strip():
                    digests[digest(key.strip())] = role  # type: ignore[assignment]
        return self.model_copy(update={"key_digests": digests})

    def check_auth(self) -> None:
        """Refuse to serve with authentication on and no key configured."""
        if not self.no_auth and not self.key_digests:
            raise ConfigError(
                "authentication is on but no API key is configured: set SIAMKIT_API_KEYS "
                "(comma-separated), pass --api-keys-file FILE, or --no-auth for a local experiment"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ServeSettings:
        """Settings from ``SIAMKIT_*`` environment variables (see the module doc), then
        ``overrides`` (values of ``None`` are ignored)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for name, field in ENV_FIELDS.items():
            if env.get(name, "").strip():
                values[field] = env[name].strip()
        values |= {k: v for k, v in overrides.items() if v is not None}
        try:
            settings = cls.model_validate(values)
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(p) for p in problem["loc"])
            raise ConfigError(f"server setting {where}: {problem['msg']}") from error
        keys_file = env.get("SIAMKIT_API_KEYS_FILE", "").strip()
        settings = settings.with_keys(
            rw=env.get("SIAMKIT_API_KEYS", "").split(","),
            ro=env.get("SIAMKIT_READONLY_API_KEYS", "").split(","),
        )
        return settings.with_key_file(keys_file) if keys_file else settings

    def with_key_file(self, path: str | Path) -> ServeSettings:
        """A copy that also accepts the keys of ``path``: one per line, ``rw:<key>`` or
        ``ro:<key>`` (a bare key is read-write); blank lines and ``#`` comments are skipped."""
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"API keys file {path}: cannot be read ({error})") from error
        rw, ro = [], []
        for number, line in enumerate(lines, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            role, _, key = line.partition(":") if line[:3] in ("ro:", "rw:") else ("rw", "", line)
            if not key.strip():
                raise ConfigError(f"API keys file {path}, line {number}: empty key")
            (ro if role == "ro" else rw).append(key)
        if not rw and not ro:
            raise ConfigError(f"API keys file {path}: no keys (expected rw:<key> or ro:<key>)")
        return self.with_keys(rw=rw, ro=ro)

    def to_env(self) -> str:
        """JSON for :data:`SETTINGS_ENV` (key digests only, never keys)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        """The settings :meth:`to_env` wrote."""
        return cls.model_validate_json(text)
