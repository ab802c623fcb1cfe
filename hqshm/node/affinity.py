"""CPU topology, affinity, NUMA memory policy and program launch for executors.

The work is done by the C module ``hqshm._hqaffinity`` (csrc/): it launches with vfork
semantics, whose cost does not grow with the executor's memory as fork's does. When that module
cannot be imported (no compiler at install time, or ``HQSHM_NO_CMODULE=1``), the same API runs
on ``os`` (fork + exec) and ctypes: slower, same observable behaviour and errors. ``C_MODULE``
and ``FALLBACK_REASON`` say which one is in use; the node logs the reason, this module never
prints.

Launch steps, in order, in the child: new session, parent-death signal, CPU affinity, memory
policy, working directory, stdin, stdout, stderr (files created and truncated *before* exec, so
that a program that cannot run still leaves HQ's empty output files), then exec with the PATH of
the task's own environment. The parent-death signal follows the *thread* that spawned: spawn
from a thread that outlives the task (an executor's main thread).

One module of about 530 lines because it is one API with two interchangeable backends: the C
module's wrappers and the Python fallback sit side by side so that they stay the same, and the
tests run every case against both.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import signal
import struct
from collections.abc import Iterable, Mapping, Sequence
from enum import IntEnum
from typing import Any

from hqshm.cluster.frozen import field, frozen
from hqshm.errors import HqError
from hqshm.node.cpumask import bits_of

try:
    if os.environ.get("HQSHM_NO_CMODULE") == "1":
        raise ImportError("disabled by HQSHM_NO_CMODULE=1")
    from hqshm._hqaffinity import ffi, lib
except ImportError as exc:
    ffi = lib = None
    C_MODULE = False
    FALLBACK_REASON: str | None = (
        f"C launcher unavailable ({(str(exc) or type(exc).__name__).splitlines()[0]});"
        " using os.fork + exec"
    )
else:
    C_MODULE = True
    FALLBACK_REASON = None

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"

# Signals a task must see with their default action: Python ignores SIGPIPE and SIGXFSZ, and
# an executor may ignore SIGINT; the C child resets exactly these plus every caught signal.
_RESET_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGCHLD, signal.SIGXFSZ)
# execvpe moves on to the next PATH entry after these.
_SEARCH_GOES_ON = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.ESTALE, errno.ENODEV, errno.ETIMEDOUT, errno.ENAMETOOLONG}
)
_NODE_WORDS = 16  # 1024 NUMA nodes
_TOPOLOGY_CAPACITY = 256


class MemPolicy(IntEnum):
    """NUMA memory policies, with the kernel's MPOL_* values."""

    DEFAULT = 0
    PREFERRED = 1  # fall back to other nodes when the node is full
    BIND = 2  # fail (OOM) rather than leave the node


class SpawnStage(IntEnum):
    """The launch step that failed; values are shared with csrc/hqaffinity.h."""

    NONE = 0
    CWD = 1
    STDIN = 2
    STDOUT = 3
    STDERR = 4
    AFFINITY = 5
    MEMPOLICY = 6
    EXEC = 7
    FORK = 8
    SESSION = 9
    PDEATHSIG = 10


class SpawnError(HqError, OSError):
    """A launch failed at ``stage``; ``errno``/``strerror`` are the OS error of that step.

    The node turns it into HQ's ``Cannot execute "..."`` text (spec/jobs.md §7).
    """

    def __init__(self, stage: SpawnStage, err: int, filename: str | None = None) -> None:
        super().__init__(err, os.strerror(err), filename)
        self.stage = stage

    def __reduce__(self) -> tuple[type[SpawnError], tuple[SpawnStage, int, str | None]]:
        return SpawnError, (self.stage, self.errno, self.filename)


@frozen
class CpuInfo:
    id: int
    core: int  # core_id: unique only within its socket
    socket: int
    numa: int
    first_sibling: int  # the CPU kept by --no-hyper-threading


