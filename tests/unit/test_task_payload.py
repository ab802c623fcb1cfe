"""The per-task part of a RUN record, as the node packs it and an executor reads it."""

from __future__ import annotations

import sys

from hqshm.node.executor import TaskPayload


def test_round_trip() -> None:
    env = {"HQ_RESOURCE_REQUEST_cpus": "1 compact", "HQ_RESOURCE_VALUES_cpus": "3"}
    packed = TaskPayload.pack(7, b"entry", env, ["3"], True, True, ["a", "b"])
    assert TaskPayload.decode(packed) == TaskPayload(7, b"entry", env, ["3"], True, True,
                                                     ["a", "b"])
    assert TaskPayload.decode(TaskPayload(1, None, {}, [], False, False).encode()).resource_env \
        == {}


def test_resource_variable_names_are_not_interned() -> None:
    """msgpack interns the keys of a map it decodes. A name that nothing else held was then
    interned and dropped again on every task, and a few thousand tasks in the interpreter's
    table of interned strings doubled in every executor (0.96 MB each)."""
    name = "".join(["HQ_RESOURCE_VALUES_", "gpus_payload_test"])  # made at run time
    payload = TaskPayload.decode(TaskPayload.pack(1, None, {name: "0"}, [], True, False, []))
    (decoded,) = payload.resource_env
    assert decoded == name
    probe = "".join(["HQ_RESOURCE_VALUES_", "gpus_payload_test"])
    # sys.intern returns an equal string interned before, if there is one: the decoded name
    # would be it.
    assert sys.intern(probe) is not decoded
