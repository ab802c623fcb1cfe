"""`hq job list` in pages: the server answers a page of jobs after an id, the CLI prints each
page as it comes (a server that kept 100,000 jobs never builds, sends or renders them at once).

The server side is asked directly with small pages (the CLI's page is 10,000 jobs); how pages
are printed is tested in tests/unit/test_job_list_render.py.
"""

from __future__ import annotations

from harness import HqEnv

from hqshm.link.client import ClientConnection
from hqshm.link.requests import JobListRequest
from hqshm.link.responses import JobListResponse


def ids(response: JobListResponse) -> list[int]:
    return [job.id for job in response.jobs]


def test_pages_of_all_jobs_and_of_the_default_listing(hq_env: HqEnv) -> None:
    hq_env.start_server()
    for _ in range(5):
        hq_env.command(["submit", "--", "true"])
    hq_env.command(["job", "cancel", "2"])
    with ClientConnection(hq_env.server_dir) as conn:
        def page(**kwargs: object) -> JobListResponse:
            return conn.request(JobListRequest(**kwargs), JobListResponse)  # type: ignore[arg-type]

        assert ids(page(all=True, limit=2)) == [1, 2]
        assert ids(page(all=True, after=2, limit=2)) == [3, 4]
        last = page(all=True, after=4, limit=2)
        assert ids(last) == [5] and last.total == 5
        assert ids(page(all=True)) == [1, 2, 3, 4, 5]  # no limit: all of them, as before
        # The default listing hides the canceled job 2, also across pages.
        assert ids(page(limit=2)) == [1, 3]
        assert ids(page(after=3, limit=2)) == [4, 5]
        assert ids(page(states=("canceled",), limit=2)) == [2]
    assert "There are 5 jobs in total" in hq_env.command(["job", "list"])
