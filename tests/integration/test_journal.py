"""The journal with real processes: what a killed server comes back with, and `hq journal`.

Spec: deployment.md §3 and §5, output.md §6, cli.md §9. Faults are injected for real: the
server is killed with SIGKILL, the file is torn, zeroed or damaged in the middle.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from harness import HqEnv
from hqshm.cluster.frozen import replace
from hqshm.cluster.ids import MAX_JOB_ID
from job_helpers import job_info, submit

from hqshm.server.journal import frames
from hqshm.server.journal.records import JOURNAL, Counters, JobSubmittedRecord


def events(env: HqEnv, *args: str) -> list[dict]:
    out = env.command(["journal", *args], ignore_stderr=True)
    return [json.loads(line)["event"] for line in out.splitlines() if line.strip()]


def restart(env: HqEnv, journal: Path) -> None:
    """Kill the server with SIGKILL and start it again on the same journal."""
    env.kill_server(signal.SIGKILL)
    env.start_server(["--journal", str(journal)])


def wait_lines(env: HqEnv, path: Path, count: int) -> list[str]:
    def ready() -> list[str] | None:
        lines = path.read_text().split() if path.exists() else []
        return lines if len(lines) >= count else None

    return env.wait_until(ready, f"{count} lines in {path.name}")


def test_a_fresh_server_streams_its_start_and_two_submits(hq_env: HqEnv, tmp_path: Path) -> None:
    hq_env.start_server(["--journal", str(tmp_path / "j")])
    submit(hq_env, ["--name", "sleep", "--", "sleep", "1"])
    submit(hq_env, ["--name", "uname", "--", "uname"])
    seen = events(hq_env, "replay")
    assert [e["type"] for e in seen] == ["server-start", "job-created", "job-created"]
    assert [e["job_desc"]["name"] for e in seen[1:]] == ["sleep", "uname"]
    assert seen[1]["submit_desc"]["task_desc"]["ids"] == "0"


def test_submit_and_cancel_are_in_the_journal_when_the_server_is_killed_right_after(
        hq_env: HqEnv, tmp_path: Path) -> None:
    journal = tmp_path / "j"
    hq_env.start_server(["--journal", str(journal)])
    submit(hq_env, ["--array", "1-3", "--", "sleep", "10"])
    hq_env.command(["job", "cancel", "1"])
    hq_env.kill_server(signal.SIGKILL)
    exported = events(hq_env, "export", str(journal))
    assert [e["type"] for e in exported] == ["server-start", "job-created", "task-canceled"]
    assert exported[2]["tasks"] == [{"job_id": 1, "job_task_id": t} for t in (1, 2, 3)]


def test_running_tasks_run_again_with_the_next_instance_and_finished_ones_do_not(
        hq_env: HqEnv, tmp_path: Path) -> None:
    journal = tmp_path / "j"
    log = tmp_path / "ran"
    hq_env.start_server(["--journal", str(journal)])
    hq_env.start_worker(cpus=3)
    # Tasks 0 and 1 end soon; 2-4 run until the server is gone. (Not at once: a group whose
    # tasks take under 20 ms is handed off on the node, so task 4 could wait behind a long
    # one on its executor.)
    script = (f'echo "$HQ_TASK_ID:$HQ_INSTANCE_ID" >> {log}; '
              'if [ "$HQ_TASK_ID" -ge 2 ] && [ "$HQ_INSTANCE_ID" = 0 ]; then sleep 60; '
              'else sleep 0.3; fi')
    submit(hq_env, ["--array", "0-4", "--", "bash", "-c", script])
    wait_lines(hq_env, log, 5)
    hq_env.wait_for_tasks(1, "finished", count=2)
    hq_env.kill_worker(1)
    restart(hq_env, journal)
    states = hq_env.task_states(1)
    assert sorted(states.values()) == ["finished", "finished", "waiting", "waiting", "waiting"]
    hq_env.start_worker(cpus=3)
    hq_env.wait_for_job_state(1, "FINISHED")
    ran = wait_lines(hq_env, log, 8)
    assert sorted(ran[5:]) == ["2:1", "3:1", "4:1"]  # only those, with instance 1
    # The new worker got the next id; the old one is listed as lost.
    workers = hq_env.json(["worker", "list", "--all"])
    assert sorted(w["id"] for w in workers) == [1, 2]


def test_ids_jobs_and_open_jobs_survive_repeated_restarts(hq_env: HqEnv, tmp_path: Path) -> None:
    journal = tmp_path / "j"
    hq_env.start_server(["--journal", str(journal)])
    hq_env.command(["job", "open"])
    for _ in range(3):
        hq_env.command(["submit", "--job", "1", "--", "true"])
    restart(hq_env, journal)
    info = job_info(hq_env, 1)
    assert info.get("Session") == "open"
    assert info.get("Tasks") == "3; Ids: 0-2"
    restart(hq_env, journal)
    assert submit(hq_env, ["--", "true"]) == 2
    restart(hq_env, journal)
    assert sorted(hq_env.job_states()) == [1, 2]


def test_dependencies_are_honoured_after_a_restore(hq_env: HqEnv, tmp_path: Path) -> None:
    journal = tmp_path / "j"
    log = tmp_path / "order"
    jobfile = tmp_path / "job.toml"
    jobfile.write_text(f"""
