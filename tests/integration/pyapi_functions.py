"""Functions that the Python API's tests run as function tasks.

Tasks import this module by name (the tests put its folder on the task's PYTHONPATH), as a
script's tasks import the modules it defines its functions in: cloudpickle sends them by
reference, so tracebacks show their source lines. A module-level counter shows whether tasks
share an interpreter (the warm path).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

# The environment that lets a task import this module (by reference, like a script's own).
FUNCTIONS_PATH = {"PYTHONPATH": str(Path(__file__).parent)}


def greet(name: str, *, punctuation: str = "!") -> None:
    print(f"Hello {name}{punctuation}")


def fail() -> None:
    raise Exception("MyException")


def write_env(variable: str, path: str) -> None:
    with open(path, "w") as f:
        f.write(os.environ.get(variable, "<unset>"))


def foo_bar_baz() -> None:
    raise ValueError("broken")


# -- the warm path (test_warm_functions.py) --------------------------------------------------

CALLS = 0  # a module-level counter: it persists from task to task in a warm executor
INITS = 0


def count_call(path: str) -> None:
    """Writes this interpreter's pid, its parent's and how many calls it made."""
    global CALLS
    CALLS += 1
    with open(path, "w") as f:
        json.dump({"pid": os.getpid(), "ppid": os.getppid(), "calls": CALLS}, f)


def observe(path: str) -> None:
    """Writes what a task observes of its interpreter and process, prints to both outputs."""
    import logging

    print("to stdout")
    print("to stderr", file=sys.stderr)
    logging.warning("a warning")
    logging.info("some info")
    seen = {
        "cwd": os.getcwd(), "argv": sys.argv, "path0": sys.path[0], "stdin": sys.stdin.read(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("HQ_", "OWN_", "LEAK"))},
        "own_group": os.getpgid(0) == os.getpid(), "cpus": sorted(os.sched_getaffinity(0)),
        "pid": os.getpid(), "sigint": str(signal.getsignal(signal.SIGINT)),
    }
    with open(path, "w") as f:
        json.dump(seen, f)


def litter() -> None:
    """Changes what the executor must put back."""
    import logging

    os.environ["LEAK"] = "yes"
    os.environ["HQ_TASK_ID"] = "999"
    os.chdir("/")
    sys.path.insert(0, "/leak")
    sys.argv.append("leak")
    logging.getLogger().addHandler(logging.StreamHandler(sys.stdout))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.stdout.close()
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - left open on purpose
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def use_task_dir(path: str, litter: bool = False) -> None:
    """Writes what the task finds in its task directory; ``litter`` leaves a file there and
    the custom error file (read only if the task fails, which it does not)."""
    task_dir = os.environ["HQ_TASK_DIR"]
    seen = {"dir": task_dir, "is_dir": os.path.isdir(task_dir),
            "mode": os.stat(task_dir).st_mode & 0o7777, "content": sorted(os.listdir(task_dir)),
            "error_file": os.environ["HQ_ERROR_FILENAME"], "pid": os.getpid()}
    with open(path, "w") as f:
        json.dump(seen, f)
    if litter:
        Path(task_dir, "left").write_text("left behind")
        Path(os.environ["HQ_ERROR_FILENAME"]).write_text("an error of the task before")
        os.chmod(task_dir, 0o755)


def exit_now(code: int) -> None:
    os._exit(code)


def crash() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def exit_with(code: object) -> None:
    sys.exit(code)


def sleep_in_group(marker: str, child_pid_file: str, ignore_interrupt: bool = False) -> None:
    """Starts a child in the task's process group, says so, sleeps; ``finally`` notes an
    interrupt (or ignores it, so that only SIGKILL ends the task)."""
    import subprocess

    child = subprocess.Popen(["sleep", "300"])
    with open(child_pid_file, "w") as f:
        f.write(str(child.pid))
    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    try:
        time.sleep(300)
    except KeyboardInterrupt:
        with open(marker + ".interrupted", "w") as f:
            f.write("yes")
        if not ignore_interrupt:
            raise
        time.sleep(300)


def init_job() -> dict[str, int]:
    global INITS
    INITS += 1
    return {"inits": INITS, "pid": os.getpid()}


def read_state(path: str) -> None:
    from hqshm.api import worker_state

    with open(path, "w") as f:
        json.dump(worker_state(), f)


def gpu_view(path: str) -> None:
    """What a task given a GPU sees: its variables and, where torch is installed, CUDA itself."""
    view: dict[str, object] = {
        "pid": os.getpid(),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "HQ_RESOURCE_VALUES_gpus_nvidia": os.environ.get(
            "HQ_RESOURCE_VALUES_gpus_nvidia"  # noqa: SIM112 - HQ names it so
        ),
    }
    try:
        import torch
    except ImportError:
        pass
    else:
        view["devices"] = torch.cuda.device_count()
        view["sum"] = float(torch.ones(1000, device="cuda").sum().item())
    with open(path, "w") as f:
        json.dump(view, f)
