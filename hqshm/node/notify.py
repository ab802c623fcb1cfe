"""The node's end of task notifications (`hq task notify`): receive, check, answer.

The node listens on an abstract Unix datagram socket (Linux: no file, no path-length limit,
gone with the node); the datagrams' format is hqshm/model/notification.py.
"""

from __future__ import annotations

import contextlib
import socket

from hqshm.cluster.digests import same_secret, token_hex
from hqshm.cluster.frozen import frozen
from hqshm.model.notification import MAX_DATAGRAM, access_key, decode_notice, encode_answer


@frozen
class Request:
    job_id: int
    task_id: int
    instance: int
    message: bytes
    sender: str


class Listener:
    """Receive notifications, answer each with ok or an error."""

    def __init__(self) -> None:
        self.name = f"hqshm-notify-{token_hex(8)}"
        self.token = token_hex(16)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.sock.setblocking(False)

    @property
    def access_key(self) -> str:
        return access_key(self.name, self.token)

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> list[Request]:
        """Every valid notification waiting now; invalid ones are answered and dropped."""
        requests = []
        while True:
            try:
                data, sender = self.sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return requests
            notice = decode_notice(data)
            if notice is None:
                self.answer(sender, "invalid notification")
            elif not same_secret(notice.token, self.token):
                self.answer(sender, "wrong access key")
            else:
                requests.append(Request(notice.job_id, notice.task_id, notice.instance,
                                        notice.message, sender))

    def answer(self, sender: str, error: str = "") -> None:
        if not sender:
            return  # an unbound sender cannot be answered
        with contextlib.suppress(OSError):
            self.sock.sendto(encode_answer(error), sender)

    def close(self) -> None:
        self.sock.close()
