"""The affinity/launch module against real processes, through the C module and the fallback.

Every launch test runs twice (``backend`` fixture): the C launcher and the Python fallback must
be indistinguishable from the task's side, errors included.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fixtures.machines import cpulist

from hqshm.node import affinity
from hqshm.node.affinity import CpuInfo, MemPolicy, SpawnError, SpawnSpec, SpawnStage

PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    spawn: Callable[[SpawnSpec], int]
    get_affinity: Callable[..., list[int]]
    set_affinity: Callable[..., None]
    set_memory_policy: Callable[[MemPolicy, int | None], None]
    get_memory_policy: Callable[[], tuple[int, list[int]]]
    read_topology: Callable[[str], list[CpuInfo]]


C_BACKEND = Backend(
    "c",
    affinity._c_spawn,
    affinity._c_get_affinity,
    affinity._c_set_affinity,
    affinity._c_set_memory_policy,
    affinity._c_get_memory_policy,
    affinity._c_read_topology,
)
PY_BACKEND = Backend(
    "python",
    affinity._py_spawn,
    affinity._py_get_affinity,
    affinity._py_set_affinity,
    affinity._py_set_memory_policy,
    affinity._py_get_memory_policy,
    affinity._py_read_topology,
)


@pytest.fixture(params=["c", "python"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "c":
        if not affinity.C_MODULE:
            pytest.skip(f"C module not built: {affinity.FALLBACK_REASON}")
        return C_BACKEND
    return PY_BACKEND


def wait(pid: int, timeout: float = 5.0) -> int:
    """Exit code of pid (negative: killed by that signal); kills it when it overstays."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} did not exit within {timeout} s")
        time.sleep(0.002)


def spec(argv: list[str], **fields: Any) -> SpawnSpec:
    fields.setdefault("env", {"PATH": "/usr/bin:/bin"})
    return SpawnSpec(argv, **fields)


def run(backend: Backend, tmp_path: Path, argv: list[str], **fields: Any) -> tuple[int, str]:
    """Runs argv to completion; returns its exit code and stdout."""
    out = tmp_path / "run.out"
    fields.setdefault("stdout_path", str(out))
    code = wait(backend.spawn(spec(argv, **fields)))
    return code, out.read_text()


def status_field(status: str, name: str) -> str:
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    raise AssertionError(f"{name} missing from /proc/self/status")


def spawn_error(backend: Backend, argv: list[str], **fields: Any) -> SpawnError:
    with pytest.raises(SpawnError) as info:
        pid = backend.spawn(spec(argv, **fields))
        wait(pid)  # reached only when the test is about to fail
    return info.value


def executable(path: Path, text: str, mode: int = 0o755) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


# ------------------------------------------------------------------------------ process state


def test_affinity_is_exactly_the_requested_cpus(backend: Backend, tmp_path: Path) -> None:
    for cpu in os.sched_getaffinity(0):
        code, out = run(backend, tmp_path, ["cat", "/proc/self/status"], cpus=[cpu])
        assert code == 0
        assert status_field(out, "Cpus_allowed_list") == str(cpu)


def test_no_cpus_inherits_the_affinity(backend: Backend, tmp_path: Path) -> None:
    code, out = run(backend, tmp_path, ["cat", "/proc/self/status"])
    mine = status_field(Path("/proc/self/status").read_text(), "Cpus_allowed_list")
    assert code == 0
    assert status_field(out, "Cpus_allowed_list") == mine


def test_unusable_cpu_set_fails_at_affinity(backend: Backend) -> None:
    for cpus in ([], [4000]):
        error = spawn_error(backend, ["true"], cpus=cpus)
        assert (error.stage, error.errno) == (SpawnStage.AFFINITY, errno.EINVAL)


def test_task_sees_default_signals_and_an_empty_mask(backend: Backend, tmp_path: Path) -> None:
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        code, out = run(backend, tmp_path, ["cat", "/proc/self/status"])
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGINT, old_int)
    assert code == 0
    ignored = int(status_field(out, "SigIgn"), 16)
    assert int(status_field(out, "SigBlk"), 16) == 0
    for sig in (signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ):
        assert not ignored & (1 << (sig - 1)), sig.name


def test_child_leads_a_new_session(backend: Backend, tmp_path: Path) -> None:
    code, out = run(backend, tmp_path, ["cat", "/proc/self/stat"])
    fields = out.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session
    pid = int(out.split()[0])
    assert code == 0
    assert (int(fields[1]), int(fields[2]), int(fields[3])) == (os.getpid(), pid, pid)


