"""One codec for every message on every link: tagged, frozen dataclasses over msgpack.

A frame is the msgpack array ``[protocol, tag, field1, field2, ...]``. Fields travel by position
(compact, and the dataclass is the single definition of the order). Decoding validates every
field against the dataclass's type hints, so an invalid message cannot get past ``decode``: a
peer's bad frame is a ``PeerError`` (log it and drop the peer), never a crash or a guess.

Supported field types: ``int``, ``float``, ``str``, ``bytes``, ``bool``, ``None``,
``X | None``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``list[X]``, ``dict[K, V]``, nested
message-like dataclasses (registered or not), and ``NewType``s of these (ids), which travel as
their supertype. Bulk data (task keys, counters) travels as ``bytes`` holding packed arrays, so
a batch costs one field, not one object per task.
"""

from __future__ import annotations

import gc
import sys
import types
import typing
from collections.abc import Callable
from itertools import chain, cycle, repeat
from operator import attrgetter, contains
from operator import is_ as _is
from typing import Any, TypeVar

import msgpack

from .bounds import MAX_FRAME
from .errors import LocalProtocolError, PeerError, VersionMismatch
from .frozen import is_record_class, record_fields

T = TypeVar("T")
Converter = Callable[[Any], Any]
LARGE_FRAME = 64 * 1024  # decoded with the cyclic garbage collector paused


class Registry:
    """A set of message classes sharing one protocol number (one per link)."""

    def __init__(self, name: str, protocol: int) -> None:
        self.name = name
        self.protocol = protocol
        self._by_tag: dict[int, type] = {}
        self._decoders: dict[int, Converter] = {}
        self._encoders: dict[type, Callable[[Any], list[Any]]] = {}

    def message(self, cls: type[T]) -> type[T]:
        """Class decorator: register a frozen dataclass with a unique ``TAG``."""
        tag = cls.__dict__.get("TAG")
        if not isinstance(tag, int):
            raise LocalProtocolError(f"{cls.__name__} has no integer TAG")
        if tag in self._by_tag:
            raise LocalProtocolError(
                f"tag {tag} used by {self._by_tag[tag].__name__} and {cls.__name__}"
            )
        # Converters are built on first use (the class's type hints read, a converter a
        # field): a short-lived `hq` command uses two or three of the dozens of messages.
        self._by_tag[tag] = cls
        return cls

    def encode(self, msg: Any) -> bytes:
        encoder = self._encoders.get(type(msg))
        if encoder is None:
            cls = type(msg)
            if self._by_tag.get(getattr(cls, "TAG", -1)) is not cls:
                raise LocalProtocolError(f"{cls.__name__} is not a {self.name} message")
            encoder = self._encoders[cls] = _struct_encoder(cls)
        frame: bytes = msgpack.packb(
            [self.protocol, type(msg).TAG, *encoder(msg)], use_bin_type=True
        )
        return frame

    def decode(self, frame: bytes, max_values: int | None = None) -> Any:
        """Decode and validate one frame. Refuse, never guess.

        ``max_values`` bounds the values in arrays and maps together (a peer's frame): each
        costs up to ~64 bytes of Python objects for one byte of input (an empty array), so an
        unbounded 64 MB frame could take gigabytes and a minute to decode before any check.
        Bulk data travels as bytes, which count once."""
        if len(frame) > MAX_FRAME:
            raise PeerError(f"frame of {len(frame)} bytes exceeds the limit of {MAX_FRAME}")
        if len(frame) < LARGE_FRAME or not gc.isenabled():
            return self._decode(frame, max_values)
        # A large frame makes objects by the million, none of them garbage: the collector's
        # passes over them while they are made took a third of decoding a 100,000-task list.
        gc.disable()
        try:
            return self._decode(frame, max_values)
        finally:
            gc.enable()

    def _decode(self, frame: bytes, max_values: int | None) -> Any:
        try:
            # The count is of items and of containers, each at least a byte of the frame: a
            # frame of at most half the budget is within it and skips the counting hooks (a
            # Python call per array: a fifth of decoding a node's report).
            data = (msgpack.unpackb(frame, raw=False, strict_map_key=False)
                    if max_values is None or 2 * len(frame) <= max_values
                    else _unpack_bounded(frame, max_values))
        except TooManyValues:
            raise PeerError(f"{self.name} frame has more than {max_values:,} values (arrays "
                            "and maps together); send large data in parts") from None
        except Exception as exc:  # msgpack raises several unrelated types
            raise PeerError(f"undecodable {self.name} frame: {exc}") from None
        if not isinstance(data, list) or len(data) < 2:
            raise PeerError(f"malformed {self.name} frame")
        protocol, tag = data[0], data[1]
        # `type(...) is int`: True == 1 == 1.0 in Python, and neither is a protocol or a tag.
        if type(protocol) is not int or protocol != self.protocol:
            raise VersionMismatch(self.protocol, protocol if type(protocol) is int else -1)
        decoder = self._decoders.get(tag) if type(tag) is int else None
        if decoder is None:
            cls = self._by_tag.get(tag) if type(tag) is int else None
            if cls is None:
                raise PeerError(f"unknown {self.name} message tag {tag!r}")
            decoder = self._decoders[tag] = _struct_decoder(cls)
        return decoder(data[2:])


