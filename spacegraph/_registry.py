"""Plugin registries for spaces, bridge methods and evaluation datasets, filled by decorators and entry-point
groups."""

from __future__ import annotations

import fnmatch
import inspect
import logging
import os
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

from ._arguments import checked_arguments
from ._errors import MissingExtraError, SpacegraphTypeError, SpacegraphValueError, UnknownNameError

logger = logging.getLogger(__name__)

SPACES_GROUP = "spacegraph.spaces"
BRIDGES_GROUP = "spacegraph.bridges"
DATASETS_GROUP = "spacegraph.datasets"

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """Named factories of one kind. Entry points of ``group`` are imported on first use; one that fails to
    import is logged with its name and skipped, and the others still work."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._factories: dict[str, Callable[..., Any]] = {}
        self._failed: dict[str, str] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[F], F]:
        def decorator(factory: F) -> F:
            self.add(name, factory)
            return factory

        return decorator

    def add(self, name: str, factory: Callable[..., Any]) -> None:
        existing = self._factories.get(name)
        if existing is not None and existing is not factory:
            raise SpacegraphValueError(f"a {self.kind} named {name!r} is already registered ({existing!r})")
        self._factories[name] = factory

    def discover(self, *, refresh: bool = False) -> None:
        if self._discovered and not refresh:
            return
        self._discovered = True
        for ep in entry_points(group=self.group):
            if ep.name in self._factories:
                continue
            try:
                self.add(ep.name, ep.load())
                self._failed.pop(ep.name, None)
            except Exception as exc:  # noqa: BLE001 (a broken plugin must not break the others)
                self._failed[ep.name] = f"{type(exc).__name__}: {exc}"
                logger.warning(
                    "%s plugin %r (%s) failed to import and is skipped: %s", self.kind, ep.name, ep.value, exc
                )

    def names(self, pattern: str = "*") -> list[str]:
        self.discover()
        return sorted(n for n in self._factories if fnmatch.fnmatch(n, pattern))

    @property
    def failed(self) -> dict[str, str]:
        """Plugins that failed to import, with the error each raised."""
        self.discover()
        return dict(self._failed)

    def get(self, name: str) -> Callable[..., Any]:
        self.discover()
        if name in self._factories:
            return self._factories[name]
        if name in self._failed:
            raise MissingExtraError(f"{self.kind} plugin {name!r} failed to import: {self._failed[name]}")
        known = ", ".join(self.names()) or "(none)"
        raise UnknownNameError(f"unknown {self.kind} {name!r}; registered: {known}")


SPACES = Registry("space", SPACES_GROUP)
BRIDGE_METHODS = Registry("bridge method", BRIDGES_GROUP)
DATASETS = Registry("dataset", DATASETS_GROUP)


@checked_arguments
def register_space(name: str) -> Callable[[F], F]:
    """Decorator registering a Space factory (usually the class) under ``name``."""
    return SPACES.register(name)


@checked_arguments
def register_bridge_method(name: str) -> Callable[[F], F]:
    """Decorator registering a bridge-training method under ``name``."""
    return BRIDGE_METHODS.register(name)


@checked_arguments
def register_dataset(name: str) -> Callable[[F], F]:
    """Decorator registering an evaluation dataset adapter under ``name``: a callable taking the dataset's root
    folder and keyword options, returning the loaded dataset (what ``spacegraph eval --dataset NAME`` runs on)."""
    return DATASETS.register(name)


@checked_arguments
def list_spaces(pattern: str = "*") -> list[str]:
    """Names of the registered spaces matching a glob ``pattern``."""
    return SPACES.names(pattern)


@checked_arguments
def list_bridge_methods(pattern: str = "*") -> list[str]:
    return BRIDGE_METHODS.names(pattern)


@checked_arguments
def list_datasets(pattern: str = "*") -> list[str]:
    """Names of the registered evaluation datasets matching a glob ``pattern``."""
    return DATASETS.names(pattern)


@checked_arguments
def load_space(name: str, /, *args: Any, **kwargs: Any) -> Any:
    """Build the registered space ``name``; other arguments go to its factory, checked against its signature
    first (a space that needs arguments, such as ``precomputed``, says which). The space records how it was built
    (read it with :func:`spacegraph.space_reference`), so a graph holding it saves it by reference."""
    factory = SPACES.get(name)
    _check_binds(factory, "space", name, args, kwargs)
    space = factory(*args, **kwargs)
    from ._graph_artifact import record_reference  # imported here: that module imports this one

    record_reference(space, name, args, kwargs)
    return space


@checked_arguments
def load_dataset(name: str, root: str | os.PathLike, /, **options: Any) -> Any:
    """Load the registered dataset ``name`` from its folder ``root``; ``options`` (e.g. ``fold=1``, ``split="val"``)
    go to its adapter, checked against its signature first."""
    factory = DATASETS.get(name)
    _check_binds(factory, "dataset", name, (root,), options)
    return factory(root, **options)


def _check_binds(factory: Callable[..., Any], kind: str, name: str, args: tuple, kwargs: dict[str, Any]) -> None:
    """Refuse arguments that ``factory``'s signature does not take, naming what it takes."""
    try:
        inspect.signature(factory).bind(*args, **kwargs)
    except TypeError as err:
        raise SpacegraphTypeError(
            f"{kind} {name!r} cannot be built from these arguments ({err}); its factory takes "
            f"{inspect.signature(factory)}"
        ) from err
    except ValueError:  # a factory without a signature (a builtin): let it check its own arguments
        pass


@checked_arguments
def get_bridge_method(name: str) -> Any:
    return BRIDGE_METHODS.get(name)
