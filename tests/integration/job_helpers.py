"""Small steps the job, task, output and scheduling tests share, on top of the harness.

Everything here reads what a user reads (`hq` tables and JSON), so a helper never reaches into
the server; the assertions stay in the tests.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from harness import HqEnv, Table

SUBMITTED = re.compile(r"Job submitted successfully, job ID: (\d+)")


def submit(env: HqEnv, args: Sequence[str], **kwargs: object) -> int:
    """`hq submit ARGS`; the new job's id, read from the success message."""
    output = env.command(["submit", *args], **kwargs)  # type: ignore[arg-type]
    match = SUBMITTED.search(output)
    assert match, f"no job id in:\n{output}"
    return int(match.group(1))


def vertical(table: Table) -> Table:
    """A key/value table with every row in ``rows``.

    ``Table.parse`` takes the row before the second `+-` line as the header, which for a
    vertical table (top and bottom border only) is its last row; put it back.
    """
    if table.header is None:
        return table
    return Table([*table.rows, table.header], None)


def job_info(env: HqEnv, job: int | str) -> Table:
    """The vertical table of `hq job info JOB` (the first table printed)."""
    return vertical(env.command(["job", "info", str(job)], as_table=True))


def split_tables(text: str) -> list[Table]:
    """Tables printed back to back, also with no line between them (spec/output.md §1.2).

    ``parse_tables`` only splits at non-table lines; here a border right after a border also
    starts a new table (the bottom of one and the top of the next).
    """
    chunks: list[list[str]] = [[]]
    previous = ""
    for line in text.splitlines():
        if not line.startswith(("+", "|")):
            if chunks[-1]:
                chunks.append([])
            previous = ""
            continue
        if line.startswith("+-") and previous.startswith("+-") and chunks[-1]:
            chunks.append([])
        chunks[-1].append(line)
        previous = line
    return [Table.parse("\n".join(c)) for c in chunks if c]


def job_info_tables(env: HqEnv, job: int | str) -> list[Table]:
    """The job's vertical table, then the failed-task table if there is one."""
    tables = split_tables(env.command(["job", "info", str(job)]))
    return [vertical(tables[0]), *tables[1:]]


def task_list(env: HqEnv, job: int | str, *args: str) -> Table:
    return env.command(["task", "list", str(job), *args], as_table=True)


def task_info(env: HqEnv, job: int | str, tasks: str) -> list[Table]:
    """One vertical table per task."""
    return [vertical(t) for t in split_tables(env.command(["task", "info", str(job), tasks]))]


def task_json(env: HqEnv, job: int) -> dict[int, dict]:
    """`hq task list JOB` in JSON, keyed by task id."""
    data = env.json(["task", "list", str(job)])
    return {t["id"]: t for t in data[str(job)]}


def task_workers(env: HqEnv, job: int) -> dict[int, str]:
    """Task id -> the `Worker` cell of `hq task list`."""
    table = task_list(env, job)
    return {int(row[0]): row[2] for row in table.rows}


def server_uid(env: HqEnv) -> str:
    return vertical(env.command(["server", "info"], as_table=True)).get("Server UID")


def worker_runtime_info(env: HqEnv, worker: int) -> str:
    table = vertical(env.command(["worker", "info", str(worker)], as_table=True))
    return table.get("Runtime Info")


def wait_for_file(env: HqEnv, path: Path, what: str | None = None) -> str:
    """Content of a file a task writes, once it exists and is non-empty."""
    return env.wait_until(
        lambda: path.exists() and path.read_text(), what or f"{path} to be written"
    )