class TooManyValues(Exception):
    """A frame past its decode budget (raised from msgpack's hooks, then reported)."""


def _unpack_bounded(frame: bytes, max_values: int) -> Any:
    """unpackb that stops once the arrays and maps built so far hold ``max_values`` values.

    The hooks run as each container is complete, so at most one array or map beyond the
    budget is built (and msgpack's max_*_len bound that one) before the decode stops."""
    left = max_values

    def array(values: list[Any]) -> list[Any]:
        nonlocal left
        left -= len(values) + 1
        if left < 0:
            raise TooManyValues
        return values

    def mapping(values: dict[Any, Any]) -> dict[Any, Any]:
        nonlocal left
        left -= 2 * len(values) + 1
        if left < 0:
            raise TooManyValues
        return values

    # The collector would walk the young containers again and again while they are built:
    # that, not the building, made a frame of empty arrays take a minute.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=False, list_hook=array,
                               object_hook=mapping, max_array_len=max_values,
                               max_map_len=max_values // 2)
    finally:
        if collecting:
            gc.enable()


def struct_encoder(cls: type) -> Callable[[Any], list[Any]]:
    """The list a message-like dataclass travels as (its fields by position, nested ones as
    lists): a cheap, stable key of a value."""
    return _struct_encoder(cls)


def _struct_encoder(cls: type) -> Callable[[Any], list[Any]]:
    fields = record_fields(cls)
    hints = type_hints(cls)
    names_and_encoders = [(f.name, _value_encoder(hints[f.name])) for f in fields]
    if len(fields) > 1 and all(enc is _identity for _name, enc in names_and_encoders):
        # Plain fields only (a task list's rows): read them all in one C call.
        getter = attrgetter(*(f.name for f in fields))
        return lambda msg: list(getter(msg))

    def encode(msg: Any) -> list[Any]:
        return [enc(getattr(msg, name)) for name, enc in names_and_encoders]

    return encode


_HINTS: dict[type, dict[str, Any]] = {}


def type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints(cls)``, read once a class and with one ``eval`` of all of a
    class's annotations: get_type_hints compiles each annotation string apart, which was 1.1-1.9
    ms of the 15-24 ms a short `hq` command spends after its imports (issue 9, item 2)."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = _evaluated(cls)
    return hints


def _evaluated(cls: type) -> dict[str, Any]:
    """What get_type_hints gives for a class whose annotations are plain expressions (they are
    strings under ``from __future__ import annotations``), evaluated as it does: for each class
    of the MRO, the module's names first, then the class's, then the builtins. Anything else
    (an annotation object, a quoted name inside one) goes to get_type_hints itself."""
    hints: dict[str, Any] = {}
    for base in reversed(cls.__mro__):
        annotations = base.__dict__.get("__annotations__")
        if not annotations:
            continue
        texts = list(annotations.values())
        if not all(isinstance(t, str) and "'" not in t and '"' not in t for t in texts):
            return typing.get_type_hints(cls)
        module = sys.modules[base.__module__].__dict__
        try:
            # Our own source's annotations, never a peer's text.
            values = eval("(" + ", ".join(texts) + ",)", dict(vars(base)), module)
        except Exception:  # noqa: BLE001 - get_type_hints raises its own error, or copes
            return typing.get_type_hints(cls)
        if len(values) != len(texts):  # an annotation with a comma of its own
            return typing.get_type_hints(cls)
        for name, value in zip(annotations, values, strict=True):
            hints[name] = type(None) if value is None else value
    return hints