[[task]]
id = 1
command = ["bash", "-c", "echo 1 >> {log}"]
[[task]]
id = 2
deps = [1]
command = ["bash", "-c", "echo 2 >> {log}"]
""")
    hq_env.start_server(["--journal", str(journal)])
    hq_env.command(["job", "submit-file", str(jobfile)])
    restart(hq_env, journal)
    assert hq_env.task_states(1) == {1: "waiting", 2: "waiting"}
    hq_env.start_worker(cpus=2)
    hq_env.wait_for_job_state(1, "FINISHED")
    assert log.read_text().split() == ["1", "2"]


def test_a_torn_tail_is_cut_off_with_a_warning(hq_env: HqEnv, tmp_path: Path) -> None:
    journal = tmp_path / "j"
    hq_env.start_server(["--journal", str(journal)])
    submit(hq_env, ["--", "true"])
    hq_env.kill_server(signal.SIGKILL)
    good = journal.stat().st_size
    with open(journal, "ab") as f:
        f.write(b"\x8eJr\x01\xff\x00\x00\x00half a rec")  # a record cut by the crash
    hq_env.start_server(["--journal", str(journal)])
    assert "Journal contains not fully written data; they will be removed from the log" \
        in hq_env.log("server")
    assert hq_env.job_states() == {1: "WAITING"}
    assert submit(hq_env, ["--", "true"]) == 2  # appending goes on after the good data
    hq_env.command(["journal", "flush"])
    assert journal.stat().st_size > good
    restart(hq_env, journal)
    assert sorted(hq_env.job_states()) == [1, 2]


def test_a_zeroed_tail_and_a_damaged_block_are_skipped(hq_env: HqEnv, tmp_path: Path) -> None:
    journal = tmp_path / "j"
    hq_env.start_server(["--journal", str(journal)])
    for name in ("first", "second", "third"):
        submit(hq_env, ["--name", name, "--", "true"])
    hq_env.kill_server(signal.SIGKILL)
    data = bytearray(journal.read_bytes())
    second = data.find(b"second")
    data[second - 3 : second + 3] = b"\xff" * 6  # the second job's record fails its checksum
    journal.write_bytes(bytes(data) + b"\x00" * 4096)  # and the disk zeroed a block after it
    hq_env.start_server(["--journal", str(journal)])
    log = hq_env.log("server")
    assert "damaged bytes" in log and "not fully written data" in log
    assert sorted(hq_env.job_states()) == [1, 3]


def test_prune_keeps_unfinished_jobs_and_live_workers(hq_env: HqEnv, tmp_path: Path) -> None:
    journal = tmp_path / "j"
    hq_env.start_server(["--journal", str(journal)])
    hq_env.start_worker()
    hq_env.start_worker()
    submit(hq_env, ["--", "sleep", "60"])
    submit(hq_env, ["--", "true"])
    hq_env.wait_for_job_state(2, "FINISHED")
    hq_env.command(["worker", "stop", "1"])
    hq_env.wait_for_job_state(1, "RUNNING")
    submit(hq_env, ["--", "sleep", "60"])
    hq_env.command(["journal", "flush"])
    before = journal.stat().st_size
    hq_env.command(["journal", "prune"])
    assert journal.stat().st_size < before
    exported = events(hq_env, "export", str(journal))
    assert sorted({e["job"] for e in exported if e["type"] == "job-created"}) == [1, 3]
    assert [e["id"] for e in exported if e["type"] == "worker-connected"] == [2]


def test_stream_prints_live_events_until_the_server_stops(hq_env: HqEnv, tmp_path: Path) -> None:
    hq_env.start_server()  # no journal: the server keeps one in memory
    hq_env.start_worker()
    stream = hq_env.spawn("stream", ["journal", "stream"])
    # Attached before the submit (a loaded machine takes a while to start a command): the
    # job's events are then live ones, not part of the state the stream starts from.
    hq_env.wait_until(lambda: "worker-connected" in hq_env.log("stream"), "the stream to attach")
    submit(hq_env, ["--", "true"])
    hq_env.wait_for_job_state(1, "FINISHED")
    time.sleep(0.6)
    hq_env.command(["server", "stop"])
    assert stream.wait(timeout=20) == 0
    types = [json.loads(line)["event"]["type"] for line in hq_env.log("stream").splitlines()
             if line.startswith("{")]
    assert types[:2] == ["server-start", "worker-connected"]
    assert "job-created" in types and "task-finished" in types


def test_a_stopped_worker_is_journaled_as_stopped(hq_env: HqEnv, tmp_path: Path) -> None:
    hq_env.start_server(["--journal", str(tmp_path / "j")])
    hq_env.start_worker()
    hq_env.command(["worker", "stop", "1"])
    hq_env.wait_until(lambda: any(e["type"] == "worker-lost" for e in events(hq_env, "replay")),
                      "the worker's loss in the journal")
    lost = [e for e in events(hq_env, "replay") if e["type"] == "worker-lost"]
    assert lost == [{"type": "worker-lost", "id": 1, "reason": "Stopped"}]


def test_export_of_a_missing_or_foreign_file_is_a_clear_error(hq_env: HqEnv,
                                                              tmp_path: Path) -> None:
    hq_env.command(["journal", "export", str(tmp_path / "nothing")],
                   expect_fail="Cannot read journal")
    foreign = tmp_path / "foreign"
    foreign.write_text("some text that is not a journal\n")
    hq_env.command(["journal", "export", str(foreign)], expect_fail="is not a journal")
    hq_env.command(["server", "start", "--journal", str(foreign)],
                   expect_fail="is not a journal")



def test_job_ids_a_task_key_cannot_hold_are_refused_and_the_last_one_ends_submits(
        hq_env: HqEnv, tmp_path: Path) -> None:
    """A crafted or damaged journal may name any job id: ids beyond the 32 bits of a task key
    (or below 1) lose their record with a warning instead of breaking the restore, and a
    server whose ids reach the last one refuses further submits with a clear error."""
    journal = tmp_path / "j"
    hq_env.start_server(["--journal", str(journal)])
    for name in ("kept", "huge", "negative"):
        submit(hq_env, ["--name", name, "--", "true"])
    hq_env.kill_server(signal.SIGKILL)
    payloads = []
    for payload in frames.scan(journal.read_bytes()).payloads:
        record = JOURNAL.decode(payload)
        if isinstance(record, JobSubmittedRecord):
            record = replace(record, job_id={"huge": 2**40, "negative": -5}.get(
                record.name, record.job_id))
        payloads.append(JOURNAL.encode(record))
    payloads.append(JOURNAL.encode(Counters(2**40, 1, 1)))
    journal.write_bytes(frames.HEADER + frames.frame_all(payloads))
    hq_env.start_server(["--journal", str(journal)])
    log = hq_env.log("server")
    assert log.count("could not be applied and was skipped: a job id outside 1-4294967295") == 3
    assert hq_env.job_states() == {1: "WAITING"}
    assert submit(hq_env, ["--", "true"]) == 2

    hq_env.kill_server(signal.SIGKILL)
    last = replace(JOURNAL.decode(frames.scan(journal.read_bytes()).payloads[1]),
                   job_id=MAX_JOB_ID, name="last")
    with open(journal, "ab") as f:
        f.write(frames.frame(JOURNAL.encode(last)))
    hq_env.start_server(["--journal", str(journal)])
    assert hq_env.job_states() == {1: "WAITING", 2: "WAITING", MAX_JOB_ID: "WAITING"}
    hq_env.command(["submit", "--", "true"],
                   expect_fail=f"This server has used every job id (up to {MAX_JOB_ID}).")
    hq_env.command(["job", "open"], expect_fail="has used every job id")
    assert hq_env.job_states()[MAX_JOB_ID] == "WAITING"  # it serves on
