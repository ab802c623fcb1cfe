"""A task's notification (`hq task notify`, spec/cli.md §7) as it travels to its node.

A task finds its node through ``HQ_ACCESS_KEY`` = ``@<socket name>:<token>``: the node listens
on an abstract Unix datagram socket of that name, and the token, random per node, shows that the
sender was given the key, i.e. is one of the node's tasks (or its user). A notification is one
datagram (msgpack ``[token, job, task, instance, message]``), answered with one datagram
(``[error]``, empty when delivered), so the node's loop never blocks on a sender.

Pure: the format and its checks. The sockets are the node's (hqshm/node/notify.py) and the
sender's (`hq task notify`, hqshm/cli/commands/tasks.py).
"""

from __future__ import annotations

import msgpack

from hqshm.cluster.frozen import frozen
from hqshm.cluster.ids import MAX_JOB_ID, TASK_MASK, InstanceId, JobId, TaskId
from hqshm.cluster.protocol import MAX_NOTIFICATION
from hqshm.errors import UserError

MAX_DATAGRAM = MAX_NOTIFICATION + 512
# A node's token is 32 hexadecimal digits and ids are 32-bit (cluster/ids.py). Anything else
# is a hostile sender (the socket is in the abstract namespace: any local user can write to
# it), refused before it is compared (a constant-time comparison refuses non-ASCII text with
# an exception).
MAX_TOKEN = 64


class NoAccessKey(UserError):  # spec/cli.md §7, hq task notify
    template = "HQ_ACCESS_KEY variable not found. Are you running this command inside a task?"


class BadAccessKey(UserError):
    template = "Value of HQ_ACCESS_KEY has a wrong format"


class MessageTooLong(UserError):
    template = "Notify message limit exceeded, message len: {length}, limit: 1024"


class NotifyFailed(UserError):
    template = "Cannot send the notification: {reason}"


@frozen
class Notice:
    """One notification, as a datagram carries it."""

    token: str
    job_id: JobId
    task_id: TaskId
    instance: InstanceId
    message: bytes


def access_key(name: str, token: str) -> str:
    return f"@{name}:{token}"


def parse_key(key: str | None) -> tuple[str, str]:
    """(socket name, token) of an ``HQ_ACCESS_KEY``, or HQ's errors for a missing/bad one."""
    if not key:
        raise NoAccessKey()
    name, sep, token = key.rpartition(":")
    if not sep or not name.startswith("@") or len(name) < 2 or not token:
        raise BadAccessKey()
    return name[1:], token


def encode_notice(token: str, job_id: int, task_id: int, instance: int, message: bytes) -> bytes:
    if len(message) > MAX_NOTIFICATION:
        raise MessageTooLong(length=len(message))
    return msgpack.packb([token, job_id, task_id, instance, message])


def decode_notice(data: bytes) -> Notice | None:
    """The notification in a datagram, or None for anything malformed (a hostile sender)."""
    try:
        token, job_id, task_id, instance, message = msgpack.unpackb(data)
    except Exception:  # msgpack raises several unrelated types; none may reach the node
        return None
    if not (isinstance(token, str) and token.isascii() and len(token) <= MAX_TOKEN
            and all(type(v) is int and 0 <= v <= bound for v, bound in
                    ((job_id, MAX_JOB_ID), (task_id, TASK_MASK), (instance, TASK_MASK)))
            and isinstance(message, bytes) and len(message) <= MAX_NOTIFICATION):
        return None
    return Notice(token, job_id, task_id, instance, message)


def encode_answer(error: str = "") -> bytes:
    return msgpack.packb([error])


def decode_answer(data: bytes) -> str:
    """The node's answer: "" when delivered, else why not; NotifyFailed if unreadable."""
    try:
        (error,) = msgpack.unpackb(data)
    except Exception:
        raise NotifyFailed(reason="invalid answer from the worker") from None
    return str(error)