def _value_encoder(hint: Any) -> Converter:
    """Only nested dataclasses need work on the way out; plain values pass through."""
    if isinstance(hint, typing.NewType):
        return _value_encoder(hint.__supertype__)
    if is_record_class(hint):
        inner = _struct_encoder(hint)
        return inner
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        only = non_none[0] if len(non_none) == 1 else None
        if is_record_class(only):
            inner = _struct_encoder(only)
            return lambda v: None if v is None else inner(v)
        return _identity
    if origin in (tuple, list) and args:
        item_hints = [a for a in args if a is not Ellipsis]
        if any(_needs_encoding(a) for a in item_hints):
            if len(args) == 2 and args[1] is Ellipsis:
                item = _value_encoder(args[0])
                return lambda v: [item(x) for x in v]
            items = [_value_encoder(a) for a in args]
            return lambda v: [enc(x) for enc, x in zip(items, v, strict=False)]
        return _identity
    if origin is dict and args and _needs_encoding(args[1]):
        value = _value_encoder(args[1])
        return lambda v: {k: value(x) for k, x in v.items()}
    return _identity


def _needs_encoding(hint: Any) -> bool:
    if isinstance(hint, typing.NewType):
        return _needs_encoding(hint.__supertype__)
    if is_record_class(hint):
        return True
    return any(_needs_encoding(a) for a in typing.get_args(hint) if a is not Ellipsis)


def _identity(value: Any) -> Any:
    return value


def _struct_decoder(cls: type) -> Converter:
    fields = [f for f in record_fields(cls) if f.init]
    hints = type_hints(cls)
    converters = [_value_decoder(hints[f.name], f"{cls.__name__}.{f.name}") for f in fields]
    n_required = sum(1 for f in fields if f.required)
    name = cls.__name__
    # Fields of scalars (or None) pass as they came when their types are exact: one C loop of
    # set lookups checks them all, and only the other fields (tuples, nested messages) call
    # their converters. A task list of 100,000 rows is 100,000 of these, 15 fields each.
    accepts = [_exact_set(hints[f.name]) or _ANYTHING for f in fields]
    others = [(i, conv) for i, conv in enumerate(converters) if accepts[i] is _ANYTHING]

    def decode(values: Any) -> Any:
        if not isinstance(values, list) or not n_required <= len(values) <= len(converters):
            raise PeerError(f"{name}: expected {len(converters)} fields")
        try:
            if all(map(contains, accepts, map(type, values))):
                args = list(values)
                for i, conv in others:
                    if i < len(args):
                        args[i] = conv(args[i])
                return cls(*args)
            return cls(*[conv(value) for conv, value in zip(converters, values, strict=False)])
        except (TypeError, ValueError) as exc:  # __post_init__ validation
            raise PeerError(f"{name}: {exc}") from None

    return decode


# Every type msgpack decodes to: the pre-check of a field that its converter checks anyway.
_ANYTHING = frozenset({list, dict, int, float, str, bytes, bool, type(None)})


def _exact_set(hint: Any) -> frozenset[type] | None:
    """The types a scalar field (or an optional one) takes as they are; None for the rest."""
    options = (typing.get_args(hint)
               if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,))
    exact: set[type] = set()
    for option in options:
        while isinstance(option, typing.NewType):
            option = option.__supertype__
        if option not in (int, float, str, bytes, bool, type(None)):
            return None
        exact.add(option)
    return frozenset(exact)


