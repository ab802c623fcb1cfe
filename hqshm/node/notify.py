"""Task notifications (`hq task notify`): a task's one-line message to its node, both ends.

The node listens on an abstract Unix datagram socket (Linux: no file, no path-length limit,
gone with the node). Tasks find it through ``HQ_ACCESS_KEY`` = ``@<socket name>:<token>``; the
token, random per node, shows that the sender was given the key, i.e. is one of the node's tasks
(or its user). A notification is one datagram, answered with one datagram, so the node's loop
never blocks on a client.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
from dataclasses import dataclass

import msgpack

from hqshm.errors import UserError

MAX_MESSAGE = 1024  # spec/cli.md §7
_MAX_DATAGRAM = MAX_MESSAGE + 512
REPLY_TIMEOUT = 10.0


class NoAccessKey(UserError):  # spec/cli.md §7, hq task notify
    template = "HQ_ACCESS_KEY variable not found. Are you running this command inside a task?"


class BadAccessKey(UserError):
    template = "Value of HQ_ACCESS_KEY has a wrong format"


class MessageTooLong(UserError):
    template = "Notify message limit exceeded, message len: {length}, limit: 1024"


class NotifyFailed(UserError):
    template = "Cannot send the notification: {reason}"


@dataclass(frozen=True, slots=True)
class Request:
    job_id: int
    task_id: int
    instance: int
    message: bytes
    sender: str


class Listener:
    """The node's end: receive notifications, answer each with ok or an error."""

    def __init__(self) -> None:
        self.name = f"hqshm-notify-{secrets.token_hex(8)}"
        self.token = secrets.token_hex(16)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.sock.setblocking(False)

    @property
    def access_key(self) -> str:
        return f"@{self.name}:{self.token}"

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> list[Request]:
        """Every valid notification waiting now; invalid ones are answered and dropped."""
        requests = []
        while True:
            try:
                data, sender = self.sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return requests
            request = self._parse(data, sender)
            if request is not None:
                requests.append(request)

    def _parse(self, data: bytes, sender: str) -> Request | None:
        try:
            token, job_id, task_id, instance, message = msgpack.unpackb(data)
            valid = (isinstance(token, str) and all(type(v) is int for v in
                                                    (job_id, task_id, instance))
                     and isinstance(message, bytes) and len(message) <= MAX_MESSAGE)
        except Exception:  # a hostile datagram: refuse, never crash the node
            valid = False
        if not valid:
            self.answer(sender, "invalid notification")
            return None
        if not secrets.compare_digest(token, self.token):
            self.answer(sender, "wrong access key")
            return None
        return Request(job_id, task_id, instance, message, sender)

    def answer(self, sender: str, error: str = "") -> None:
        if not sender:
            return  # an unbound sender cannot be answered
        with contextlib.suppress(OSError):
            self.sock.sendto(msgpack.packb([error]), sender)

    def close(self) -> None:
        self.sock.close()


def parse_key(access_key: str | None) -> tuple[str, str]:
    """(socket name, token) of an ``HQ_ACCESS_KEY``, or HQ's errors for a missing/bad one."""
    if not access_key:
        raise NoAccessKey()
    name, sep, token = access_key.rpartition(":")
    if not sep or not name.startswith("@") or len(name) < 2 or not token:
        raise BadAccessKey()
    return name[1:], token


def send(access_key: str | None, job_id: int, task_id: int, instance: int,
         message: bytes) -> None:
    """`hq task notify`: deliver one message to the node and wait for its answer."""
    name, token = parse_key(access_key)
    if len(message) > MAX_MESSAGE:
        raise MessageTooLong(length=len(message))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + f"hqshm-notify-client-{secrets.token_hex(8)}")
        sock.settimeout(REPLY_TIMEOUT)
        try:
            sock.sendto(msgpack.packb([token, job_id, task_id, instance, message]),
                        "\0" + name)
            data = sock.recv(_MAX_DATAGRAM)
        except OSError as exc:
            raise NotifyFailed(reason=f"the worker does not answer ({exc})") from None
    try:
        (error,) = msgpack.unpackb(data)
    except Exception:
        raise NotifyFailed(reason="invalid answer from the worker") from None
    if error:
        raise NotifyFailed(reason=str(error))
