"""An allocation queue's parameters as `hq alloc add` gives them (spec/cli.md §8).

Client and server agree on this value: the client builds it from the command line, the request
carries it, the server keeps and journals it. Every field is bounded and checked when the value
is made, so a forged request fails closed in the codec. Worker options keep the user's original
text: the worker command line of deployment.md §6.4 repeats them verbatim.
"""

from __future__ import annotations

from hqshm.cluster.frozen import frozen
from hqshm.cluster.resources import ResourceDescriptor
from hqshm.model import limits

MANAGERS = ("pbs", "slurm")
ON_SERVER_LOST = ("stop", "finish-running")
MAX_ALLOC_ARGS = 256  # extra manager arguments, worker --resource flags
MAX_WORKERS = 1_000_000
MAX_TIME_LIMIT = 10 * 365 * 86400.0
DEFAULT_IDLE_TIMEOUT = 300.0  # 5m: workers of an allocation that have nothing to do end


@frozen
class QueueParams:
    manager: str  # "pbs" | "slurm"
    time_limit: float  # seconds of walltime per allocation
    backlog: int = 1
    max_workers_per_alloc: int = 1
    max_worker_count: int | None = None
    name: str | None = None
    idle_timeout: float | None = None
    worker_start_cmd: str | None = None
    worker_stop_cmd: str | None = None
    worker_wrap_cmd: str | None = None
    worker_time_limit: float | None = None
    on_server_lost: str = "finish-running"
    cpus: str | None = None
    resources: tuple[str, ...] = ()
    coupling: str | None = None
    group: str | None = None
    no_hyper_threading: bool = False
    detect_resources: str | None = None
    overview_interval: str | None = None
    min_utilization: float = 0.0
    additional_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        limits.check_choice("manager", self.manager, MANAGERS)
        limits.check_choice("--on-server-lost", self.on_server_lost, ON_SERVER_LOST)
        if not 0 < self.time_limit <= MAX_TIME_LIMIT:
            raise limits.LimitError(message="time limit must be positive and at most 10 years")
        if self.backlog < 1:
            raise limits.LimitError(message="Backlog has to be at least 1")
        limits.check_int("backlog", self.backlog, 1, MAX_WORKERS)
        limits.check_int("max workers per allocation", self.max_workers_per_alloc, 1,
                         MAX_WORKERS)
        if self.max_worker_count is not None:
            limits.check_int("max worker count", self.max_worker_count, 1, MAX_WORKERS)
        for what, seconds in (("idle timeout", self.idle_timeout),
                              ("worker time limit", self.worker_time_limit)):
            if seconds is not None and not 0 <= seconds <= MAX_TIME_LIMIT:
                raise limits.LimitError(message=f"{what} out of range")
        if self.worker_time_limit is not None and self.worker_time_limit > self.time_limit:
            raise limits.LimitError(
                message="Worker time limit cannot be larger than queue time limit")
        if self.name is not None:
            limits.check_text("the queue name", self.name, 255)
            if not self.name or "/" in self.name or self.name in (".", ".."):
                raise limits.LimitError(message="the queue name must be a plain file name")
        for what, text in (("--worker-start-cmd", self.worker_start_cmd),
                           ("--worker-stop-cmd", self.worker_stop_cmd),
                           ("--worker-wrap-cmd", self.worker_wrap_cmd),
                           ("--cpus", self.cpus), ("--coupling", self.coupling),
                           ("--group", self.group), ("--detect-resources",
                                                     self.detect_resources),
                           ("--overview-interval", self.overview_interval)):
            if text is not None:
                limits.check_text(what, text)
                _check_line(what, text)
        limits.check_count("--resource flags", len(self.resources), MAX_ALLOC_ARGS)
        limits.check_count("manager arguments", len(self.additional_args), MAX_ALLOC_ARGS)
        for text in (*self.resources, *self.additional_args):
            limits.check_text("an argument", text)
            _check_line("an argument", text)
        if not 0.0 <= self.min_utilization <= 1.0:
            raise limits.LimitError(message="--min-utilization must be within 0..1")

    @property
    def worker_limit(self) -> float:
        """How long a worker of this queue lives at most."""
        return self.worker_time_limit if self.worker_time_limit is not None else self.time_limit

    @property
    def manager_name(self) -> str:
        return "PBS" if self.manager == "pbs" else "SLURM"

    def declared_resources(self) -> ResourceDescriptor | None:
        """The worker resources `--cpus`/`--resource` declare; None without `--cpus` (the
        queue then learns them from its first worker: probing mode)."""
        if self.cpus is None:
            return None
        from hqshm.model.descriptor import build_descriptor
        from hqshm.model.resourcespec import parse_cpus, parse_pool, parse_resource_arg

        pools = [parse_cpus(self.cpus)]
        for arg in self.resources:
            name, definition = parse_resource_arg(arg)
            pools.append(parse_pool(name, definition))
        return build_descriptor(pools)


def _check_line(what: str, text: str) -> None:
    """Text that goes into a batch script must stay on its line."""
    if "\n" in text or "\r" in text or "\0" in text:
        raise limits.LimitError(message=f"{what} must not contain line breaks or NUL")
