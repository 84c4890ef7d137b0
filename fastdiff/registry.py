"""One small name -> object registry, shared by processes, nets, samplers, datasets and metrics."""
from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Lookup of a name nobody registered; the message lists the registered names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A named collection filled by a decorator; duplicate names and unknown lookups are errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def wrap(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered (by {self._items[name]!r})")
            self._items[name] = obj
            try:
                setattr(obj, "registered_name", name)
            except (AttributeError, TypeError):
                pass
            return obj

        return wrap

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; registered: {', '.join(sorted(self._items)) or '(none)'}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def build(registry: Registry[Any], name: str, **kwargs: Any) -> Any:
    """Construct a registered class by name, with a clear error for unknown keyword arguments."""
    import inspect

    cls = registry.get(name)
    sig = inspect.signature(cls)
    params = sig.parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            allowed = ", ".join(k for k in params if k != "self")
            raise TypeError(f"unknown option(s) {unknown} for {registry.kind} {name!r}; allowed: {allowed}")
    return cls(**kwargs)


PROCESSES: Registry[Any] = Registry("process")
NETS: Registry[Any] = Registry("net")
SAMPLERS: Registry[Any] = Registry("sampler")
DATASETS: Registry[Any] = Registry("dataset")
FEATURES: Registry[Any] = Registry("feature extractor")
METRICS: Registry[Any] = Registry("metric")
