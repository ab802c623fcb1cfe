"""``@frozen`` compiles a class's ``__init__`` at its first instantiation (cluster/frozen.py):
the class behaves from the first call on as with the compiled one."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from typing import ClassVar

import pytest
from hqshm.cluster.frozen import MISSING, field, frozen, mutable, record_fields, replace


@frozen
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = dataclasses.field(default_factory=tuple)
    hidden: bytes = dataclasses.field(default=b"", repr=False)


@frozen
class Checked:
    n: int

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError("negative")


def test_init_is_compiled_at_the_first_instance_and_kept() -> None:
    @frozen
    class Fresh:
        a: int

    stub = Fresh.__init__
    assert Fresh(1).a == 1
    assert Fresh.__init__ is not stub
    assert Fresh.__init__.__qualname__.endswith("Fresh.__init__")
    assert Fresh(a=2) == Fresh(2)


def test_the_first_call_checks_arguments_as_the_compiled_init_does() -> None:
    @frozen
    class Fresh:
        a: int

    with pytest.raises(TypeError, match="missing 1 required positional argument: 'a'"):
        Fresh()
    with pytest.raises(TypeError, match="unexpected keyword argument 'b'"):
        Fresh(1, b=2)


def test_defaults_factories_post_init_and_dataclass_helpers() -> None:
    p = Point(1)
    assert (p.x, p.y, p.tags, p.hidden) == (1, 0, (), b"")
    assert repr(Point(1, 2, ("a",), b"s")) == "Point(x=1, y=2, tags=('a',))"
    assert dataclasses.replace(p, y=5) == Point(1, 5)
    assert [f.name for f in dataclasses.fields(Point)] == ["x", "y", "tags", "hidden"]
    assert pickle.loads(pickle.dumps(Point(3, 4))) == Point(3, 4)
    assert hash(Point(1)) == hash(Point(1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(ValueError, match="negative"):
        Checked(-1)
    assert Checked(1).n == 1


@frozen
class Own:
    """Fields from cluster/frozen.py's ``field``, a ClassVar, and methods the class writes."""

    KIND: ClassVar[str] = "own"
    a: int
    b: list[int] = field(default_factory=list, compare=False)
    c: str = field(default="c", repr=False)
    d: int = field(default=0, init=False)

    def __repr__(self) -> str:
        return f"Own<{self.a}>"


@frozen
class Sub(Point):
    z: int = 9


def test_own_fields_classvars_and_own_methods() -> None:
    own = Own(1)
    assert (own.a, own.b, own.c, own.d, Own.KIND) == (1, [], "c", 0, "own")
    assert repr(own) == "Own<1>"
    assert Own(1, [2]) == Own(1, [3])  # b is not compared
    assert Own.__match_args__ == ("a", "b", "c")
    assert [f.name for f in record_fields(Own)] == ["a", "b", "c", "d"]
    assert not hasattr(own, "__dict__")
    assert replace(own, a=2) == Own(2)
    with pytest.raises(ValueError, match="init=False"):
        replace(own, d=1)
    assert dataclasses.asdict(own) == {"a": 1, "b": [], "c": "c", "d": 0}
    assert dataclasses.is_dataclass(Own) and dataclasses.is_dataclass(own)


def test_subclasses_take_the_fields_of_their_bases_first() -> None:
    sub = Sub(1, z=3)
    assert [f.name for f in dataclasses.fields(Sub)] == ["x", "y", "tags", "hidden", "z"]
    assert (sub.x, sub.y, sub.z) == (1, 0, 3)
    assert Sub.__slots__ == ("z",)
    assert sub != Point(1)


def test_class_definition_errors_are_those_of_dataclass() -> None:
    with pytest.raises(TypeError, match="non-default argument 'b' follows default argument"):
        @frozen
        class Order:
            a: int = 0
            b: int

    with pytest.raises(ValueError, match="mutable default"):
        @frozen
        class Mutable:
            a: list[int] = []  # noqa: RUF012


def test_record_fields_of_a_plain_dataclass() -> None:
    @dataclasses.dataclass
    class Plain:
        a: int
        b: int = 2

    records = record_fields(Plain)
    assert [(f.name, f.required, f.default) for f in records] == [("a", True, MISSING),
                                                                   ("b", False, 2)]


def test_frozen_classes_do_not_import_dataclasses() -> None:
    probe = ("import sys\nfrom hqshm.cluster.frozen import field, frozen\n"
             "@frozen\nclass A:\n    a: int\n    b: tuple[int, ...] = field(default_factory=tuple)\n"
             "assert A(1) == A(1) and hash(A(1)) == hash(A(1, ()))\n"
             "assert 'dataclasses' not in sys.modules, 'imported'\n")
    subprocess.run([sys.executable, "-c", probe], check=True)


def test_a_mutable_record_changes_and_compares_by_identity() -> None:
    @mutable
    class Slot:
        index: int
        queue: list[int] = field(default_factory=list)
        busy: bool = False

    first, second = Slot(1), Slot(1)
    first.queue.append(7)
    first.busy = True
    assert (first.index, first.queue, first.busy) == (1, [7], True)
    assert second.queue == [] and second.queue is not first.queue
    assert first != second and first == first and len({first, second}) == 2  # identity
    assert repr(first).endswith(".Slot(index=1, queue=[7], busy=True)")  # qualname
    assert [f.name for f in dataclasses.fields(Slot)] == ["index", "queue", "busy"]
    copy = replace(first, index=2)
    assert (copy.index, copy.queue, copy.busy) == (2, [7], True)
    with pytest.raises(AttributeError):
        first.other = 1  # type: ignore[attr-defined]  # slotted: no stray attributes
