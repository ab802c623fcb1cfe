"""``LocalCluster``: a server and workers on this machine for the length of a script.

Unlike HQ's (whose server runs inside the script's process, without keys), the server and
workers are background processes that keep client and worker authentication. They are stopped
by ``stop()``, on leaving a ``with`` block, and at interpreter exit if the script did neither.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from hqshm.api.client import Client
from hqshm.api.processes import ClusterProcesses


@dataclasses.dataclass
class WorkerConfig:
    """A worker's CPUs: ``cores`` of them (ids 0..cores-1); None: this machine's count."""

    cores: int | None = None


class LocalCluster:
    """A server in ``server_dir`` (None: a new temporary directory, removed at stop), and a
    first worker when ``worker_config`` is given. ``cluster.server_dir`` is where it runs."""

    def __init__(self, server_dir: str | Path | None = None,
                 worker_config: WorkerConfig | None = None) -> None:
        if server_dir is None:
            self.cluster = ClusterProcesses(Path(tempfile.mkdtemp(prefix="hq")), owns_dir=True)
        else:
            self.cluster = ClusterProcesses(Path(os.path.abspath(server_dir)))
        self._pid = os.getpid()
        atexit.register(self._stop_at_exit)
        try:
            self.cluster.start_server()
            if worker_config is not None:
                self.start_worker(worker_config)
        except BaseException:
            self.cluster.owns_dir = False  # keep the logs that the error names
            self._stop_at_exit()
            raise

    def start_worker(self, config: WorkerConfig | None = None) -> None:
        cores = config.cores if config is not None else None
        self.cluster.start_worker(cores if cores is not None else os.cpu_count() or 1)

    def client(self, **client_args: Any) -> Client:
        return Client(self.cluster.server_dir, **client_args)

    def stop(self) -> None:
        """Stop the server and its workers; a second call raises."""
        atexit.unregister(self._stop_at_exit)
        self.cluster.stop()

    def _stop_at_exit(self) -> None:
        # A forked child inherits the handler, not the processes.
        if os.getpid() == self._pid and not self.cluster.stopped:
            self.stop()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if not self.cluster.stopped:  # the block may have stopped it already
            self.stop()
