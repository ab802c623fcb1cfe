"""``@frozen``: what ``@dataclass(frozen=True, slots=True)`` makes, without ``dataclasses``.

``dataclass`` compiles six methods for every frozen class (``__init__``, ``__repr__``,
``__eq__``, ``__hash__``, ``__setattr__``, ``__delattr__``): about 1.1 ms a class on a slow
login node. The messages and the job model are some 160 such classes, so every `hq` command,
server, node and executor paid up to 150 ms of start-up to compile them. A frozen class compiles only
its ``__init__``; equality, hashing, ``repr`` and immutability are shared functions that read
the class's field names (a class may write its own ``__repr__``, ``__eq__`` and ``__hash__``).

Nor does a frozen class import ``dataclasses``: that module and what it imports (``inspect``,
``ast``, ``dis``, ``tokenize``, ``re``) were 9 ms of every `hq` command. The class keeps its
fields as ``Field`` records here (the codec reads them through ``record_fields``); what
``dataclasses`` users see is the same: ``dataclasses.fields``, ``replace``, ``asdict`` and
``is_dataclass`` work on a ``__dataclass_fields__`` built when first read, instances are
immutable, hashable, comparable and pickle like frozen dataclasses.

``__init__`` is compiled on the first instantiation, not when the class is made: compiling is
a third of a class's cost, and a command defines some 70 message classes to build a few.

``@mutable`` makes the same class with fields that change, compared by identity, as
``@dataclass(eq=False, slots=True)`` does: the node's and the server's records, so that none of
the server, the node and the executors it forks imports ``dataclasses`` (2.6 MB each).
"""

from __future__ import annotations

import operator
import reprlib
import sys
from collections.abc import Callable
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    TypeGuard,
    TypeVar,
    cast,
    dataclass_transform,
    overload,
)

T = TypeVar("T")

