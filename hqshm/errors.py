"""User-facing errors of hqshm, with their texts.

Only the CLI entry point turns an error into a message and an exit code; a traceback is always
a bug. Texts follow HQ exactly where scripts may match them (the spec section is named on each).
"""

from __future__ import annotations

from typing import Any, ClassVar


class HqError(Exception):
    """Root of every hqshm error."""


class UserError(HqError):
    """An error the user can fix; printed as one line (or a few), exit code 1.

    Subclasses set ``template`` and are built with the template's fields as keyword arguments,
    so callers pass data and the text lives here.
    """

    template: ClassVar[str] = "{message}"
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str | None = None, **fields: Any) -> None:
        if message is not None:
            fields.setdefault("message", message)
        self.fields = fields
        super().__init__(self.template.format(**fields))

    @property
    def message(self) -> str:
        return str(self)


class UsageError(UserError):
    """A command-line parse error (clap's class of errors): exit code 2."""

    exit_code: ClassVar[int] = 2


# --- task error texts (spec/jobs.md §7 and §16) ------------------------------------------------

_SIGNAL_NAMES = {
    1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT",
    7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2",
    13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM", 17: "SIGCHLD", 18: "SIGCONT", 19: "SIGSTOP",
}

TIME_LIMIT_REACHED = "Time limit reached"
ERROR_FILE_EMPTY = "Task created an error file, but it is empty"
ERROR_FILE_TRUNCATED = "\n[The message was truncated]"
PIN_WITHOUT_CPUS = "Pinning failed, no CPU ids allocated for task"


def exit_code_error(code: int) -> str:
    return f"Program terminated with exit code {code}."


def signal_error(signum: int) -> str:
    name = _SIGNAL_NAMES.get(signum, "unknown")
    return f"Program terminated with exit code -1. Received signal {signum} ({name})."


def os_error_text(errno_value: int) -> str:
    """Rust's rendering of an OS error, which HQ's messages embed."""
    import os

    return f"{os.strerror(errno_value)} (os error {errno_value})"


def spawn_error(args: list[str], errno_value: int, cwd: str) -> str:
    """``Cannot execute "<cmd>": <os error>`` plus HQ's hints for the common mistakes."""
    import errno as errno_mod
    import os

    text = f'Cannot execute "{" ".join(args)}": {os_error_text(errno_value)}'
    program = args[0] if args else ""
    if errno_value == errno_mod.ENOENT:
        text += f"\nThe program that you have tried to execute (`{program}`) was not found."
        if "/" not in program and os.path.isfile(os.path.join(cwd, program)):
            text += (f"\nThe file `{os.path.join(cwd, program)}` exists, maybe you have meant "
                     f"`./{program}` instead?")
    elif errno_value == errno_mod.EACCES and program.endswith(".sh"):
        text += (f"\nThe script that you have tried to execute (`{program}`) is not executable."
                 "\nTry making it executable or add a shebang line to it.")
    return text
