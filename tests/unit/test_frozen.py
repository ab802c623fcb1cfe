"""``@frozen`` compiles a class's ``__init__`` at its first instantiation (cluster/frozen.py):
the class behaves from the first call on as with the compiled one."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
from hqshm.cluster.frozen import frozen


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
