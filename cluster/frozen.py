"""``@frozen``: what ``@dataclass(frozen=True, slots=True)`` makes, at a fifth of its cost.

``dataclass`` compiles six methods for every frozen class (``__init__``, ``__repr__``,
``__eq__``, ``__hash__``, ``__setattr__``, ``__delattr__``): about 1.1 ms a class on a slow
login node. The messages and the job model are some 160 such classes, so every `hq` command,
server, node and executor paid up to 150 ms of start-up to compile them. A frozen class compiles only
its ``__init__``; equality, hashing, ``repr`` and immutability are shared functions that read
the class's field names. What users of the class see is the same: ``dataclasses.fields``,
``replace`` and ``is_dataclass`` work, instances are immutable, hashable, comparable and
pickle like frozen dataclasses.

``__init__`` is compiled on the first instantiation, not when the class is made: compiling is
a third of a class's cost, and a command defines some 70 message classes to build a few.
"""

from __future__ import annotations

import dataclasses
import operator
import reprlib
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")

_set = object.__setattr__


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _eq(self: Any, other: object) -> object:  # bool, or NotImplemented for other classes
    if self.__class__ is other.__class__:
        key: Callable[[object], object] = getattr(self, "__frozen_key__")  # noqa: B009
        return key(self) == key(other)
    return NotImplemented


def _hash(self: Any) -> int:
    return hash(self.__frozen_key__(self))


@reprlib.recursive_repr()
def _repr(self: Any) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__frozen_repr__)
    return f"{self.__class__.__qualname__}({shown})"


def _getstate(self: Any) -> list[Any]:
    return [getattr(self, name) for name in self.__frozen_fields__]


def _setstate(self: Any, state: list[Any]) -> None:
    for name, value in zip(self.__frozen_fields__, state, strict=True):
        _set(self, name, value)


def _key(names: tuple[str, ...]) -> Callable[[Any], Any]:
    if not names:
        return lambda _: ()
    if len(names) == 1:  # attrgetter of one name returns the value, not a 1-tuple
        only = operator.attrgetter(names[0])
        return lambda obj: (only(obj),)
    return operator.attrgetter(*names)


def _init(cls: type, fields: tuple[dataclasses.Field[Any], ...]) -> Callable[..., None]:
    """The one compiled method: positional-or-keyword parameters in field order, defaults
    and factories as dataclass has them, then ``__post_init__`` if the class has one."""
    scope: dict[str, Any] = {"_set": _set, "_FACTORY": object()}
    params: list[str] = []
    body: list[str] = []
    for f in fields:
        default = f"_default_{f.name}"
        if f.default is not dataclasses.MISSING:
            scope[default] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            scope[default] = f.default_factory
        if not f.init:
            if f.default is not dataclasses.MISSING:
                body.append(f"_set(self, {f.name!r}, {default})")
            elif f.default_factory is not dataclasses.MISSING:
                body.append(f"_set(self, {f.name!r}, {default}())")
            continue
        if f.default is not dataclasses.MISSING:
            params.append(f"{f.name}={default}")
        elif f.default_factory is not dataclasses.MISSING:
            params.append(f"{f.name}=_FACTORY")
            body.append(f"if {f.name} is _FACTORY: {f.name} = {default}()")
        else:
            params.append(f.name)
        body.append(f"_set(self, {f.name!r}, {f.name})")
    if hasattr(cls, "__post_init__"):
        body.append("self.__post_init__()")
    source = (f"def __init__(self, {', '.join(params)}):\n    "
              + "\n    ".join(body or ["pass"]) + "\n")
    exec(source, scope)  # noqa: S102 - our own source, built from the class's field names
    init: Callable[..., None] = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def _compiled_on_first_call(cls: type, fields: tuple[dataclasses.Field[Any], ...]
                            ) -> Callable[..., None]:
    """An ``__init__`` that compiles the real one, puts it on ``cls`` and runs it."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init = _init(cls, fields)
        setattr(cls, "__init__", init)  # noqa: B010 - mypy refuses `cls.__init__ = init`
        init(self, *args, **kwargs)

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    return __init__


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def frozen(cls: type[T]) -> type[T]:
    """Class decorator: a frozen, slotted dataclass with compiled ``__init__`` only."""
    if not cls.__doc__:  # else dataclass writes one with inspect.signature: 16 ms the first time
        cls.__doc__ = cls.__name__
    cls = dataclasses.dataclass(init=False, repr=False, eq=False, slots=True)(cls)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    compared = tuple(f.name for f in fields if f.compare)
    attrs = {
        "__init__": _compiled_on_first_call(cls, fields),
        "__repr__": _repr,
        "__eq__": _eq,
        "__hash__": _hash,
        "__setattr__": _frozen_setattr,
        "__delattr__": _frozen_delattr,
        "__getstate__": _getstate,
        "__setstate__": _setstate,
        "__frozen_key__": staticmethod(_key(compared)),
        "__frozen_repr__": tuple(f.name for f in fields if f.repr),
        "__frozen_fields__": tuple(f.name for f in fields),
    }
    for name, value in attrs.items():
        setattr(cls, name, value)  # type.__setattr__: the class is not frozen, its instances are
    return cls
