"""A worker's settings as it reports them when it registers (the rows of `hq worker info`).

The node sends its configuration to the server as the opaque ``info`` of its registration; it has
its own small codec so that the node needs nothing of the client link to build it.
"""

from __future__ import annotations

from typing import ClassVar

from hqshm.cluster.codec import Registry
from hqshm.cluster.errors import PeerError
from hqshm.cluster.frozen import frozen
from hqshm.cluster.resources import ResourceDescriptor

WORKER_CONFIG = Registry("worker configuration", 1)


@WORKER_CONFIG.message
@frozen
class WorkerConfiguration:
    """A worker's settings, as it reported them when it registered (worker info rows)."""

    TAG: ClassVar[int] = 1
    hostname: str
    work_dir: str
    heartbeat: float
    idle_timeout: float | None
    time_limit: float | None
    on_server_lost: str
    group: str
    pid: int
    listen_address: str
    resources: ResourceDescriptor
    manager: str = "None"  # "None" | "PBS" | "SLURM"
    manager_job_id: str | None = None
    overview_interval: float | None = None
    min_utilization: float = 0.0
    # Why tasks start through Python's os functions, about 3x slower, instead of the compiled
    # launcher; empty when the node has it (shown so that a broken install is noticed).
    launcher_fallback: str = ""

    def encode(self) -> bytes:
        return WORKER_CONFIG.encode(self)


def decode_configuration(data: bytes) -> WorkerConfiguration:
    """The registration's ``info``; raises ``PeerError`` for anything else."""
    config = WORKER_CONFIG.decode(data)
    if not isinstance(config, WorkerConfiguration):
        raise PeerError("not a worker configuration")
    return config