@frozen
class SpawnSpec:
    """One program launch. ``env`` is the task's whole environment (nothing is inherited)."""

    argv: Sequence[str | bytes]
    env: Mapping[str, str] = field(repr=False)  # may hold tokens
    cwd: str | None = None
    stdin_path: str | None = None  # wins over stdin_fd; neither: /dev/null
    stdin_fd: int | None = None  # an fd of the spawning process, dup'ed onto 0
    stdout_path: str | None = None  # None: /dev/null
    stderr_path: str | None = None  # None: /dev/null
    cpus: Sequence[int] | None = None  # None: inherit the spawner's affinity
    mem_node: int | None = None  # None: inherit the spawner's memory policy
    mem_mode: MemPolicy = MemPolicy.PREFERRED
    new_session: bool = True
    pdeathsig: int = signal.SIGTERM  # 0: none

    def __post_init__(self) -> None:
        if not self.argv:
            raise ValueError("argv must not be empty")


# ---------------------------------------------------------------------------------------------
# Shared conversions


def _cpu_mask(cpus: Iterable[int]) -> bytes:
    """Little-endian 64-bit words, at least one: an empty set must reach the kernel (EINVAL)."""
    mask = 0
    for cpu in cpus:
        if cpu < 0:
            raise ValueError(f"negative CPU id {cpu}")
        mask |= 1 << cpu
    return mask.to_bytes(max(8, (mask.bit_length() + 63) // 64 * 8), "little")


def _mask_bits(data: bytes) -> list[int]:
    return bits_of(int.from_bytes(data, "little"))


def _os_error(err: int) -> OSError:
    return OSError(err, os.strerror(err))


def _pack_argv(argv: Sequence[str | bytes]) -> bytes:
    """The strings NUL-terminated, back to back: one encode instead of one per string."""
    try:
        return os.fsencode("\0".join(argv) + "\0")  # type: ignore[arg-type]
    except TypeError:  # some are bytes
        return b"".join(os.fsencode(arg) + b"\0" for arg in argv)


def _pack_env(env: Mapping[str, str]) -> bytes:
    if not env:
        return b""
    if "=" in "".join(env):
        raise ValueError("illegal environment variable name")
    return os.fsencode("\0".join(map("=".join, env.items())) + "\0")


def _parse_cpulist(text: str) -> list[int]:
    cpus = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        lo, _, hi = item.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


# ---------------------------------------------------------------------------------------------
# C implementation


def _c_get_affinity(pid: int = 0) -> list[int]:
    nwords = 16
    while True:
        mask = ffi.new("uint64_t[]", nwords)
        rc = lib.hq_getaffinity(pid, mask, nwords)
        if rc == -errno.EINVAL and nwords < 1 << 16:  # more CPUs than the mask holds
            nwords *= 4
            continue
        if rc < 0:
            raise _os_error(-rc)
        return _mask_bits(ffi.buffer(mask)[:])


def _c_set_affinity(cpus: Iterable[int], pid: int = 0) -> None:
    data = _cpu_mask(cpus)
    rc = lib.hq_setaffinity(pid, ffi.from_buffer("uint64_t[]", data), len(data) // 8)
    if rc < 0:
        raise _os_error(-rc)


def _c_set_memory_policy(mode: MemPolicy, node: int | None) -> None:
    rc = lib.hq_set_mempolicy(int(mode), -1 if node is None else node)
    if rc < 0:
        raise _os_error(-rc)


def _c_get_memory_policy() -> tuple[int, list[int]]:
    mode = ffi.new("int *")
    mask = ffi.new("uint64_t[]", _NODE_WORDS)
    rc = lib.hq_get_mempolicy(mode, mask, _NODE_WORDS)
    if rc < 0:
        raise _os_error(-rc)
    return mode[0], _mask_bits(ffi.buffer(mask)[:])


def _c_read_topology(sysfs_root: str = "/sys") -> list[CpuInfo]:
    root = os.fsencode(sysfs_root)
    capacity = _TOPOLOGY_CAPACITY
    while True:
        out = ffi.new("struct hq_cpu[]", capacity)
        n = lib.hq_read_topology(root, out, capacity)
        if n < 0:
            raise _os_error(-n)
        if n <= capacity:
            return [CpuInfo(c.id, c.core, c.socket, c.numa, c.first_sibling) for c in out[0:n]]
        capacity = n


def _c_path(path: str | None) -> Any:
    return ffi.NULL if path is None else ffi.new("char[]", os.fsencode(path))


def _c_args(spec: SpawnSpec) -> tuple[Any, tuple[Any, ...]]:
    """The argument struct of hq_spawn, and what it points into (keep both until the call
    returns). Kept apart from the call so that its cost, all of it Python, can be measured."""
    argv = spec.argv
    argv_blob = _pack_argv(argv)
    c_argv = ffi.new("const char *[]", len(argv) + 1)
    if lib.hq_split_strings(ffi.from_buffer(argv_blob), len(argv_blob), c_argv, len(argv)) < 0:
        raise ValueError("embedded null byte in argv")
    env = spec.env
    env_blob = _pack_env(env)
    c_env = ffi.new("const char *[]", len(env) + 1)
    if lib.hq_split_strings(ffi.from_buffer(env_blob), len(env_blob), c_env, len(env)) < 0:
        raise ValueError("embedded null byte in env")
    cwd = _c_path(spec.cwd)
    stdin = _c_path(spec.stdin_path)
    stdout = _c_path(spec.stdout_path)
    stderr = _c_path(spec.stderr_path)
    if spec.cpus is None:
        mask = ffi.NULL
        nwords = 0
    else:
        mask_bytes = _cpu_mask(spec.cpus)
        mask = ffi.from_buffer("uint64_t[]", mask_bytes)
        nwords = len(mask_bytes) // 8
    a = ffi.new("struct hq_spawn_args *")
    a.argv = c_argv
    a.envp = c_env
    a.cwd = cwd
    a.stdin_path = stdin
    a.stdin_fd = -1 if spec.stdin_fd is None else spec.stdin_fd
    a.stdout_path = stdout
    a.stderr_path = stderr
    a.cpumask = mask
    a.nwords = nwords
    a.mem_mode = spec.mem_mode
    a.mem_node = -1 if spec.mem_node is None else spec.mem_node
    a.new_session = spec.new_session
    a.pdeathsig = spec.pdeathsig
    return a, (argv_blob, c_argv, env_blob, c_env, cwd, stdin, stdout, stderr, mask)


def _c_spawn(spec: SpawnSpec) -> int:
    a, _pointed_to = _c_args(spec)  # alive until we return
    r = ffi.new("struct hq_spawn_result *")
    pid = lib.hq_spawn(a, r)
    if pid < 0:
        raise SpawnError(SpawnStage(r.stage), r.err, os.fsdecode(spec.argv[0]))
    return pid


# ---------------------------------------------------------------------------------------------
# Python fallback


@functools.cache
def _ctypes() -> tuple[Any, Any]:
    """(ctypes, libc) for prctl and the mempolicy syscalls; loaded before any fork."""
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


# (set_mempolicy, get_mempolicy) per machine; the generic table serves aarch64 and riscv64.
_MEMPOLICY_SYSCALLS = {
    "x86_64": (238, 239),
    "aarch64": (237, 236),
    "riscv64": (237, 236),
    "ppc64le": (261, 260),
    "ppc64": (261, 260),
    "s390x": (270, 269),
}
_PR_SET_PDEATHSIG = 1


def _mempolicy_syscall(which: int, *args: Any) -> None:
    numbers = _MEMPOLICY_SYSCALLS.get(os.uname().machine)
    if numbers is None:
        raise _os_error(errno.ENOSYS)
    ctypes, libc = _ctypes()
    if libc.syscall(numbers[which], *args) < 0:
        raise _os_error(ctypes.get_errno())


def _py_get_affinity(pid: int = 0) -> list[int]:
    return sorted(os.sched_getaffinity(pid))


def _py_set_affinity(cpus: Iterable[int], pid: int = 0) -> None:
    os.sched_setaffinity(pid, list(cpus))


def _py_set_memory_policy(mode: MemPolicy, node: int | None) -> None:
    ctypes, _ = _ctypes()
    if mode == MemPolicy.DEFAULT or node is None:
        _mempolicy_syscall(0, ctypes.c_int(int(mode)), None, ctypes.c_ulong(0))
        return
    if not 0 <= node < _NODE_WORDS * 64:
        raise _os_error(errno.EINVAL)
    mask = (ctypes.c_uint64 * _NODE_WORDS)()
    mask[node // 64] = 1 << (node % 64)
    maxnode = (node // 64 + 1) * 64 + 1  # the kernel reads maxnode - 1 bits
    _mempolicy_syscall(0, ctypes.c_int(int(mode)), mask, ctypes.c_ulong(maxnode))


def _py_get_memory_policy() -> tuple[int, list[int]]:
    ctypes, _ = _ctypes()
    mode = ctypes.c_int(0)
    mask = (ctypes.c_uint64 * _NODE_WORDS)()
    maxnode = ctypes.c_ulong(_NODE_WORDS * 64 + 1)
    _mempolicy_syscall(1, ctypes.byref(mode), mask, maxnode, None, ctypes.c_ulong(0))
    return mode.value & 0xFF, _mask_bits(bytes(mask))


def _read_sysfs(path: str) -> str | None:
    """A missing topology file gets a default, as in the C reader: containers lack some."""
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def _py_read_topology(sysfs_root: str = "/sys") -> list[CpuInfo]:
    with open(f"{sysfs_root}/devices/system/cpu/online") as f:
        online = _parse_cpulist(f.read())
    node_dir = f"{sysfs_root}/devices/system/node"
    try:
        names = os.listdir(node_dir)
    except FileNotFoundError:
        names = []
    node_of: dict[int, int] = {}
    nodes = 0
    for name in names:
        number = name[4:]
        if not (name.startswith("node") and number.isascii() and number.isdigit()):
            continue
        text = _read_sysfs(f"{node_dir}/{name}/cpulist")
        if text is None:
            continue
        nodes += 1
        for cpu in _parse_cpulist(text):
            node_of[cpu] = int(number)
    cpus = []
    for cpu in online:
        topo = f"{sysfs_root}/devices/system/cpu/cpu{cpu}/topology"
        core = _read_sysfs(f"{topo}/core_id")
        socket = _read_sysfs(f"{topo}/physical_package_id")
        siblings = _parse_cpulist(_read_sysfs(f"{topo}/thread_siblings_list") or "")
        cpus.append(
            CpuInfo(
                id=cpu,
                core=cpu if core is None else int(core),
                socket=0 if socket is None else int(socket),
                numa=node_of.get(cpu, -1) if nodes else 0,
                first_sibling=min(siblings, default=cpu),
            )
        )
    return cpus


def _py_execvpe(file: bytes, argv: list[bytes], env: Mapping[str, str]) -> int:
    """execvpe against the task's PATH; returns the errno when nothing could be executed."""
    if not file:
        return errno.ENOENT
    if b"/" in file:
        candidates = [file]
    else:
        dirs = os.fsencode(env.get("PATH", DEFAULT_PATH)).split(b":")
        candidates = [d + b"/" + file if d else file for d in dirs]  # "" is the cwd
    seen_eacces = False
    last = errno.ENOENT
    for candidate in candidates:
        try:
            os.execve(candidate, argv, env)
        except OSError as exc:
            last = exc.errno or errno.EINVAL
            if last == errno.EACCES:
                seen_eacces = True
            elif last not in _SEARCH_GOES_ON:
                return last
    return errno.EACCES if seen_eacces else last


def _py_move_fd(fd: int, target: int) -> None:
    if fd == target:
        os.set_inheritable(fd, True)
    else:
        os.dup2(fd, target)
        os.close(fd)


def _py_child(spec: SpawnSpec, argv: list[bytes], parent: int, report: int) -> bytes:
    """The launch steps in the forked child; returns the packed (stage, errno) of a failure."""
    stage = SpawnStage.FORK
    try:
        for sig in _RESET_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        if spec.new_session:
            stage = SpawnStage.SESSION
            os.setsid()
        if spec.pdeathsig:
            stage = SpawnStage.PDEATHSIG
            ctypes, libc = _ctypes()
            if libc.prctl(_PR_SET_PDEATHSIG, int(spec.pdeathsig), 0, 0, 0) < 0:
                raise _os_error(ctypes.get_errno())
            if os.getppid() != parent:  # the parent died before prctl took effect
                raise _os_error(errno.ESRCH)
        if spec.cpus is not None:
            stage = SpawnStage.AFFINITY
            os.sched_setaffinity(0, spec.cpus)
        if spec.mem_node is not None:
            stage = SpawnStage.MEMPOLICY
            _py_set_memory_policy(spec.mem_mode, spec.mem_node)
        if spec.cwd is not None:
            stage = SpawnStage.CWD
            os.chdir(spec.cwd)
        stage = SpawnStage.STDIN
        if spec.stdin_path is not None:
            _py_move_fd(os.open(spec.stdin_path, os.O_RDONLY | os.O_CLOEXEC), 0)
        elif spec.stdin_fd == 0:
            os.set_inheritable(0, True)
        elif spec.stdin_fd is not None:
            os.dup2(spec.stdin_fd, 0)
        else:
            _py_move_fd(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), 0)
        out_flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        stage = SpawnStage.STDOUT
        _py_move_fd(os.open(spec.stdout_path or os.devnull, out_flags, 0o666), 1)
        stage = SpawnStage.STDERR
        _py_move_fd(os.open(spec.stderr_path or os.devnull, out_flags, 0o666), 2)
        os.closerange(3, report)
        os.closerange(report + 1, max(report + 2, os.sysconf("SC_OPEN_MAX")))
        stage = SpawnStage.EXEC
        err = _py_execvpe(argv[0], argv, spec.env)
    except OSError as exc:
        err = exc.errno or errno.EINVAL
    except Exception:  # os.execve refusing an argument, for instance
        err = errno.EINVAL
    except BaseException:  # KeyboardInterrupt before the handlers were reset
        err = errno.EINTR
    return struct.pack("ii", stage, err)


def _py_spawn(spec: SpawnSpec) -> int:
    argv = [os.fsencode(arg) for arg in spec.argv]
    if b"\0" in b"".join(argv):
        raise ValueError("embedded null byte in argv")
    if _pack_env(spec.env).count(b"\0") != len(spec.env):  # also checks the names
        raise ValueError("embedded null byte in env")
    if spec.pdeathsig or spec.mem_node is not None:
        _ctypes()  # importing in the child could deadlock on a lock another thread held
    parent = os.getpid()
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(r)
        os.close(w)
        raise SpawnError(SpawnStage.FORK, exc.errno or errno.EAGAIN, os.fsdecode(argv[0])) from None
    if pid == 0:
        try:
            os.close(r)
            if w < 3:  # stdio is about to be replaced
                w = fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, 3)
            os.write(w, _py_child(spec, argv, parent, w))
        finally:
            os._exit(127)
    os.close(w)
    with open(r, "rb", buffering=0) as pipe:
        report = pipe.read(8)  # EOF with no data: the exec succeeded
    if not report:
        return pid
    os.waitpid(pid, 0)
    stage, err = struct.unpack("ii", report)
    raise SpawnError(SpawnStage(stage), err, os.fsdecode(argv[0]))


# ---------------------------------------------------------------------------------------------
# Public API: bound once, so a call costs no dispatch.

if C_MODULE:
    get_affinity = _c_get_affinity
    set_affinity = _c_set_affinity
    set_memory_policy = _c_set_memory_policy
    get_memory_policy = _c_get_memory_policy
    read_topology = _c_read_topology
    spawn = _c_spawn
else:
    get_affinity = _py_get_affinity
    set_affinity = _py_set_affinity
    set_memory_policy = _py_set_memory_policy
    get_memory_policy = _py_get_memory_policy
    read_topology = _py_read_topology
    spawn = _py_spawn


class OwnCpus:
    """The CPUs this process (an executor) runs on, changed only through here: ``home`` is the
    affinity it started with, what unpinned work gets; ``cpus`` what was set since (None:
    home). An executor follows its tasks' CPUs so that a pinned program is born where it must
    run: a child that moves itself to a CPU that something else occupies first waits out that
    one's time slice (1-4 ms a task on a busy 2-core machine, against 0.3 ms without)."""

    def __init__(self) -> None:
        self.home = get_affinity()
        self.cpus: Sequence[int] | None = None
        self.cpu_set = frozenset(self.home)

    def move(self, cpus: Sequence[int] | None) -> None:
        """Onto ``cpus`` (None: home) unless there already; raises OSError, staying put."""
        if cpus != self.cpus:
            target = self.home if cpus is None else cpus
            set_affinity(target)
            self.cpus = cpus
            self.cpu_set = frozenset(target)

    def go_home(self) -> None:
        """Back home, whatever moved the process (a function task may have)."""
        set_affinity(self.home)
        self.cpus = None
        self.cpu_set = frozenset(self.home)
