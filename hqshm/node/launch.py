"""What exactly to start for one task: argv, environment and fully resolved paths.

Pure: the executor calls it with the group's program, the task's ids and what the node
allocated, and gets a plan; creating directories and spawning are the executor's job.
Variables follow spec/jobs.md §6.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from hqshm.cluster.frozen import field, frozen
from hqshm.model import placeholders
from hqshm.model.program import PinMode, ProgramSpec, Stdio
from hqshm.model.streamformat import new_node_key

# Variables the user may set for a task (with --env); HQ then leaves them alone (spec/jobs.md
# §4.4). Values merely inherited from the worker's environment are overridden, as in HQ.
USER_OWNED = ("OMP_NUM_THREADS", "OMP_PLACES", "OMP_PROC_BIND")


@frozen
class NodeContext:
    """What every task of this node shares.

    ``stream_key`` is drawn once, when the node builds its context before forking executors,
    so that all of them (respawned ones too) name the node's stream file alike
    (hqshm/streaming.py)."""

    worker_id: int
    hostname: str
    work_dir: str
    hq_path: str
    base_env: Mapping[str, str] = field(repr=False)
    stream_key: str = field(default_factory=new_node_key)
    access_key: str = field(default="", repr=False)  # HQ_ACCESS_KEY, for `hq task notify`
    # set_mempolicy mode for a task whose CPUs lie in one NUMA node (hqshm.node.affinity's
    # MemPolicy value: 2 bind, 1 preferred); the node sends the node id with each task.
    memory_mode: int = 2
    # Where function tasks' results that other tasks take as arguments are kept (tmpfs):
    # hqshm/node/results.py; "" for none.
    results_dir: str = ""


@frozen
class LaunchPlan:
    argv: list[str]
    env: dict[str, str] = field(repr=False)
    cwd: str
    stdout: str | None  # None: discard
    stderr: str | None
    rm_stdout: bool
    rm_stderr: bool


# The variables of ``plan``'s environment whose values depend on more than the program (its
# group) and the node: on the task's ids, arguments, resources, CPUs and directory.
TASK_VARIABLES = frozenset((
    "HQ_TASK_ID", "HQ_INSTANCE_ID", "HQ_ENTRY", "HQ_CPUS", "OMP_NUM_THREADS", "OMP_PLACES",
    "OMP_PROC_BIND", "HQ_TASK_DIR", "HQ_ERROR_FILENAME", "HQ_NUM_NODES", "HQ_NODE_FILE",
    "HQ_HOST_FILE",
))


_variables: dict[tuple[str, ...], frozenset[str]] = {}


def task_variables(resource_env: Mapping[str, str]) -> frozenset[str]:
    """The variables that can differ between two tasks of a group: ``TASK_VARIABLES`` and
    those of the task's resources. The same set for the same names, so that the executor
    sees at once that two tasks vary in the same ones."""
    if not resource_env:
        return TASK_VARIABLES
    names = tuple(resource_env)
    known = _variables.get(names)
    if known is None:
        if len(_variables) >= 256:
            _variables.clear()
        known = _variables[names] = TASK_VARIABLES.union(names)
    return known


def stdio_template(stdio: Stdio) -> str | None:
    return stdio.path if stdio.kind == Stdio.FILE else None


def plan(
    spec: ProgramSpec,
    *,
    task_id: int,
    instance: int,
    entry: str | None,
    resource_env: Mapping[str, str],
    cpus: list[str],
    node: NodeContext,
    whole_cpus: bool = True,
    task_dir: str | None = None,
    nodes: Sequence[str] = (),
) -> LaunchPlan:
    """``whole_cpus`` is False for a fractional CPU request: then no OMP_NUM_THREADS.
    Variables that depend on more than ``spec`` and ``node`` are in ``TASK_VARIABLES``, or
    come from ``resource_env``."""
    paths = task_paths(spec, task_id, instance)
    env = dict(node.base_env)
    env.update(spec.env)
    user_set = {name for name in USER_OWNED if name in spec.env}
    env.update(resource_env)
    env["HQ_JOB_ID"] = str(spec.job_id)
    env["HQ_TASK_ID"] = str(task_id)
    env["HQ_INSTANCE_ID"] = str(instance)
    env["HQ_SUBMIT_DIR"] = spec.submit_dir
    env["HQ"] = node.hq_path
    if node.access_key:
        env["HQ_ACCESS_KEY"] = node.access_key
    if entry is not None:
        env["HQ_ENTRY"] = entry
    if cpus:
        env["HQ_CPUS"] = ",".join(cpus)
        if "OMP_NUM_THREADS" not in user_set and whole_cpus:
            env["OMP_NUM_THREADS"] = str(len(cpus))
    argv = list(spec.args)
    if spec.pin != PinMode.NONE:
        env["HQ_PIN"] = spec.pin
        if spec.pin == PinMode.TASKSET and cpus:
            argv = ["taskset", "-c", ",".join(cpus), *argv]
        elif spec.pin == PinMode.OMP and cpus:
            if "OMP_PLACES" not in user_set:
                env["OMP_PLACES"] = "{" + ",".join(cpus) + "}"
            if "OMP_PROC_BIND" not in user_set:
                env["OMP_PROC_BIND"] = "close"
    if task_dir is not None:
        env["HQ_TASK_DIR"] = task_dir
        env["HQ_ERROR_FILENAME"] = f"{task_dir}/hq-error"
    if nodes:
        env["HQ_NUM_NODES"] = str(len(nodes))
        env["HQ_NODE_FILE"] = f"{task_dir}/hq-nodefile"
        env["HQ_HOST_FILE"] = f"{task_dir}/hq-hostfile"
    for name in user_set:
        env[name] = spec.env[name]
    return LaunchPlan(
        argv=argv,
        env=env,
        cwd=paths.cwd,
        stdout=paths.stdout,
        stderr=paths.stderr,
        rm_stdout=spec.stdout.rm_if_finished,
        rm_stderr=spec.stderr.rm_if_finished,
    )


_PER_TASK = (f"%{{{placeholders.TASK_ID}}}", f"%{{{placeholders.INSTANCE_ID}}}")
_paths: dict[tuple[str, str | None, str | None, int, str, str], placeholders.TaskPaths] = {}


def task_paths(spec: ProgramSpec, task_id: int, instance: int) -> placeholders.TaskPaths:
    """The task's working directory and output files; those that name neither the task nor
    its instance are resolved once for all the tasks of a group (a third of a plan's cost)."""
    stdout, stderr = stdio_template(spec.stdout), stdio_template(spec.stderr)
    key = (spec.cwd, stdout, stderr, spec.job_id, spec.submit_dir, spec.server_uid)
    paths = _paths.get(key)
    if paths is None:
        paths = placeholders.resolve_at_start(
            placeholders.SubmitPaths(spec.cwd, stdout, stderr),
            task_id=task_id,
            instance_id=instance,
            job_id=spec.job_id,
            submit_dir=spec.submit_dir,
            server_uid=spec.server_uid,
        )
        if not any(p in t for t in (spec.cwd, stdout or "", stderr or "") for p in _PER_TASK):
            if len(_paths) >= 256:
                _paths.clear()
            _paths[key] = paths
    return paths


def short_hostname(hostname: str) -> str:
    """The text before the first dot, unless the name is an IP address (jobs.md §15)."""
    try:
        ipaddress.ip_address(hostname)
        return hostname
    except ValueError:
        return hostname.split(".", 1)[0]


def write_node_files(task_dir: str, nodes: Sequence[str]) -> None:
    """`hq-nodefile` (short names) and `hq-hostfile` (full names), the root node first."""
    with open(f"{task_dir}/hq-nodefile", "w") as f:
        f.write("".join(f"{short_hostname(n)}\n" for n in nodes))
    with open(f"{task_dir}/hq-hostfile", "w") as f:
        f.write("".join(f"{n}\n" for n in nodes))
