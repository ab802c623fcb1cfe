"""The server's listening sockets and access file, opened before the rest of the server loads.

`hq server start` binds its client and worker ports and publishes its access file first, with
nothing but the socket module (issue 8, item 7): pyzmq takes longer to import than everything
else before it. Then it imports pyzmq, whose sockets take over the bound ports (``ZMQ_USE_FD``),
and builds the core, the job book and the journal: a client or node started right after the
publish finds the server at once, and what it sends waits in the kernel's accept queue, then
in the sockets, until the loop runs. The ZAP handler is bound before the sockets take over the
ports, so no connection gets in unchecked; it answers once the loop polls it.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING

from hqshm import __version__
from hqshm.cluster.frozen import frozen, mutable, replace
from hqshm.errors import UserError
from hqshm.link import access, serverdir

if TYPE_CHECKING:
    import zmq

    from hqshm.cluster.security import ZapResponder

# How much of a journal is read for its server UID: the first record is a short ServerStarted.
_JOURNAL_HEAD = 4096


class ServerOnline(UserError):  # spec/cli.md §3, hq server start
    template = (
        "Server at {dir} is already online, please stop it first"
        " using `hq server stop --server-dir {dir}`"
    )


@frozen
class ServerConfig:
    server_dir: Path
    host: str | None = None
    client_port: int = 0
    worker_port: int = 0
    idle_timeout: float | None = None
    access_file: Path | None = None
    disable_client_auth: bool = False
    disable_worker_auth: bool = False
    journal: Path | None = None
    journal_flush_period: float = 30.0


@mutable
class Listeners:
    """Both ports bound and listening, not yet served: what `hq server start` publishes
    before it imports pyzmq."""

    record: access.AccessRecord  # as published: the bound ports, the server UID
    client: socket.socket
    worker: socket.socket
    instance: Path | None = None  # the published instance dir

    def publish(self, server_dir: Path) -> Path:
        """Create the instance dir with its access file and point ``hq-current`` at it."""
        self.instance = serverdir.create_instance_dir(server_dir)
        access.write_access_file(self.instance / serverdir.ACCESS_FILE, self.record)
        serverdir.link_current(server_dir, self.instance)
        return self.instance

    def unpublish(self, server_dir: Path) -> None:
        if self.instance is not None:
            serverdir.unlink_current(server_dir, self.instance)

    def close(self) -> None:
        self.client.close()
        self.worker.close()


@mutable
class Endpoints:
    """The listeners served by pyzmq: ROUTER sockets on the bound ports."""

    listeners: Listeners
    context: zmq.Context
    zap: ZapResponder
    clients: zmq.Socket
    workers: zmq.Socket
    worker_monitor: zmq.Socket  # reports each node's disconnect

    @property
    def record(self) -> access.AccessRecord:
        return self.listeners.record

    @property
    def instance(self) -> Path | None:
        return self.listeners.instance

    def publish(self, server_dir: Path) -> Path:
        return self.listeners.publish(server_dir)

    def unpublish(self, server_dir: Path) -> None:
        self.listeners.unpublish(server_dir)

    def close(self) -> None:
        """Close the sockets and the context, letting queued replies leave for a moment."""
        self.zap.close()
        self.context.destroy(linger=200)


def bind_listeners(config: ServerConfig, server_uid: str | None) -> Listeners:
    """Bind both ports (those of ``--access-file``, else the configured ones, 0: any free
    one); ``server_uid`` replaces the access record's (a server restored from its journal
    keeps its UID). Nothing is published yet."""
    given = _given_record(config)
    client_port, worker_port = config.client_port, config.worker_port
    if given is not None:
        assert given.client is not None and given.worker is not None
        client_port, worker_port = given.client.port, given.worker.port
    client = _listen(client_port)
    try:
        worker = _listen(worker_port)
    except BaseException:
        client.close()
        raise
    if given is not None:
        record = given
    else:
        host = config.host or socket.gethostname()
        record = access.generate(
            __version__,
            client_host=host,
            client_port=client.getsockname()[1],
            worker_host=host,
            worker_port=worker.getsockname()[1],
            client_secret=not config.disable_client_auth,
            worker_secret=not config.disable_worker_auth,
        )
    if server_uid:
        record = replace(record, server_uid=server_uid)
    return Listeners(record, client, worker)


def _listen(port: int) -> socket.socket:
    """A listening TCP socket on every IPv4 address, as libzmq's ``tcp://*:port`` binds."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("", port))
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise UserError(f"Cannot listen for clients and workers: port {port}: "
                        f"{exc.strerror or exc}") from None
    return sock


