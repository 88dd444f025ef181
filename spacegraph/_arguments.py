"""Arguments of public functions checked against their annotations before the function runs."""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import pydantic

from ._errors import SpacegraphArgumentError

MODULES = {"np": "numpy", "numpy": "numpy", "torch": "torch"}  # as annotations name them
P = ParamSpec("P")
R = TypeVar("R")

_ARGUMENTS = pydantic.ConfigDict(arbitrary_types_allowed=True, strict=True)


def checked_arguments(function: Callable[P, R]) -> Callable[P, R]:
    """``function``, with its arguments checked against its annotations before it runs (pydantic's ``validate_call``,
    strict: no silent conversion, and classes by ``isinstance``): a wrong one raises :class:`SpacegraphArgumentError`
    naming the function, the argument and what it accepts, with pydantic's error as its cause. The check is built
    on the first call, when the names the annotations use are imported."""
    names = list(inspect.signature(function).parameters)
    built: list[Callable[..., R]] = []

    def validated() -> Callable[..., R]:
        if not built:
            built.append(_validator(function))
        return built[0]

    @functools.wraps(function)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return validated()(*args, **kwargs)
        except pydantic.ValidationError as err:
            if err.title not in (function.__name__, function.__qualname__):  # raised by a model the function validates
                raise
            raise SpacegraphArgumentError(f"{function.__qualname__}: {_described(err, names)}") from err

    return checked


def _validator(function: Callable[..., R]) -> Callable[..., R]:
    """``validate_call`` of a function calling ``function``, whose signature carries its resolved annotations (one
    that cannot be resolved or checked is left unchecked); ``function`` itself if pydantic can check none."""
    namespace = {**_annotation_names(), **function.__globals__}
    signature = inspect.signature(function)
    parameters = [p.replace(annotation=_resolved(p.annotation, namespace)) for p in signature.parameters.values()]

    def call(*args: Any, **kwargs: Any) -> R:
        return function(*args, **kwargs)

    call.__name__, call.__qualname__ = function.__name__, function.__qualname__
    call.__signature__ = signature.replace(parameters=parameters, return_annotation=Any)  # type: ignore[attr-defined]
    call.__annotations__ = {p.name: p.annotation for p in parameters}
    try:
        return pydantic.validate_call(config=_ARGUMENTS)(call)
    except pydantic.PydanticUserError:  # an annotation pydantic cannot build a check for
        return function


def _resolved(annotation: Any, namespace: dict[str, Any]) -> Any:
    if annotation is inspect.Parameter.empty:
        return Any
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, namespace)  # our own annotation, evaluated as typing.get_type_hints does
    except Exception:  # noqa: BLE001 - a name imported only for type checkers: that argument is not checked
        return Any


def _annotation_names() -> dict[str, Any]:
    """The names annotations may use without importing them at run time: those of every spacegraph module loaded."""
    found: dict[str, Any] = {alias: sys.modules[name] for alias, name in MODULES.items() if name in sys.modules}
    for name, module in list(sys.modules.items()):
        if name.startswith("spacegraph.") and module is not None:
            found.update((key, value) for key, value in vars(module).items() if isinstance(value, type))
    return found


def _described(err: pydantic.ValidationError, names: list[str]) -> str:
    problems = []
    for error in err.errors(include_url=False)[:3]:
        where = error["loc"][0] if error["loc"] else "arguments"
        name = names[where] if isinstance(where, int) and where < len(names) else where
        given = error["input"]
        problems.append(f"argument {name!r}: {error['msg']}, got {type(given).__name__} {repr(given)[:40]}")
    return "; ".join(problems)
