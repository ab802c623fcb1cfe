"""The rows of HQ's vertical tables and its JSON objects, for jobs, tasks and workers.

Several commands show the same record (a worker in `worker info` and after `worker start`, a
task in `task info` and `job info`'s JSON), so each layout is written down once, here; which
mode prints what is hqshm/cli/render.py's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hqshm.cli import formats, tables
from hqshm.model.arrays import compress_ids
from hqshm.model.durations import format_humantime, format_short_duration

if TYPE_CHECKING:  # each command imports the views it shows: start-up time
    from hqshm.link.details import (
        JobDetail,
        SubmitView,
        TaskExplainResponse,
        TaskView,
        WorkerView,
    )
    from hqshm.link.responses import JobSummary
    from hqshm.model.selection import Ranges
    from hqshm.model.submission import TaskTemplate

LAUNCHER_FALLBACK = "Python fallback, tasks start about 3x slower"


def resources_view():  # noqa: ANN202 - the resourceview module
    """Imported on first use: job and task lists never show resources (start-up time)."""
    from hqshm.cli import resourceview

    return resourceview

STATE_ORDER_INFO = ("RUNNING", "FAILED", "FINISHED", "CANCELED", "WAITING", "ABORTED")
COUNT_INDEX = {"WAITING": 0, "RUNNING": 1, "FINISHED": 2, "FAILED": 3, "CANCELED": 4,
               "ABORTED": 5}


def ranges_text(ranges: Ranges) -> str:
    parts = []
    for start, end, step in ranges:
        if start == end:
            parts.append(str(start))
        elif step == 1:
            parts.append(f"{start}-{end}")
        else:
            parts.append(compress_ids(range(start, end + 1, step)))
    return ",".join(parts)


def crash_limit_text(limit: int) -> str:
    if limit == 0:
        return "unlimited"
    if limit < 0:
        return "never-restart"
    return str(limit)


def job_state_word(summary: JobSummary) -> str:
    from hqshm.model.taskstates import job_state

    return job_state(summary.counts, summary.is_open)


def worker_rows(w: WorkerView, state_text: str) -> list[tuple[str, str]]:
    c = w.config
    if w.last_task is not None:
        job_id, task_id, at = w.last_task
        last = f"{job_id}@{task_id}; Time: {formats.format_json_quoted_timestamp(at)}"
    else:
        last = ""
    rows = [
        ("Worker", str(w.id)),
        ("State", state_text),
        ("Hostname", c.hostname),
        ("Started", formats.format_json_quoted_timestamp(w.started_at)),
        ("Data provider", c.listen_address),
        ("Working directory", c.work_dir),
        ("Heartbeat", format_humantime(c.heartbeat)),
        ("Idle timeout", format_humantime(c.idle_timeout) if c.idle_timeout else "None"),
        ("Overview interval",
         format_humantime(c.overview_interval) if c.overview_interval else "None"),
        ("Resources", resources_view().descriptor_summary(c.resources, multiline=True)),
        ("Time Limit", format_humantime(c.time_limit) if c.time_limit else "None"),
        ("Process pid", str(c.pid) if c.pid else "N/A"),
        ("Group", c.group),
        ("Manager", c.manager),
        ("Manager Job ID", c.manager_job_id or "N/A"),
        ("Last task started", last),
    ]
    if c.launcher_fallback:  # not in HQ: a node without the compiled launcher is slow
        rows.append(("Task launcher", f"{LAUNCHER_FALLBACK}: {c.launcher_fallback}"))
    if w.ended_at is None:
        if w.multinode:
            info = f"running multinode task; {w.multinode} node"
        else:
            info = f"assigned tasks: {w.assigned_tasks}"
            if w.running_tasks:
                info += f"; running tasks: {w.running_tasks}"
        rows.append(("Runtime Info", info))
    return rows


def worker_json(w: WorkerView) -> dict[str, Any]:
    c = w.config
    return {
        "id": w.id,
        "configuration": {
            "heartbeat_interval": c.heartbeat,
            "idle_timeout": c.idle_timeout,
            "time_limit": c.time_limit,
            "work_dir": c.work_dir,
            "hostname": c.hostname,
            "group": c.group,
            "listen_address": c.listen_address,
            "resources": resources_view().descriptor_json(c.resources),
            "on_server_lost": c.on_server_lost,
            "min_utilization": c.min_utilization,
        },
        "allocation": None if c.manager == "None" else {
            "manager": "PBS" if c.manager == "PBS" else "Slurm", "id": c.manager_job_id},
        "runtime_info": None if w.ended_at is not None else (
            {"MultiNodeTask": {"main_node": w.multinode == "main"}} if w.multinode else
            {"SingleNodeTasks": {"assigned_tasks": w.assigned_tasks,
                                 "running_tasks": w.running_tasks, "is_reserved": False}}),
        "last_task_started": None if w.last_task is None else {
            "task_id": {"job_id": w.last_task[0], "job_task_id": w.last_task[1]},
            "time": formats.format_rfc3339(w.last_task[2])},
        "started": formats.format_rfc3339(w.started_at),
        "ended": None if w.ended_at is None else {"at": formats.format_rfc3339(w.ended_at)},
    }


def job_summary_json(j: JobSummary) -> dict[str, Any]:
    waiting, running, finished, failed, canceled, aborted = j.counts
    return {
        "id": j.id,
        "name": j.name,
        "task_count": j.task_count,
        "is_open": j.is_open,
        "cancel_reason": j.cancel_reason,
        "task_stats": {"waiting": waiting, "running": running, "finished": finished,
                       "failed": failed, "canceled": canceled, "aborted": aborted},
    }


def state_cell(summary: JobSummary, color: bool) -> str:
    if summary.task_count == 1:
        word = job_state_word(summary)
        return tables.colorize_state(word) if color else word
    named = {"waiting": summary.counts[0], "running": summary.counts[1],
             "finished": summary.counts[2], "failed": summary.counts[3],
             "canceled": summary.counts[4], "aborted": summary.counts[5]}
    lines = [formats.format_progress_bar(named, summary.task_count, color=color)]
    for word in STATE_ORDER_INFO:
        n = summary.counts[COUNT_INDEX[word]]
        if n:
            lines.append(f"{tables.colorize_state(word) if color else word} ({n})")
    return "\n".join(lines)


def command_text(args: Sequence[str]) -> str:
    """Arguments one per line, each wrapped at 80 columns."""
    lines = []
    for arg in args:
        lines.extend(arg[i:i + 80] for i in range(0, max(len(arg), 1), 80))
    return "\n".join(lines)


def template_command(template: TaskTemplate) -> str:
    """A program's arguments; a function task's callable (its arguments only start Python)."""
    if template.function:
        return f"{template.function} (Python function)"
    return command_text(template.args)


def env_text(env: dict[str, str]) -> str:
    return "\n".join(f"{k}={v}" for k, v in sorted(env.items()) if not k.startswith("HQ_"))


def job_rows(job: JobDetail, now: float, color: bool) -> list[tuple[str, str]]:
    s = job.summary
    tasks = str(s.task_count)
    ids = ranges_text(job.task_ids)
    if s.task_count != 1 or ids != "0":
        tasks = f"{s.task_count}; Ids: {ids}" if ids else tasks
    workers = ",".join(job.workers)  # HQ's exact form: `worker3,worker4`
    if job.n_workers > 2:
        workers += f", … ({job.n_workers} total)"
    rows = [
        ("ID", str(s.id)),
        ("Name", s.name),
        ("State", state_cell(s, color)),
        ("Cancel Reason", s.cancel_reason or ""),
        ("Session", "open" if s.is_open else "closed"),
        ("Tasks", tasks),
        ("Workers", workers),
    ]
    if len(job.submits) == 1 and job.submits[0].is_array:
        sub = job.submits[0]
        t = sub.template
        rows += [
            ("Resources", resources_view().request_lines(t.request)),
            ("Pin", t.pin),
            ("Priority", str(t.priority)),
            ("Command", template_command(t)),
            ("Stdout", formats.format_stdio(sub.stdout, sub.stdout == "<Stream>")),
            ("Stderr", formats.format_stdio(sub.stderr, sub.stderr == "<Stream>")),
            ("Environment", env_text(t.env)),
            ("Working directory", sub.cwd),
            ("Task time limit", format_humantime(t.time_limit) if t.time_limit else "None"),
            ("Crash limit", crash_limit_text(t.crash_limit)),
        ]
    rows.append(("Submission date", formats.format_utc_date(job.submitted_at)))
    if job.batches == 1 and job.submits:
        rows.append(("Submission directory", job.submit_dir))
    end = job.finished_at if job.finished_at is not None else now
    rows.append(("Makespan", format_short_duration(max(0.0, end - job.submitted_at))))
    return rows


def task_makespan(t: TaskView, now: float) -> str:
    if t.started_at is None:
        return ""
    end = t.ended_at if t.ended_at is not None else now
    return format_short_duration(max(0.0, end - t.started_at))


def _stdio_cell(kind: str, path: str | None) -> str:
    if kind == "stream":
        return "<Stream>"
    if kind == "none":
        return "<None>"
    return path or ""


def task_rows(t: TaskView, template: TaskTemplate, error: str, now: float,
              state_text: str) -> list[tuple[str, str]]:
    started = t.started_at is not None or bool(t.worker_ids)
    return [
        ("Task ID", str(t.id)),
        ("State", state_text),
        ("Command", template_command(template)),
        ("Environment", env_text(template.env)),
        ("Worker", "\n".join(t.hostnames)),
        ("Start", formats.format_local_datetime(t.started_at) if t.started_at else ""),
        ("End", formats.format_local_datetime(t.ended_at) if t.ended_at else ""),
        ("Makespan", task_makespan(t, now)),
        ("Workdir", t.cwd or "" if started else ""),
        ("Stdout", _stdio_cell(t.stdout_kind, t.stdout) if started else ""),
        ("Stderr", _stdio_cell(t.stderr_kind, t.stderr) if started else ""),
        ("Time limit", format_humantime(template.time_limit) if template.time_limit else "None"),
        ("Resources", resources_view().request_lines(template.request)),
        ("Priority", str(template.priority)),
        ("Pin", template.pin),
        ("Task dir", "yes" if template.task_dir else "no"),
        ("Crash limit", crash_limit_text(template.crash_limit)),
        ("Dependencies", ",".join(str(d) for d in t.deps)),
        ("Error", error),
        # Not in HQ: how many times the task started again (worker loss, --retries).
        ("Instance", str(t.instance)),
    ]


def _stdio_json(kind: str, path: str | None) -> str | None:
    if kind == "stream":
        return "<pipe>"
    if kind == "none":
        return None
    return path


def task_json(t: TaskView) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": t.id, "state": t.state.lower()}
    if t.cwd is not None:
        obj["cwd"] = t.cwd
        obj["stdout"] = _stdio_json(t.stdout_kind, t.stdout)
        obj["stderr"] = _stdio_json(t.stderr_kind, t.stderr)
    if t.started_at is not None:
        obj["started_at"] = formats.format_rfc3339(t.started_at)
    if t.worker_ids:
        if len(t.worker_ids) == 1:
            obj["worker"] = t.worker_ids[0]
        else:
            obj["workers"] = list(t.worker_ids)
    if t.ended_at is not None and t.state in ("FINISHED", "FAILED"):
        obj["finished_at"] = formats.format_rfc3339(t.ended_at)
    if t.state == "FAILED":
        obj["error"] = t.error
    return obj


def template_json(sub: SubmitView) -> dict[str, Any]:
    t = sub.template
    return {
        "program": {
            "args": list(t.args), "env": dict(t.env), "cwd": sub.cwd,
            "stdout": _stdio_json(t.stdout.kind, sub.stdout),
            "stderr": _stdio_json(t.stderr.kind, sub.stderr),
            **({"function": t.function} if t.function else {}),
        },
        "resources": resources_view().request_json(t.request),
        "pin_mode": {"none": None, "taskset": "taskset", "omp": "openmp"}.get(t.pin),
        "priority": t.priority,
        "time_limit": t.time_limit,
        "task_dir": t.task_dir,
        "crash_limit": crash_limit_text(t.crash_limit) if t.crash_limit <= 0
        else t.crash_limit,
    }


def _submits_json(submits: Sequence[SubmitView]) -> list[dict[str, Any]]:
    """Array submits as `{"array": ...}`; job-file tasks of one request as one `{"graph"}`."""
    out: list[dict[str, Any]] = []
    for submit in submits:
        if submit.is_array:
            out.append({"array": template_json(submit)})
        elif out and "graph" in out[-1]:
            out[-1]["graph"].append(template_json(submit))
        else:
            out.append({"graph": [template_json(submit)]})
    return out


def job_detail_json(job: JobDetail) -> dict[str, Any]:
    return {
        "info": job_summary_json(job.summary),
        "max_fails": job.max_fails,
        "started_at": formats.format_rfc3339(job.submitted_at),
        "finished_at": None if job.finished_at is None
        else formats.format_rfc3339(job.finished_at),
        "submits": _submits_json(job.submits),
        "tasks": [task_json(t) for t in job.tasks],
    }


def _duration_json(seconds: float) -> dict[str, int]:
    whole = int(seconds)
    return {"secs": whole, "nanos": int(round((seconds - whole) * 1e9))}


def explain_json(e: TaskExplainResponse) -> dict[str, Any]:
    workers = []
    for w in e.workers:
        variants = []
        for variant in w.variants:
            items: list[dict[str, Any]] = []
            for kind, name, worker_amount, request in variant.items:
                if kind == "Time":
                    items.append({"Time": {
                        "min_time": _duration_json(request / 1e3),
                        "remaining_time": None if worker_amount < 0
                        else _duration_json(worker_amount / 1e3)}})
                elif kind == "WorkerGroup":
                    items.append({"WorkerGroup": {"n_nodes": request,
                                                  "group_size": worker_amount}})
                else:
                    items.append({"Resources": {"resource": name, "request_amount": request,
                                                "worker_amount": worker_amount}})
            variants.append(items)
        workers.append({"worker_id": w.worker_id, "variants": variants})
    return {"task_id": {"job_id": e.job_id, "job_task_id": e.task_id},
            "explanation": {"n_task_deps": e.n_deps, "n_waiting_deps": e.n_waiting_deps,
                            "workers": workers}}
