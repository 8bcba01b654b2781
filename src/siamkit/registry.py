"""Named factories, so components can be built from a config: ``{"name": ..., "params": ...}``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from siamkit.errors import ConfigError

T = TypeVar("T")


class ComponentSpec(BaseModel):
    """How to build one component: a registered ``name`` and keyword ``params`` for its factory."""

    model_config = ConfigDict(extra="forbid")
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class Registry(Generic[T]):
    """A mapping from names to factories of one kind of component (encoders, heads, losses...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name``."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ConfigError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorate

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._factories)

    def build(self, spec: ComponentSpec | dict[str, Any], **extra: Any) -> T:
        """Build the component described by ``spec``, adding the keyword arguments ``extra``."""
        spec = spec if isinstance(spec, ComponentSpec) else ComponentSpec.model_validate(spec)
        factory = self._factories.get(spec.name)
        if factory is None:
            raise ConfigError(
                f"unknown {self.kind} {spec.name!r}; expected one of: {', '.join(self.names())}"
            )
        try:
            return factory(**spec.params, **extra)
        except TypeError as error:
            raise ConfigError(
                f"{self.kind} {spec.name!r}: bad params {spec.params}: {error}"
            ) from error