def attach(listeners: Listeners) -> Endpoints:
    """Serve the bound ports with pyzmq (imported here: the slow part of starting): the ZAP
    handler first, then a ROUTER socket on each listener's descriptor."""
    import zmq

    from hqshm.cluster.bounds import MAX_FRAME
    from hqshm.cluster.security import ZapResponder, derive_keys, listen
    from hqshm.model.limits import MAX_REQUEST_BYTES

    record = listeners.record
    assert record.client is not None and record.worker is not None
    client_secret = access.secret_bytes(record.client)
    worker_secret = access.secret_bytes(record.worker)
    client_keys = derive_keys(client_secret) if client_secret else None
    worker_keys = derive_keys(worker_secret) if worker_secret else None
    context = zmq.Context()
    zap = None
    try:
        zap = ZapResponder(context, {"client": client_keys, "worker": worker_keys})
        clients, _ = listen(context, "*", record.client.port, client_keys, "client",
                            MAX_REQUEST_BYTES, listeners.client.fileno())
        workers, _ = listen(context, "*", record.worker.port, worker_keys, "worker",
                            MAX_FRAME, listeners.worker.fileno())
    except zmq.ZMQError as exc:
        if zap is not None:
            zap.close()
        context.destroy(linger=0)
        raise UserError(f"Cannot listen for clients and workers: {exc}") from None
    # libzmq owns the descriptors now, and closes them with its sockets.
    listeners.client.detach()
    listeners.worker.detach()
    monitor = workers.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    return Endpoints(listeners, context, zap, clients, workers, monitor)


def check_not_online(server_dir: Path) -> None:
    """Fail if a server answers from this dir; a stale access file (dead server) is fine."""
    try:
        serverdir.find_access_file(server_dir)
    except UserError:
        return  # nothing published there: the common case costs no connection
    from hqshm.link.client import ClientConnection

    try:
        conn = ClientConnection(server_dir, connect_timeout=3.0)
    except UserError:
        return
    conn.close()
    raise ServerOnline(dir=server_dir)


def journal_server_uid(path: Path | None) -> tuple[bool, str | None]:
    """(known, uid): the UID a server restored from ``path`` keeps (None: a fresh one), read
    from the journal's first record. Not known when that record is damaged: the caller then
    loads the whole journal before it publishes anything."""
    if path is None:
        return True, None
    try:
        with open(path, "rb") as f:
            head = f.read(_JOURNAL_HEAD)
    except FileNotFoundError:
        return True, None
    except OSError:
        return False, None  # the full load reports it
    if not head:
        return True, None
    from hqshm.server.journal import frames  # only with a journal: not before every publish

    payload = frames.first_record(head)
    if payload is None:
        return False, None
    import msgpack

    try:
        fields = msgpack.unpackb(payload)
    except (ValueError, msgpack.UnpackException):
        return False, None
    if (isinstance(fields, list) and len(fields) == 4
            and fields[:2] == [frames.PROTOCOL, frames.SERVER_STARTED_TAG]
            and isinstance(fields[2], str)):
        return True, fields[2]
    return False, None


def _given_record(config: ServerConfig) -> access.AccessRecord | None:
    """The record of ``--access-file``: the server takes its ports, keys and UID."""
    if config.access_file is None:
        return None
    record = access.read_access_file(config.access_file)
    if record.client is None or record.worker is None or record.server_uid is None:
        raise UserError(f"The access file {config.access_file} must be a full "
                        "file (with server_uid, client and worker parts)")
    return record