_set = object.__setattr__


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""No default (``dataclasses.MISSING``'s role for ``Field`` records)."""


class Field:
    """One field of a frozen class: ``dataclasses.Field``'s attributes that the classes use."""

    __slots__ = ("name", "type", "default", "default_factory", "init", "repr", "compare")

    def __init__(self, default: Any = MISSING, default_factory: Any = MISSING,
                 init: bool = True, repr: bool = True, compare: bool = True) -> None:  # noqa: A002
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.name = ""
        self.type: Any = None
        self.default = default
        self.default_factory = default_factory
        self.init = init
        self.repr = repr
        self.compare = compare

    @property
    def required(self) -> bool:
        return self.default is MISSING and self.default_factory is MISSING

    def __repr__(self) -> str:
        return (f"Field(name={self.name!r}, default={self.default!r}, "
                f"default_factory={self.default_factory!r}, init={self.init}, "
                f"repr={self.repr}, compare={self.compare})")


_MEMBER: type = type(Field.__dict__["name"])  # a slot's descriptor


@overload
def field(*, default: T, init: bool = True, repr: bool = True,  # noqa: A002
          compare: bool = True) -> T: ...
@overload
def field(*, default_factory: Callable[[], T], init: bool = True, repr: bool = True,  # noqa: A002
          compare: bool = True) -> T: ...
@overload
def field(*, init: bool = True, repr: bool = True, compare: bool = True) -> Any: ...  # noqa: A002


def field(*, default: Any = MISSING, default_factory: Any = MISSING, init: bool = True,
          repr: bool = True, compare: bool = True) -> Any:  # noqa: A002
    """``dataclasses.field`` for frozen classes (``dataclasses.field`` works as well)."""
    return Field(default, default_factory, init, repr, compare)


def _frozen_error(message: str) -> Exception:
    from dataclasses import FrozenInstanceError  # only when code tries to change a value

    return FrozenInstanceError(message)


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise _frozen_error(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise _frozen_error(f"cannot delete field {name!r}")


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


def _init(cls: type, fields: tuple[Field, ...]) -> Callable[..., None]:
    """The one compiled method: positional-or-keyword parameters in field order, defaults
    and factories as dataclass has them, then ``__post_init__`` if the class has one."""
    scope: dict[str, Any] = {"_set": _set, "_FACTORY": object()}
    params: list[str] = []
    body: list[str] = []
    mutable = getattr(cls, "__setattr__") is _set  # noqa: B009 - for mypy
    for f in fields:
        default = f"_default_{f.name}"
        # The start of the statement that sets the field, up to its value (a closing
        # parenthesis follows). A frozen class calls its slot's own setter: 40% less than
        # object.__setattr__ with the name, per field of every record made (a task's path
        # makes a dozen). A mutable class assigns plainly.
        setter = getattr(cls, f.name, None)
        if mutable:
            assign = f"self.{f.name} = ("
        elif type(setter) is _MEMBER:
            scope[f"_set_{f.name}"] = getattr(setter, "__set__")  # noqa: B009 - for mypy
            assign = f"_set_{f.name}(self, "
        else:
            assign = f"_set(self, {f.name!r}, "
        if f.default is not MISSING:
            scope[default] = f.default
        elif f.default_factory is not MISSING:
            scope[default] = f.default_factory
        if not f.init:
            if f.default is not MISSING:
                body.append(f"{assign}{default})")
            elif f.default_factory is not MISSING:
                body.append(f"{assign}{default}())")
            continue
        if f.default is not MISSING:
            params.append(f"{f.name}={default}")
        elif f.default_factory is not MISSING:
            params.append(f"{f.name}=_FACTORY")
            body.append(f"if {f.name} is _FACTORY: {f.name} = {default}()")
        else:
            params.append(f.name)
        body.append(f"{assign}{f.name})")
    if hasattr(cls, "__post_init__"):
        body.append("self.__post_init__()")
    source = (f"def __init__(self, {', '.join(params)}):\n    "
              + "\n    ".join(body or ["pass"]) + "\n")
    exec(source, scope)  # noqa: S102 - our own source, built from the class's field names
    init: Callable[..., None] = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def _compiled_on_first_call(cls: type, fields: tuple[Field, ...]) -> Callable[..., None]:
    """An ``__init__`` that compiles the real one, puts it on ``cls`` and runs it."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init = _init(cls, fields)
        setattr(cls, "__init__", init)  # noqa: B010 - mypy refuses `cls.__init__ = init`
        init(self, *args, **kwargs)

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    return __init__


class _DataclassFields:
    """``__dataclass_fields__`` of a frozen class, for ``dataclasses``' functions: real
    ``dataclasses.Field`` objects, made (and put on the class) when first read, so that only
    code that uses ``dataclasses`` imports it."""

    def __get__(self, obj: object, owner: type) -> dict[str, Any]:
        import dataclasses

        made = {}
        for record in owner.__frozen_records__:  # type: ignore[attr-defined]
            f: Any = dataclasses.field(
                default=dataclasses.MISSING if record.default is MISSING else record.default,
                default_factory=(dataclasses.MISSING if record.default_factory is MISSING
                                 else record.default_factory),
                init=record.init, repr=record.repr, compare=record.compare)
            f.name, f.type = record.name, record.type
            f._field_type = dataclasses._FIELD  # type: ignore[attr-defined]  # what fields() lists
            made[record.name] = f
        type.__setattr__(owner, "__dataclass_fields__", made)
        return made


def _is_classvar(annotation: Any) -> bool:
    if isinstance(annotation, str):  # `from __future__ import annotations`
        return annotation.startswith(("ClassVar", "typing.ClassVar", "t.ClassVar"))
    return annotation is ClassVar or getattr(annotation, "__origin__", None) is ClassVar


def _as_record(value: Any) -> Field:
    """A class attribute as the field record: ``field(...)``, ``dataclasses.field(...)`` or
    a plain default."""
    if isinstance(value, Field):
        return value
    kind = type(value)
    if kind.__name__ == "Field" and kind.__module__ == "dataclasses":
        return Field(value.default if value.default is not _dataclasses_missing() else MISSING,
                     (value.default_factory if value.default_factory is not _dataclasses_missing()
                      else MISSING), value.init, value.repr, value.compare)
    return Field(value)


def _dataclasses_missing() -> Any:
    return sys.modules["dataclasses"].MISSING  # a dataclasses.Field was made: it is imported


def _records(cls: type) -> dict[str, Field]:
    """The class's fields in dataclass's order: the bases' first, then its own annotations."""
    records: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:-1]):
        for record in base.__dict__.get("__frozen_records__", ()):
            records[record.name] = record
    annotations = cls.__dict__.get("__annotations__", {})
    for name, annotation in annotations.items():
        if _is_classvar(annotation):
            continue
        record = _as_record(cls.__dict__.get(name, MISSING))
        record.name, record.type = name, annotation
        records[name] = record
    for name, value in cls.__dict__.items():
        if isinstance(value, Field) and name not in annotations:
            raise TypeError(f"{name!r} is a field but has no type annotation")
    seen_default = False
    for record in records.values():
        if record.default is not MISSING and type(record.default).__hash__ is None:
            raise ValueError(f"mutable default {type(record.default)} for field {record.name} "
                             "is not allowed: use default_factory")
        if record.init:
            if not record.required:
                seen_default = True
            elif seen_default:
                raise TypeError(f"non-default argument {record.name!r} follows default argument")
    return records


