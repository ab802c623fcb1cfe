"""What each command prints, in the three output modes (spec/output.md).

``cli`` draws HQ's tables, ``json`` prints exactly one JSON value (keys sorted, 2-space indent),
``quiet`` prints the minimal lines scripts read. Commands hand over response records; this module
owns every layout, so a table's rows are written down once.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from hqshm.link.commandlog import CommandLogger

# Each command imports the views it shows, and each method the layouts, formats and tables it
# draws: `hq submit` prints one line, and the tables' helpers were a fifth of its imports.
if TYPE_CHECKING:
    from hqshm.link.details import (
        JobDetail,
        SubmitView,
        TaskExplainResponse,
        TaskView,
        WorkerView,
    )
    from hqshm.link.responses import JobListResponse, JobSummary, ServerInfo
    from hqshm.model.selection import Ranges

logger = CommandLogger("hqshm.cli")

LIST_ERROR_LIMIT = 16
INFO_ERROR_LIMIT = 237


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
        from hqshm.cli import prettyjson  # json mode's alone: `hq submit` prints one line

        self.line(prettyjson.dumps(value))

    def json_items(self, items: Iterable[Any]) -> None:
        """A JSON array written item by item, exactly as ``json`` writes the whole list."""
        from hqshm.cli import prettyjson

        first = True
        for item in items:
            self.out.write(("[\n  " if first else ",\n  ") + prettyjson.dumps(item, "\n  "))
            first = False
        self.out.write("[]\n" if first else "\n]\n")
        self.out.flush()

    def horizontal(self, header: Sequence[str], rows: Sequence[Sequence[str]],
                   right: Sequence[int] = ()) -> None:
        from hqshm.cli import tables

        self.line(tables.render_horizontal(header, rows, right_align=right, color=self.color))

    def vertical(self, rows: Sequence[tuple[str, str]]) -> None:
        from hqshm.cli import tables

        self.line(tables.render_vertical(rows, color=self.color))

    def state(self, word: str, kind: str = "job") -> str:
        if not self.color:
            return word
        from hqshm.cli import tables

        return tables.colorize_state(word, kind)  # type: ignore[arg-type]

    def error(self, message: str) -> None:
        if self.mode == "json":
            self.json({"error": message})
        else:
            if self.color:
                from hqshm.cli import tables

                message = tables.paint(message, "red")
            sys.stderr.write(message + "\n")
            sys.stderr.flush()

    def empty(self) -> None:
        """Commands with nothing to say print `{}` in JSON mode and nothing otherwise."""
        if self.mode == "json":
            self.json({})

    # --- server ---------------------------------------------------------------------------

    def server_info(self, info: ServerInfo, server_dir: str | None = None) -> None:
        from hqshm.cli import formats

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
        from hqshm.cli.layouts import resources_view, worker_json

        if self.mode == "json":
            self.json([worker_json(w) for w in workers])
            return
        if self.mode == "quiet":
            for w in workers:
                self.line(f"{w.id} {w.state}")
            return
        rows = [
            [str(w.id), self.state(w.state, "worker"), w.config.hostname,
             resources_view().descriptor_summary(w.config.resources, multiline=False),
             w.config.manager, w.config.manager_job_id or "N/A"]
            for w in workers
        ]
        self.horizontal(["ID", "State", "Hostname", "Resources", "Manager", "Manager Job ID"],
                        rows, right=(0,))

    def worker_info(self, workers: Sequence[WorkerView]) -> None:
        from hqshm.cli.layouts import worker_json, worker_rows

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
            ok = "successfully"
            if self.color:
                from hqshm.cli import tables

                ok = tables.paint(ok, "green")
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
        from hqshm.cli.layouts import ranges_text

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
        from hqshm.cli import formats
        from hqshm.cli.layouts import explain_json
        from hqshm.model.arrays import compress_ids
        from hqshm.model.durations import format_humantime, format_short_duration

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

    def job_list(self, pages: Iterable[JobListResponse], verbose: bool) -> None:
        """Each page as it comes: one table (or JSON array) while the jobs fit in one page,
        a table per page beyond."""
        from hqshm.cli.layouts import job_state_word, job_summary_json

        if self.mode == "json":
            self.json_items(job_summary_json(j) for page in pages for j in page.jobs)
            return
        shown = total = 0
        any_open = False
        for page in pages:
            shown += len(page.jobs)
            total = page.total
            any_open = any_open or any(j.is_open for j in page.jobs)
            if self.mode == "quiet":
                for j in page.jobs:
                    self.line(f"{j.id} {job_state_word(j)}")
            elif page.jobs or shown == 0:
                self._job_table(page.jobs, verbose)
        if self.mode == "quiet":
            return
        if any_open:
            self.line("* = Open jobs")
        if total > shown:
            if total == 1:
                self.line("There is 1 job in total. Use `--all` to display all jobs.")
            else:
                self.line(f"There are {total} jobs in total. Use `--all` to display all jobs.")

    def _job_table(self, jobs: Sequence[JobSummary], verbose: bool) -> None:
        from hqshm.cli import formats
        from hqshm.cli.layouts import job_state_word

        header = ["ID", "Name", "State", "Tasks"] + (["Cancel Reason"] if verbose else [])
        rows = []
        for j in jobs:
            row = [f"*{j.id}" if j.is_open else str(j.id), formats.shorten_job_name(j.name),
                   self.state(job_state_word(j)), str(j.task_count)]
            if verbose:
                row.append(j.cancel_reason or "")
            rows.append(row)
        self.horizontal(header, rows, right=(0,))

    def job_info(self, jobs: Sequence[JobDetail], now: float) -> None:
        from hqshm.cli.layouts import job_detail_json, job_rows

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
        from hqshm.cli import formats
        from hqshm.cli.layouts import task_json, task_makespan

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
        from hqshm.cli import formats
        from hqshm.cli.layouts import task_json, task_rows

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
        from hqshm.cli import formats

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
