"""`%{NAME}` placeholders in task paths and their two-stage resolution (spec/jobs.md §5).

Stage 1 runs on the server at submit: what is known per job (job ID, submit dir, server UID) is
filled in and paths are made absolute where that is already possible, so `hq job info` shows
`<cwd>/job-1/%{TASK_ID}.stdout`. Stage 2 runs when a task instance starts and fills in the rest.
Unknown placeholders are never an error: they stay verbatim and the client only warns.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import ClassVar

from hqshm.cluster.frozen import frozen
from hqshm.errors import UserError

JOB_ID = "JOB_ID"
TASK_ID = "TASK_ID"
INSTANCE_ID = "INSTANCE_ID"
SUBMIT_DIR = "SUBMIT_DIR"
CWD = "CWD"
SERVER_UID = "SERVER_UID"
KNOWN = frozenset((JOB_ID, TASK_ID, INSTANCE_ID, SUBMIT_DIR, CWD, SERVER_UID))

# Like HQ's parser: everything between `%{` and the next `}` is the name.
_PLACEHOLDER = re.compile(r"%\{([^}]*)\}")


class CwdPlaceholderInCwd(UserError):
    """spec/jobs.md §4.2; the working directory cannot depend on itself."""

    template: ClassVar[str] = (
        "Working directory path cannot contain the working directory placeholder `%{{CWD}}`."
    )


# Where a task's output goes unless told otherwise (spec/cli.md §5.2), for every way to submit.
DEFAULT_STDOUT = "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stdout"
DEFAULT_STDERR = "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stderr"


@frozen
class SubmitPaths:
    """Paths after stage 1; `None` stdout/stderr means no file, `None` stream no streaming."""

    cwd: str
    stdout: str | None
    stderr: str | None
    stream: str | None = None


@frozen
class TaskPaths:
    """Fully resolved paths of one task instance."""

    cwd: str
    stdout: str | None
    stderr: str | None


def fill(template: str, values: Mapping[str, str]) -> str:
    """Substitute the placeholders named in `values`; every other `%{...}` stays verbatim."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def unknown_placeholders(template: str) -> list[str]:
    """Names outside the known set, in order of first appearance, each once."""
    return list(dict.fromkeys(n for n in _PLACEHOLDER.findall(template) if n not in KNOWN))


def has_placeholder(template: str, name: str) -> bool:
    return f"%{{{name}}}" in template


def check_cwd(cwd: str) -> None:
    """Refuse `%{CWD}` in a working directory (the client does this before submitting)."""
    if has_placeholder(cwd, CWD):
        raise CwdPlaceholderInCwd()


def resolve_at_submit(
    cwd: str,
    stdout: str | None,
    stderr: str | None,
    stream: str | None,
    *,
    job_id: int,
    submit_dir: str,
    server_uid: str,
) -> SubmitPaths:
    """Stage 1. The cwd is made absolute even while it still holds `%{TASK_ID}` or
    `%{INSTANCE_ID}`, and `%{CWD}` is filled with it: those expand to plain names, never to an
    absolute path, so the final result is the same as stage 2 would give, and `job info` shows
    `/tmp/%{TASK_ID}/job-1/%{TASK_ID}.stdout` for `--cwd /tmp/%{TASK_ID}` as HQ's tests expect.
    """
    values = {JOB_ID: str(job_id), SUBMIT_DIR: submit_dir, SERVER_UID: server_uid}
    resolved_cwd = _absolute(fill(cwd, values), submit_dir)
    stdio_values = {**values, CWD: resolved_cwd}
    return SubmitPaths(
        cwd=resolved_cwd,
        stdout=_resolve_stdio(stdout, stdio_values, resolved_cwd),
        stderr=_resolve_stdio(stderr, stdio_values, resolved_cwd),
        stream=None if stream is None else _absolute(fill(stream, values), submit_dir),
    )


def resolve_at_start(
    paths: SubmitPaths,
    *,
    task_id: int,
    instance_id: int,
    job_id: int,
    submit_dir: str,
    server_uid: str,
) -> TaskPaths:
    """Stage 2: every known placeholder; cwd against the submit dir, stdio against the cwd."""
    values = {
        JOB_ID: str(job_id),
        TASK_ID: str(task_id),
        INSTANCE_ID: str(instance_id),
        SUBMIT_DIR: submit_dir,
        SERVER_UID: server_uid,
    }
    cwd = _absolute(fill(paths.cwd, values), submit_dir)
    stdio_values = {**values, CWD: cwd}
    return TaskPaths(
        cwd=cwd,
        stdout=_resolve_stdio(paths.stdout, stdio_values, cwd),
        stderr=_resolve_stdio(paths.stderr, stdio_values, cwd),
    )


def _resolve_stdio(path: str | None, values: Mapping[str, str], cwd: str) -> str | None:
    return None if path is None else _absolute(fill(path, values), cwd)


def _absolute(path: str, base: str) -> str:
    """An absolute path stays exactly as given; a relative one is joined and normalised."""
    if posixpath.isabs(path):
        return path
    return posixpath.normpath(posixpath.join(base, path))


# -- client-side warnings (spec/cli.md §5.3) ------------------------------------------------


def unknown_placeholder_warning(template: str, context: str) -> str | None:
    """`context` is `stdout path`, `stderr path`, `log path` or `working directory path`."""
    names = unknown_placeholders(template)
    if not names:
        return None
    noun = "placeholder" if len(names) == 1 else "placeholders"
    return f"Found unknown {noun} `{', '.join(names)}` in {context}"


def missing_task_id_warning(path: str | None, channel: str, cwd: str) -> str | None:
    """For array jobs: a stdout/stderr path shared by every task. `channel` is `stdout` or
    `stderr`. A path under `%{CWD}` is fine when the cwd itself varies by task."""
    if path is None or has_placeholder(path, TASK_ID):
        return None
    if has_placeholder(path, CWD) and has_placeholder(cwd, TASK_ID):
        return None
    return (
        f"You have submitted an array job, but the `{channel}` path does not contain the task ID"
        " placeholder.\nIndividual tasks might thus overwrite the file. Consider adding"
        f" `%{{TASK_ID}}` to the `--{channel}` value."
    )