def _inherited_slots(cls: type) -> set[str]:
    slots: set[str] = set()
    for base in cls.__mro__[1:-1]:
        declared = base.__dict__.get("__slots__", ())
        slots.update((declared,) if isinstance(declared, str) else declared)
    return slots


def _frozen(cls: type[T]) -> type[T]:
    """Class decorator: a frozen, slotted dataclass with compiled ``__init__`` only."""
    return _slotted(cls, frozen=True)


def _mutable(cls: type[T]) -> type[T]:
    """Class decorator: ``@dataclass(eq=False, slots=True)``, a record whose fields change,
    compared and hashed by identity."""
    return _slotted(cls, frozen=False)


def _slotted(cls: type[T], *, frozen: bool) -> type[T]:
    if "__slots__" in cls.__dict__:
        raise TypeError(f"{cls.__name__} already specifies __slots__")
    records = _records(cls)
    fields = tuple(records.values())
    names = tuple(records)
    body = dict(cls.__dict__)
    inherited = _inherited_slots(cls)
    body["__slots__"] = tuple(name for name in names if name not in inherited)
    for name in (*names, "__dict__", "__weakref__"):
        body.pop(name, None)
    if not cls.__doc__:  # as the dataclass-based version had it, not dataclass's signature
        body["__doc__"] = cls.__name__
    # Methods the class writes itself stay, as dataclass leaves them.
    body.setdefault("__repr__", _repr)
    if frozen:
        body.setdefault("__eq__", _eq)
        if body.get("__hash__") is None:  # None: the class defines __eq__ only
            body["__hash__"] = _hash
        body["__setattr__"] = _frozen_setattr
        body["__delattr__"] = _frozen_delattr
    body.update({
        "__getstate__": _getstate,
        "__setstate__": _setstate,
        "__match_args__": tuple(f.name for f in fields if f.init),
        "__frozen_key__": staticmethod(_key(tuple(f.name for f in fields if f.compare))),
        "__frozen_repr__": tuple(f.name for f in fields if f.repr),
        "__frozen_fields__": names,
        "__frozen_records__": fields,
        "__dataclass_fields__": _DataclassFields(),
    })
    metaclass: Any = type(cls)
    made = cast("type[T]", metaclass(cls.__name__, cls.__bases__, body))
    made.__qualname__ = cls.__qualname__
    type.__setattr__(made, "__init__", _compiled_on_first_call(made, fields))
    return made


def replace(obj: T, /, **changes: Any) -> T:
    """``dataclasses.replace`` for frozen classes: a copy with ``changes``."""
    for f in obj.__frozen_records__:  # type: ignore[attr-defined]
        if not f.init:
            if f.name in changes:
                raise ValueError(f"field {f.name} is declared with init=False, it cannot be "
                                 "specified with replace()")
        elif f.name not in changes:
            changes[f.name] = getattr(obj, f.name)
    return obj.__class__(**changes)


def record_fields(cls: type) -> tuple[Field, ...]:
    """The field records of a frozen class, or of a plain dataclass (as records)."""
    records: tuple[Field, ...] | None = cls.__dict__.get("__frozen_records__")
    if records is not None:
        return records
    import dataclasses

    made = []
    for f in dataclasses.fields(cls):
        record = _as_record(f)
        record.name, record.type = f.name, f.type
        made.append(record)
    return tuple(made)


def is_record_class(hint: Any) -> TypeGuard[type]:
    """A frozen class, or a plain dataclass: what the codec sends as a list of fields."""
    if not isinstance(hint, type):
        return False
    if "__frozen_records__" in hint.__dict__:
        return True
    dataclasses = sys.modules.get("dataclasses")  # not imported: no dataclass exists
    return dataclasses is not None and dataclasses.is_dataclass(hint)


if TYPE_CHECKING:  # type checkers also accept dataclasses.field in frozen classes
    from dataclasses import field as dataclass_field

    @dataclass_transform(frozen_default=True, field_specifiers=(field, dataclass_field))
    def frozen(cls: type[T]) -> type[T]: ...

    @dataclass_transform(eq_default=False, field_specifiers=(field, dataclass_field))
    def mutable(cls: type[T]) -> type[T]: ...
else:
    frozen = dataclass_transform(frozen_default=True, field_specifiers=(field,))(_frozen)
    mutable = dataclass_transform(eq_default=False, field_specifiers=(field,))(_mutable)
