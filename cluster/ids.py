"""The ids of the cluster and of the product above it, as distinct types over ``int``.

A job id passed where a worker id belongs is a type error (mypy checks the cores), yet an id
costs nothing at run time: ``JobId(3)`` is the int 3. A task is known to the cluster by its
``TaskKey``, its job id in the upper 32 bits and its task id in the lower 32, so batches of
tasks are flat integers (and numpy ``uint64`` arrays); the helpers here are the one place that
knows this layout. No numpy at import time: the `hq` client imports the protocol, and so this.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, NewType, cast

if TYPE_CHECKING:
    import numpy as np

JobId = NewType("JobId", int)
TaskId = NewType("TaskId", int)  # a task's id within its job
TaskKey = NewType("TaskKey", int)  # job id << 32 | task id
WorkerId = NewType("WorkerId", int)
InstanceId = NewType("InstanceId", int)  # bumped each time a task is given back to run again
GroupId = NewType("GroupId", int)  # a submit of the product, a group of the core

KEY_SHIFT = 32
TASK_MASK = 0xFFFF_FFFF
MAX_JOB_ID = 0xFFFF_FFFF  # a job id fills a key's upper 32 bits
FIRST_INSTANCE = InstanceId(0)  # every task starts as instance 0

# The per-task helpers return their arithmetic as it is, without calling a NewType (about 50 ns
# a call): split_key runs for every task a node reports. Their annotations make the types.


def task_key(job_id: JobId, task_id: TaskId) -> TaskKey:
    return (job_id << KEY_SHIFT) | task_id  # type: ignore[return-value]


def split_key(key: TaskKey) -> tuple[JobId, TaskId]:
    return key >> KEY_SHIFT, key & TASK_MASK  # type: ignore[return-value]


def job_of(key: TaskKey) -> JobId:
    return key >> KEY_SHIFT  # type: ignore[return-value]


def jobs_of(keys: Iterable[TaskKey]) -> set[JobId]:
    """The jobs of a batch of tasks: one call a batch, the loop stays inside."""
    return cast("set[JobId]", {key >> KEY_SHIFT for key in keys})


def task_keys(job_id: JobId, task_ids: np.ndarray) -> np.ndarray:
    """The keys (uint64) of a job's tasks, from their ids (an array of unsigned integers)."""
    return task_ids.astype("uint64") | (job_id << KEY_SHIFT)