def test_child_can_stay_in_our_session(backend: Backend, tmp_path: Path) -> None:
    code, out = run(backend, tmp_path, ["cat", "/proc/self/stat"], new_session=False)
    fields = out.rsplit(")", 1)[1].split()
    assert code == 0
    assert (int(fields[2]), int(fields[3])) == (os.getpgrp(), os.getsid(0))


def test_cwd_is_applied(backend: Backend, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    code, out = run(backend, tmp_path, ["pwd", "-P"], cwd=str(work))
    assert code == 0
    assert out.strip() == str(work.resolve())


def test_env_is_exactly_the_given_one(backend: Backend, tmp_path: Path) -> None:
    env = {"HQ_TASK_ID": "7", "SPACED": "a b", "EMPTY": ""}
    code, out = run(backend, tmp_path, ["env"], env=env)  # found through the default PATH
    assert code == 0
    assert sorted(out.splitlines()) == ["EMPTY=", "HQ_TASK_ID=7", "SPACED=a b"]


def test_exit_code_and_stderr_reach_the_parent(backend: Backend, tmp_path: Path) -> None:
    err = tmp_path / "run.err"
    code, out = run(
        backend, tmp_path, ["sh", "-c", "echo out; echo err >&2; exit 3"], stderr_path=str(err)
    )
    assert code == 3
    assert (out, err.read_text()) == ("out\n", "err\n")


def test_outputs_are_created_and_truncated_when_exec_fails(
    backend: Backend, tmp_path: Path
) -> None:
    out, err = tmp_path / "0.stdout", tmp_path / "0.stderr"
    out.write_text("stale output")
    error = spawn_error(backend, ["no-such-program-hq"], stdout_path=str(out), stderr_path=str(err))
    assert (error.stage, error.errno) == (SpawnStage.EXEC, errno.ENOENT)
    assert error.filename == "no-such-program-hq"
    assert out.read_bytes() == b""
    assert err.read_bytes() == b""


def test_non_executable_file_is_eacces(backend: Backend, tmp_path: Path) -> None:
    script = executable(tmp_path / "job.sh", "#!/bin/sh\necho no\n", mode=0o644)
    error = spawn_error(backend, [str(script)])
    assert (error.stage, error.errno) == (SpawnStage.EXEC, errno.EACCES)


def test_executable_without_interpreter_is_enoexec(backend: Backend, tmp_path: Path) -> None:
    script = executable(tmp_path / "job.sh", "echo no shebang\n")
    error = spawn_error(backend, [str(script)])
    assert (error.stage, error.errno) == (SpawnStage.EXEC, errno.ENOEXEC)


# ------------------------------------------------------------------------------ PATH search


def test_path_comes_from_the_task_env(backend: Backend, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable(bin_dir / "hqtool", "#!/bin/sh\necho found-$1\n")
    code, out = run(backend, tmp_path, ["hqtool", "x"], env={"PATH": f"/nonexistent:{bin_dir}"})
    assert (code, out) == (0, "found-x\n")
    # `true` is on our PATH but not on the task's.
    error = spawn_error(backend, ["true"], env={"PATH": str(bin_dir)})
    assert (error.stage, error.errno) == (SpawnStage.EXEC, errno.ENOENT)


def test_path_search_remembers_eacces(backend: Backend, tmp_path: Path) -> None:
    locked, other = tmp_path / "locked", tmp_path / "other"
    locked.mkdir()
    other.mkdir()
    executable(locked / "hqtool", "#!/bin/sh\necho locked\n", mode=0o644)
    env = {"PATH": f"{locked}:{other}"}
    error = spawn_error(backend, ["hqtool"], env=env)
    assert (error.stage, error.errno) == (SpawnStage.EXEC, errno.EACCES)
    executable(other / "hqtool", "#!/bin/sh\necho other\n")
    assert run(backend, tmp_path, ["hqtool"], env=env) == (0, "other\n")


def test_a_name_with_a_slash_is_not_searched(backend: Backend, tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    executable(tmp_path / "bin" / "hqtool", "#!/bin/sh\necho relative\n")
    env = {"PATH": "/nonexistent"}
    assert run(backend, tmp_path, ["bin/hqtool"], env=env, cwd=str(tmp_path)) == (
        0,
        "relative\n",
    )
    error = spawn_error(backend, ["bin/true"], env={"PATH": "/usr"})  # not /usr/bin/true
    assert (error.stage, error.errno) == (SpawnStage.EXEC, errno.ENOENT)


# ------------------------------------------------------------------------------ stdio and fds


def test_stdin_from_a_file(backend: Backend, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("from a file\n")
    assert run(backend, tmp_path, ["cat"], stdin_path=str(source)) == (0, "from a file\n")


def test_stdin_from_an_fd(backend: Backend, tmp_path: Path) -> None:
    r, w = os.pipe()  # both close-on-exec, as Python makes them
    try:
        os.write(w, b"from a pipe\n")
        os.close(w)
        pid = backend.spawn(spec(["cat"], stdin_fd=r, stdout_path=str(tmp_path / "run.out")))
    finally:
        os.close(r)
    assert wait(pid) == 0
    assert (tmp_path / "run.out").read_text() == "from a pipe\n"


def test_default_stdin_is_dev_null(backend: Backend, tmp_path: Path) -> None:
    assert run(backend, tmp_path, ["readlink", "/proc/self/fd/0"]) == (0, "/dev/null\n")


def test_no_fd_leaks_into_the_task(backend: Backend, tmp_path: Path) -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    leaky = fcntl.fcntl(fd, fcntl.F_DUPFD, 100)  # inheritable, unlike Python's own fds
    os.close(fd)
    try:
        code, out = run(backend, tmp_path, ["ls", "/proc/self/fd"])
    finally:
        os.close(leaky)
    assert code == 0
    assert sorted(out.split()) == ["0", "1", "2", "3"]  # 3: the directory ls is reading


def test_bad_stdio_paths_fail_at_their_stage(backend: Backend, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing" / "file")
    cases = [
        ({"cwd": missing}, SpawnStage.CWD),
        ({"stdin_path": missing}, SpawnStage.STDIN),
        ({"stdout_path": missing}, SpawnStage.STDOUT),
        ({"stderr_path": missing}, SpawnStage.STDERR),
    ]
    for fields, stage in cases:
        error = spawn_error(backend, ["true"], **fields)
        assert (error.stage, error.errno) == (stage, errno.ENOENT)


def test_invalid_arguments_are_refused_before_launch(backend: Backend) -> None:
    with pytest.raises(ValueError):
        SpawnSpec([], env={})
    with pytest.raises(ValueError):
        backend.spawn(spec(["echo", "a\0b"]))
    with pytest.raises(ValueError):
        backend.spawn(spec(["true"], env={"A=B": "c"}))
    with pytest.raises(ValueError):
        backend.spawn(spec(["true"], env={"A": "nul\0"}))


# ------------------------------------------------------------------------------ parent death

# Spawns `sleep` with the given pdeathsig, prints its pid, and waits to be killed.
PARENT_SCRIPT = """
import sys, time
from hqshm.node import affinity
pid = affinity.spawn(affinity.SpawnSpec(["sleep", "30"], env={"PATH": "/usr/bin:/bin"},
                                        pdeathsig=int(sys.argv[1])))
print(pid, affinity.C_MODULE, flush=True)
time.sleep(30)
"""


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Orphaned grandchildren become our children, so we can reap them and read how they died."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip("PR_SET_CHILD_SUBREAPER refused")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def orphan_of_killed_parent(backend: Backend, pdeathsig: int) -> int:
    env = dict(os.environ)
    if backend is PY_BACKEND:
        env["HQSHM_NO_CMODULE"] = "1"
    else:
        env.pop("HQSHM_NO_CMODULE", None)
    parent = subprocess.Popen(
        [sys.executable, "-P", "-c", PARENT_SCRIPT, str(pdeathsig)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        pid, c_module = parent.stdout.readline().split()
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
    assert c_module == str(backend is C_BACKEND)
    return int(pid)


def test_task_dies_with_its_parent(backend: Backend, subreaper: None) -> None:
    orphan = orphan_of_killed_parent(backend, signal.SIGTERM)
    assert wait(orphan) == -signal.SIGTERM


def test_task_without_pdeathsig_outlives_its_parent(backend: Backend, subreaper: None) -> None:
    orphan = orphan_of_killed_parent(backend, 0)
    time.sleep(0.2)  # no event to wait for: a parent-death signal, were one sent, would arrive
    try:
        assert os.waitpid(orphan, os.WNOHANG) == (0, 0)
    finally:
        os.kill(orphan, signal.SIGKILL)
        os.waitpid(orphan, 0)


# ------------------------------------------------------------------------------ affinity calls


def test_get_and_set_affinity_of_another_process(backend: Backend) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    pid = backend.spawn(spec(["sleep", "10"]))
    try:
        assert backend.get_affinity(pid) == cpus
        backend.set_affinity([cpus[-1]], pid)
        assert backend.get_affinity(pid) == [cpus[-1]]
        assert os.sched_getaffinity(pid) == {cpus[-1]}
    finally:
        os.kill(pid, signal.SIGKILL)
        wait(pid)


def test_set_affinity_refuses_an_empty_set(backend: Backend) -> None:
    with pytest.raises(OSError) as info:
        backend.set_affinity([], os.getpid())
    assert info.value.errno == errno.EINVAL


# ------------------------------------------------------------------------------ memory policy


def in_child(fn: Callable[[], Any]) -> Any:
    """Runs fn in a forked child so that its process-wide effects stay there."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            try:
                result: Any = ("ok", fn())
            except OSError as exc:
                result = ("oserror", exc.errno)
            os.write(w, pickle.dumps(result))
        finally:
            os._exit(0)
    os.close(w)
    with open(r, "rb") as pipe:
        data = pipe.read()
    wait(pid)
    kind, value = pickle.loads(data)
    if kind == "oserror":
        raise OSError(value, os.strerror(value))
    return value


@pytest.fixture(scope="module")
def mempolicy_allowed() -> None:
    try:
        in_child(lambda: PY_BACKEND.set_memory_policy(MemPolicy.BIND, 0))
    except OSError as exc:
        pytest.skip(f"the kernel refuses set_mempolicy: {exc}")


@pytest.mark.usefixtures("mempolicy_allowed")
def test_memory_policy_round_trip(backend: Backend) -> None:
    def round_trip(mode: MemPolicy, node: int | None) -> tuple[int, list[int]]:
        backend.set_memory_policy(mode, node)
        return backend.get_memory_policy()

    assert in_child(lambda: round_trip(MemPolicy.BIND, 0)) == (2, [0])
    assert in_child(lambda: round_trip(MemPolicy.PREFERRED, 0)) == (1, [0])
    assert in_child(lambda: round_trip(MemPolicy.DEFAULT, None)) == (0, [])


@pytest.mark.usefixtures("mempolicy_allowed")
def test_spawned_task_gets_the_memory_policy(backend: Backend, tmp_path: Path) -> None:
    if not Path("/proc/self/numa_maps").exists():
        pytest.skip("no /proc/self/numa_maps")
    code, out = run(
        backend, tmp_path, ["cat", "/proc/self/numa_maps"], mem_node=0, mem_mode=MemPolicy.BIND
    )
    assert code == 0
    assert out.split()[1] == "bind:0"
    code, out = run(backend, tmp_path, ["cat", "/proc/self/numa_maps"])
    assert out.split()[1] == "default"


@pytest.mark.usefixtures("mempolicy_allowed")
def test_unknown_node_fails_at_mempolicy(backend: Backend) -> None:
    error = spawn_error(backend, ["true"], mem_node=1000, mem_mode=MemPolicy.BIND)
    assert (error.stage, error.errno) == (SpawnStage.MEMPOLICY, errno.EINVAL)


# ------------------------------------------------------------------------------ topology


def make_sysfs(
    root: Path,
    *,
    sockets: int,
    nodes_per_socket: int,
    cores_per_node: int,
    threads: int,
    offline: frozenset[int] = frozenset(),
    numa: bool = True,
) -> list[CpuInfo]:
    """Writes a sysfs-shaped tree numbered as Linux does (second threads after all first
    threads) and returns what a reader must find in it."""
    cores = sockets * nodes_per_socket * cores_per_node
    cores_per_socket = nodes_per_socket * cores_per_node
    cpu_root = root / "devices/system/cpu"
    node_cpus: dict[int, list[int]] = {}
    expected = []
    for cpu in range(cores * threads):
        core = cpu % cores
        topology = cpu_root / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "core_id").write_text(f"{core % cores_per_socket}\n")
        (topology / "physical_package_id").write_text(f"{core // cores_per_socket}\n")
        siblings = [core + t * cores for t in range(threads)]
        (topology / "thread_siblings_list").write_text(",".join(map(str, siblings)) + "\n")
        node = core // cores_per_node
        node_cpus.setdefault(node, []).append(cpu)
        if cpu not in offline:
            expected.append(
                CpuInfo(
                    id=cpu,
                    core=core % cores_per_socket,
                    socket=core // cores_per_socket,
                    numa=node if numa else 0,
                    first_sibling=core,
                )
            )
    online = [cpu for cpu in range(cores * threads) if cpu not in offline]
    (cpu_root / "online").write_text(cpulist(online))
    (cpu_root / "possible").write_text(cpulist(list(range(cores * threads))))
    node_root = root / "devices/system/node"
    node_root.mkdir(parents=True)
    (node_root / "possible").write_text(cpulist(list(node_cpus)))
    (node_root / "power").mkdir()  # not a node
    if numa:
        for node, cpus in node_cpus.items():
            (node_root / f"node{node}").mkdir()
            (node_root / f"node{node}" / "cpulist").write_text(cpulist(cpus))
    return expected


def test_topology_of_two_sockets_four_numa_nodes(backend: Backend, tmp_path: Path) -> None:
    expected = make_sysfs(
        tmp_path,
        sockets=2,
        nodes_per_socket=2,
        cores_per_node=4,
        threads=2,
        offline=frozenset({5, 30}),
    )
    cpus = backend.read_topology(str(tmp_path))
    assert cpus == expected
    assert len(cpus) == 30
    assert {c.numa for c in cpus} == {0, 1, 2, 3}
    assert {c.socket for c in cpus} == {0, 1}
    # what --no-hyper-threading keeps: the first thread of each core
    assert [c.id for c in cpus if c.id == c.first_sibling] == [i for i in range(16) if i != 5]


def test_topology_without_node_directories_is_one_node(backend: Backend, tmp_path: Path) -> None:
    expected = make_sysfs(
        tmp_path, sockets=1, nodes_per_socket=1, cores_per_node=2, threads=2, numa=False
    )
    shutil.rmtree(tmp_path / "devices/system/node")
    cpus = backend.read_topology(str(tmp_path))
    assert cpus == expected
    assert {c.numa for c in cpus} == {0}


def test_topology_larger_than_the_first_buffer(backend: Backend, tmp_path: Path) -> None:
    expected = make_sysfs(
        tmp_path, sockets=2, nodes_per_socket=1, cores_per_node=80, threads=2
    )  # 320 CPUs
    assert backend.read_topology(str(tmp_path)) == expected


def test_topology_of_a_missing_tree_is_enoent(backend: Backend, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        backend.read_topology(str(tmp_path / "nothing"))


def test_topology_of_this_machine(backend: Backend) -> None:
    online = Path("/sys/devices/system/cpu/online").read_text()
    cpus = backend.read_topology("/sys")
    assert [c.id for c in cpus] == affinity._parse_cpulist(online)
    assert len(cpus) == os.cpu_count()
    assert all(c.numa >= 0 and c.first_sibling <= c.id for c in cpus)
    assert cpus == PY_BACKEND.read_topology("/sys")


# ------------------------------------------------------------------------------ the C module itself


@pytest.mark.skipif(not affinity.C_MODULE, reason="C module not built")
def test_c_topology_reports_the_count_beyond_max(tmp_path: Path) -> None:
    make_sysfs(tmp_path, sockets=1, nodes_per_socket=1, cores_per_node=4, threads=2)
    out = affinity.ffi.new("struct hq_cpu[]", 3)
    assert affinity.lib.hq_read_topology(os.fsencode(tmp_path), out, 3) == 8
    assert [c.id for c in out] == [0, 1, 2]


@pytest.mark.skipif(not affinity.C_MODULE, reason="C module not built")
def test_c_split_strings_counts_exactly() -> None:
    ffi, lib = affinity.ffi, affinity.lib
    out = ffi.new("const char *[]", 3)
    assert lib.hq_split_strings(b"ab\0c\0", 5, out, 2) == 2
    assert [ffi.string(out[0]), ffi.string(out[1]), out[2]] == [b"ab", b"c", ffi.NULL]
    assert lib.hq_split_strings(b"ab\0c\0", 5, out, 1) == -1  # a string too many
    assert lib.hq_split_strings(b"ab\0c", 4, out, 2) == -1  # no terminator


def test_no_cmodule_switch_selects_the_fallback_silently() -> None:
    code = "from hqshm.node import affinity as a; print(a.C_MODULE, a.FALLBACK_REASON)"
    result = subprocess.run(
        [sys.executable, "-P", "-c", code],
        env=dict(os.environ, HQSHM_NO_CMODULE="1"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.startswith("False ")
    assert "HQSHM_NO_CMODULE=1" in result.stdout
    assert result.stdout.count("\n") == 1
    assert result.stderr == ""


def test_spawn_error_is_an_oserror_with_its_stage() -> None:
    error = SpawnError(SpawnStage.EXEC, errno.ENOENT, "foo")
    assert isinstance(error, OSError)
    assert (error.stage, error.errno, error.strerror, error.filename) == (
        SpawnStage.EXEC,
        errno.ENOENT,
        "No such file or directory",
        "foo",
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.stage, copy.errno, copy.filename) == (SpawnStage.EXEC, errno.ENOENT, "foo")
