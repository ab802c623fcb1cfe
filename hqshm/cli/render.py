"""What each command prints, in the three output modes (spec/output.md).

``cli`` draws HQ's tables, ``json`` prints exactly one JSON value (keys sorted, 2-space indent),
``quiet`` prints the minimal lines scripts read. Commands hand over response records; this module
owns every layout, so a table's rows are written down once.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from hqshm.cli import formats, tables
from hqshm.link.responses import (
    JobDetail,
    JobSummary,
    ServerInfo,
    SubmitView,
    TaskExplainResponse,
    TaskView,
    WorkerView,
)
from hqshm.model.arrays import compress_ids
from hqshm.model.durations import format_humantime, format_short_duration
from hqshm.model.submission import Ranges, TaskTemplate

logger = logging.getLogger("hqshm.cli")


def _resources():  # noqa: ANN202 - the resourcespec module
    """Imported on first use: job and task lists never show resources (start-up time)."""
    from hqshm.model import resourcespec

    return resourcespec

STATE_ORDER_INFO = ("RUNNING", "FAILED", "FINISHED", "CANCELED", "WAITING", "ABORTED")
COUNT_INDEX = {"WAITING": 0, "RUNNING": 1, "FINISHED": 2, "FAILED": 3, "CANCELED": 4,
               "ABORTED": 5}
LIST_ERROR_LIMIT = 16
INFO_ERROR_LIMIT = 237


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


class Output:
    def __init__(self, mode: str, color: bool, out: TextIO | None = None) -> None:
        self.mode = mode
        self.color = color
        self.out = out or sys.stdout

    # --- primitives -----------------------------------------------------------------------

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def json(self, value: Any) -> None:
        self.line(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))

    def horizontal(self, header: Sequence[str], rows: Sequence[Sequence[str]],
                   right: Sequence[int] = ()) -> None:
        self.line(tables.render_horizontal(header, rows, right_align=right, color=self.color))

    def vertical(self, rows: Sequence[tuple[str, str]]) -> None:
        self.line(tables.render_vertical(rows, color=self.color))

    def state(self, word: str, kind: str = "job") -> str:
        return tables.colorize_state(word, kind) if self.color else word  # type: ignore[arg-type]

    def error(self, message: str) -> None:
        if self.mode == "json":
            self.json({"error": message})
        else:
            text = tables.paint(message, "red") if self.color else message
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def empty(self) -> None:
        """Commands with nothing to say print `{}` in JSON mode and nothing otherwise."""
        if self.mode == "json":
            self.json({})

    # --- server ---------------------------------------------------------------------------

    def server_info(self, info: ServerInfo, server_dir: str | None = None) -> None:
        if self.mode == "json":
            self.json({
                "client_host": info.client_host, "client_port": info.client_port,
                "journal_path": info.journal_path, "pid": info.pid,
                "server_dir": server_dir, "server_uid": info.server_uid,
                "start_date": formats.format_rfc3339(info.start_date),
                "version": info.version, "worker_host": info.worker_host,
                "worker_port": info.worker_port,
            })
            return
        if self.mode == "quiet":
            if server_dir is not None:
                self.line(server_dir)
            return
        rows = [] if server_dir is None else [("Server directory", server_dir)]
        rows += [
            ("Server UID", info.server_uid),
            ("Client host", info.client_host),
            ("Client port", str(info.client_port)),
            ("Worker host", info.worker_host),
            ("Worker port", str(info.worker_port)),
            ("Version", info.version),
            ("Pid", str(info.pid)),
            ("Start date", formats.format_utc_date(info.start_date)),
            ("Journal path", info.journal_path or ""),
        ]
        self.vertical(rows)

    # --- workers --------------------------------------------------------------------------

    def worker_list(self, workers: Sequence[WorkerView]) -> None:
        if self.mode == "json":
            self.json([worker_json(w) for w in workers])
            return
        if self.mode == "quiet":
            for w in workers:
                self.line(f"{w.id} {w.state}")
            return
        rows = [
            [str(w.id), self.state(w.state, "worker"), w.config.hostname,
             _resources().descriptor_summary(w.config.resources, multiline=False),
             w.config.manager, w.config.manager_job_id or "N/A"]
            for w in workers
        ]
        self.horizontal(["ID", "State", "Hostname", "Resources", "Manager", "Manager Job ID"],
                        rows, right=(0,))

    def worker_info(self, workers: Sequence[WorkerView]) -> None:
        if self.mode == "json":
            self.json([worker_json(w) for w in workers])
            return
        if self.mode == "quiet":
            return
        for i, w in enumerate(workers):
            if i:
                self.line()
            self.vertical(worker_rows(w, self.state(w.state, "worker")))

    # --- jobs -----------------------------------------------------------------------------

    def submitted(self, job_id: int) -> None:
        if self.mode == "json":
            self.json({"id": job_id})
        elif self.mode == "quiet":
            self.line(str(job_id))
        else:
            ok = tables.paint("successfully", "green") if self.color else "successfully"
            self.line(f"Job submitted {ok}, job ID: {job_id}")

    def opened(self, job_id: int) -> None:
        if self.mode == "json":
            self.json({"id": job_id})
        elif self.mode == "quiet":
            self.line(str(job_id))
        else:
            self.line(f"Job {job_id} is open.")

    def job_summary(self, counts: dict[str, int]) -> None:
        order = ("RUNNING", "WAITING", "FINISHED", "FAILED", "ABORTED", "CANCELED")
        if self.mode == "json":
            self.json({state.capitalize(): n for state, n in counts.items()})
        elif self.mode == "quiet":
            for state in order:
                self.line(f"{state} {counts.get(state, 0)}")
        else:
            self.horizontal(["Status", "Count"],
                            [[self.state(s), str(counts.get(s, 0))] for s in order], right=(1,))

    def task_ids(self, jobs: Sequence[tuple[int, Ranges]]) -> None:
        if self.mode == "json":
            self.json({str(job_id): [i for s, e, st in ranges for i in range(s, e + 1, st)]
                       for job_id, ranges in jobs})
        elif self.mode == "cli" or self.mode == "quiet":
            if len(jobs) == 1:
                self.line(ranges_text(jobs[0][1]))
            else:
                for job_id, ranges in jobs:
                    self.line(f"{job_id}: {ranges_text(ranges)}")

    def explain(self, e: TaskExplainResponse) -> None:
        if self.mode == "json":
            self.json(explain_json(e))
            return
        if self.mode == "quiet":
            return
        task = f"{e.job_id}@{e.task_id}"
        if e.n_deps == 0:
            self.line(f"Task {task} is ready to run because it has no dependencies.")
        elif e.n_waiting_deps:
            self.line(f"Task {task} is not ready to run, because {e.n_waiting_deps}/{e.n_deps} "
                      "dependencies are not finished.")
        else:
            self.line(f"Task {task} is ready to run because its all {e.n_deps} dependencies "
                      "are finished.")
        able = [w.worker_id for w in e.workers if any(v.runnable for v in w.variants)]
        if not able:
            self.line("There is no worker where the task can run.")
        else:
            noun = "worker" if len(able) == 1 else "workers"
            self.line(f"The task can run on {len(able)} {noun}: {compress_ids(able)}")
        if not e.workers:
            return
        rows = []
        for w in e.workers:
            enabled = sum(v.runnable for v in w.variants)
            if not enabled:
                runnable = "No"
            elif len(w.variants) == 1:
                runnable = "Yes"
            else:
                runnable = f"Yes ({enabled}/{len(w.variants)})"
            for index, variant in enumerate(w.variants):
                types, provides, requests = [], [], []
                for kind, name, worker_amount, request in variant.items:
                    if kind == "Time":
                        types.append("time")
                        provides.append("unknown" if worker_amount < 0
                                        else format_short_duration(worker_amount / 1e3))
                        requests.append(format_humantime(request / 1e3))
                    elif kind == "WorkerGroup":
                        types.append("nodes")
                        provides.append(f"group size {worker_amount}")
                        requests.append(str(request))
                    else:
                        types.append(name)
                        provides.append(formats.format_amount(worker_amount))
                        requests.append("all" if request == 0 else formats.format_amount(request))
                first = index == 0
                rows.append([str(w.worker_id) if first else "", runnable if first else "",
                             str(index), "\n".join(types), "\n".join(provides),
                             "\n".join(requests)])
        self.horizontal(["Worker Id", "Runnable", "Variant", "Type", "Provides", "Request"],
                        rows)

    def job_list(self, jobs: Sequence[JobSummary], total: int, verbose: bool) -> None:
        if self.mode == "json":
            self.json([job_summary_json(j) for j in jobs])
            return
        if self.mode == "quiet":
            for j in jobs:
                self.line(f"{j.id} {job_state_word(j)}")
            return
        header = ["ID", "Name", "State", "Tasks"] + (["Cancel Reason"] if verbose else [])
        rows = []
        for j in jobs:
            row = [f"*{j.id}" if j.is_open else str(j.id), formats.shorten_job_name(j.name),
                   self.state(job_state_word(j)), str(j.task_count)]
            if verbose:
                row.append(j.cancel_reason or "")
            rows.append(row)
        self.horizontal(header, rows, right=(0,))
        if any(j.is_open for j in jobs):
            self.line("* = Open jobs")
        hidden = total - len(jobs)
        if hidden > 0:
            if total == 1:
                self.line("There is 1 job in total. Use `--all` to display all jobs.")
            else:
                self.line(f"There are {total} jobs in total. Use `--all` to display all jobs.")

    def job_info(self, jobs: Sequence[JobDetail], now: float) -> None:
        if self.mode == "json":
            self.json([job_detail_json(j) for j in jobs])
            return
        if self.mode == "quiet":
            return
        for i, job in enumerate(jobs):
            if i:
                self.line()
            self.vertical(job_rows(job, now, self.color))
            if job.failed:
                rows = [[str(t.id), ",".join(t.hostnames), t.error] for t in job.failed]
                self.horizontal(["Task ID", "Worker", "Error"], rows)
                if job.n_failed > len(job.failed):
                    self.line(f"{job.n_failed} tasks failed. ({len(job.failed)} shown)")
                else:
                    self.line(f"{job.n_failed} tasks failed.")

    # --- tasks ----------------------------------------------------------------------------

    def task_list(self, jobs: Sequence[tuple[int, Sequence[TaskView]]], verbose: bool,
                  now: float) -> None:
        if self.mode == "json":
            self.json({str(job_id): [task_json(t) for t in views] for job_id, views in jobs})
            return
        if self.mode == "quiet":
            return
        multi = len(jobs) > 1
        header = (["Job ID"] if multi else []) + ["Task ID", "State", "Worker", "Makespan",
                                                   "Error"]
        rows = []
        truncated = False
        for job_id, views in jobs:
            for t in views:
                error = t.error
                if error and not verbose:
                    error, cut = formats.truncate_error(error, LIST_ERROR_LIMIT)
                    truncated |= cut
                row = [str(t.id), self.state(t.state), "\n".join(t.hostnames),
                       task_makespan(t, now), error]
                rows.append(([str(job_id)] if multi else []) + row)
        self.horizontal(header, rows, right=(0, 1) if multi else (0,))
        if truncated:
            logger.info("An error message was truncated. Use -v to display the full error.")

    def task_info(self, tasks: Sequence[TaskView], submits: Sequence[SubmitView],
                  verbose: bool, now: float) -> None:
        if self.mode == "json":
            self.json([task_json(t) for t in tasks])
            return
        if self.mode == "quiet":
            return
        truncated = False
        for i, t in enumerate(tasks):
            if i:
                self.line()
            submit = submits[t.submit_index]
            error = t.error
            if error and not verbose:
                error, cut = formats.truncate_error(error, INFO_ERROR_LIMIT)
                truncated |= cut
            self.vertical(task_rows(t, submit.template, error, now, self.state(t.state)))
        if truncated:
            logger.info("An error message(s) was truncated. Use -v to display the full "
                        "error(s).")

    # --- progress -------------------------------------------------------------------------

    def progress(self, jobs: Sequence[JobSummary], final: bool) -> None:
        """One redrawn line (only on a terminal in cli mode)."""
        if self.mode != "cli":
            return
        counts = [0] * 6
        done_jobs = 0
        for j in jobs:
            for i, c in enumerate(j.counts):
                counts[i] += c
            if j.counts[0] + j.counts[1] == 0 and not j.is_open:
                done_jobs += 1
        total = sum(counts)
        done = counts[2] + counts[3] + counts[4] + counts[5]
        named = {"running": counts[1], "finished": counts[2], "failed": counts[3],
                 "canceled": counts[4], "aborted": counts[5]}
        bar = formats.format_progress_bar(named, total, color=self.color)
        tail = " ".join(f"{n} {name.upper()}" for name, n in
                        (("running", counts[1]), ("finished", counts[2]),
                         ("failed", counts[3]), ("canceled", counts[4]),
                         ("aborted", counts[5])) if n)
        text = f"{bar} {done_jobs}/{len(jobs)} jobs, {done}/{total} tasks {tail}".rstrip()
        self.out.write(f"\r\x1b[2K{text}")
        if final:
            self.out.write("\n")
        self.out.flush()


# --- rows and JSON objects (shared by several commands) -------------------------------------


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
        ("Resources", _resources().descriptor_summary(c.resources, multiline=True)),
        ("Time Limit", format_humantime(c.time_limit) if c.time_limit else "None"),
        ("Process pid", str(c.pid) if c.pid else "N/A"),
        ("Group", c.group),
        ("Manager", c.manager),
        ("Manager Job ID", c.manager_job_id or "N/A"),
        ("Last task started", last),
    ]
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
            "resources": _resources().descriptor_json(c.resources),
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


def env_text(env: dict[str, str]) -> str:
    return "\n".join(f"{k}={v}" for k, v in sorted(env.items()) if not k.startswith("HQ_"))


def job_rows(job: JobDetail, now: float, color: bool) -> list[tuple[str, str]]:
    s = job.summary
    tasks = str(s.task_count)
    ids = ranges_text(job.task_ids)
    if s.task_count != 1 or ids != "0":
        tasks = f"{s.task_count}; Ids: {ids}" if ids else tasks
    workers = ", ".join(job.workers)
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
            ("Resources", _resources().request_lines(t.request)),
            ("Pin", t.pin),
            ("Priority", str(t.priority)),
            ("Command", command_text(t.args)),
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
        ("Command", command_text(template.args)),
        ("Environment", env_text(template.env)),
        ("Worker", "\n".join(t.hostnames)),
        ("Start", formats.format_local_datetime(t.started_at) if t.started_at else ""),
        ("End", formats.format_local_datetime(t.ended_at) if t.ended_at else ""),
        ("Makespan", task_makespan(t, now)),
        ("Workdir", t.cwd or "" if started else ""),
        ("Stdout", _stdio_cell(t.stdout_kind, t.stdout) if started else ""),
        ("Stderr", _stdio_cell(t.stderr_kind, t.stderr) if started else ""),
        ("Time limit", format_humantime(template.time_limit) if template.time_limit else "None"),
        ("Resources", _resources().request_lines(template.request)),
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
        },
        "resources": _resources().request_json(t.request),
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


def now() -> float:
    return time.time()
