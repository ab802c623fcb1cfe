"""How `hq job list` prints pages of jobs: one page exactly as one list always printed; JSON
as one array whatever the number of pages."""

from __future__ import annotations

import io
import json

from hqshm.cli.render import Output
from hqshm.link.responses import JobListResponse, JobSummary


def summary(job_id: int, is_open: bool = False) -> JobSummary:
    return JobSummary(job_id, f"job{job_id}", is_open, None, 1, (0, 0, 1, 0, 0, 0))


def pages(*sizes: int, total: int | None = None) -> list[JobListResponse]:
    out, next_id = [], 1
    count = sum(sizes)
    for size in sizes:
        out.append(JobListResponse(tuple(summary(i) for i in range(next_id, next_id + size)),
                                   count if total is None else total))
        next_id += size
    return out


def printed(mode: str, responses: list[JobListResponse]) -> str:
    buffer = io.StringIO()
    Output(mode, color=False, out=buffer).job_list(responses, verbose=False)
    return buffer.getvalue()


def test_json_is_one_array_however_many_pages() -> None:
    whole = io.StringIO()
    jobs = [j for page in pages(2, 2, 1) for j in page.jobs]
    from hqshm.cli.layouts import job_summary_json

    Output("json", color=False, out=whole).json([job_summary_json(j) for j in jobs])
    assert printed("json", pages(2, 2, 1)) == whole.getvalue()
    assert json.loads(printed("json", pages(2, 2, 1)))[4]["id"] == 5
    assert printed("json", pages(0)) == "[]\n"


def test_one_page_prints_one_table_and_the_footer() -> None:
    text = printed("cli", pages(3, total=7))
    assert text.count("| ID ") == 1
    assert text.rstrip().endswith("There are 7 jobs in total. Use `--all` to display all jobs.")


def test_each_further_page_is_its_own_table() -> None:
    text = printed("cli", pages(2, 2, 0))  # the last page, empty, prints nothing
    assert text.count("| ID ") == 2
    assert "in total" not in text
    assert printed("cli", pages(0)).count("| ID ") == 1  # no jobs: the empty table, as before


def test_quiet_lines_across_pages() -> None:
    assert printed("quiet", pages(1, 1)).splitlines() == ["1 FINISHED", "2 FINISHED"]