def _value_decoder(hint: Any, where: str) -> Converter:  # noqa: C901 - one branch per type form
    if hint is Any:
        return _identity
    if isinstance(hint, typing.NewType):  # an id: checked as its supertype, kept as it is
        return _value_decoder(hint.__supertype__, where)
    if hint is type(None) or hint is None:
        return _expect(lambda v: v is None, where, "null")
    if hint is bool:
        return _expect(lambda v: isinstance(v, bool), where, "a boolean")
    if hint is int:
        return _expect(lambda v: isinstance(v, int) and not isinstance(v, bool), where, "an integer")
    if hint is float:

        def to_float(v: Any) -> float:
            if isinstance(v, float):
                return v
            if isinstance(v, int) and not isinstance(v, bool):
                return float(v)
            raise PeerError(f"{where}: expected a number")

        return to_float
    if hint is str:
        return _expect(lambda v: isinstance(v, str), where, "a string")
    if hint is bytes:
        return _expect(lambda v: isinstance(v, bytes), where, "bytes")
    if is_record_class(hint):
        return _struct_decoder(hint)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [_value_decoder(a, where) for a in args]
        if len(args) == 2 and type(None) in args:  # ``X | None``, most unions
            only = options[1 - args.index(type(None))]

            def optional(v: Any) -> Any:
                return None if v is None else only(v)

            return optional

        def union(v: Any) -> Any:
            if v is None and type(None) in args:
                return None
            for option in options:
                try:
                    return option(v)
                except PeerError:
                    continue
            raise PeerError(f"{where}: no alternative of {hint} matches")

        return union
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _value_decoder(args[0], where)
            row = typing.get_args(args[0]) if typing.get_origin(args[0]) is tuple else ()
            row_types = _exact_types(row) if row and Ellipsis not in row else None
            scalar = _exact_types((args[0],))  # e.g. ids: one type check each, in C

            def var_tuple(v: Any) -> tuple[Any, ...]:
                if not isinstance(v, list):
                    raise PeerError(f"{where}: expected an array")
                if scalar is not None and all(map(_is, map(type, v), repeat(scalar[0]))):
                    return tuple(v)
                # Rows of scalars (a report's tasks): when every row is already what its
                # converters would return, type checks in C loops and no call per row.
                if (row_types is not None and all(map(_is, map(type, v), repeat(list)))
                        and set(map(len, v)) <= {len(row_types)}
                        and all(map(_is, map(type, chain.from_iterable(v)),
                                    cycle(row_types)))):
                    return tuple(map(tuple, v))
                return tuple(map(item, v))

            return var_tuple
        items = [_value_decoder(a, where) for a in args]
        exact = _exact_types(args)
        # Mixed rows (a packed task: ids, then its dependencies and entry): scalars pass on
        # one C loop of set lookups, only the other items call their converters.
        sets = [_exact_set(a) for a in args]
        accepts = [found or _ANYTHING for found in sets]
        converted = [(i, conv) for i, (conv, found) in enumerate(zip(items, sets, strict=True))
                     if found is None]

        def fixed_tuple(v: Any) -> tuple[Any, ...]:
            if not isinstance(v, list) or len(v) != len(items):
                raise PeerError(f"{where}: expected an array of {len(items)}")
            if exact is not None and all(map(_is, map(type, v), exact)):
                return tuple(v)  # every item already what its converter would return
            if exact is None and all(map(contains, accepts, map(type, v))):
                row = list(v)  # a union may try the same list with another option
                for i, conv in converted:
                    row[i] = conv(row[i])
                return tuple(row)
            return tuple(conv(x) for conv, x in zip(items, v, strict=False))

        return fixed_tuple
    if origin is list:
        item = _value_decoder(args[0], where) if args else _identity

        def as_list(v: Any) -> list[Any]:
            if not isinstance(v, list):
                raise PeerError(f"{where}: expected an array")
            return [item(x) for x in v]

        return as_list
    if origin is dict:
        key = _value_decoder(args[0], where) if args else _identity
        value = _value_decoder(args[1], where) if args else _identity

        def as_dict(v: Any) -> dict[Any, Any]:
            if not isinstance(v, dict):
                raise PeerError(f"{where}: expected a map")
            return {key(k): value(x) for k, x in v.items()}

        return as_dict
    raise LocalProtocolError(f"{where}: unsupported field type {hint!r}")


def _exact_types(args: tuple[Any, ...]) -> tuple[type, ...] | None:
    """The Python type each item of a tuple of scalars must have to pass its converter
    unchanged (ids as their supertype), or None when an item is not a plain scalar. Task
    reports are tuples of ints and floats: checking ``type(x) is int`` per item is a fifth of
    calling a converter per item (bool and int-for-float still go through the converters)."""
    exact = []
    for hint in args:
        while isinstance(hint, typing.NewType):
            hint = hint.__supertype__
        if hint not in (int, float, str, bytes):
            return None
        exact.append(hint)
    return tuple(exact)


def _expect(check: Callable[[Any], bool], where: str, what: str) -> Converter:
    def convert(v: Any) -> Any:
        if not check(v):
            raise PeerError(f"{where}: expected {what}")
        return v

    return convert

