"""Batch-system detection (deployment.md §4.5): which allocation a worker is in, and the time it
has left, from the environment and from `qstat -f <id> -F json` / `scontrol show job <id>`.

The tools' answers are recorded texts (PBS and the answers of a busy Slurm cannot be had here);
the end-to-end tests against a real Slurm are in tests/integration/test_worker_manager.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from fixtures.machines import write_tool
from harness import wait_for_pid_exit
from hypothesis import given, settings
from hypothesis import strategies as st

from hqshm.model.durations import format_humantime
from hqshm.node import tools
from hqshm.node.batchsystem import (
    NOT_UNDER_PBS,
    NOT_UNDER_SLURM,
    PBS,
    SLURM,
    Allocation,
    NotUnderManager,
    UnreadableOutput,
    detect_allocation,
    find_allocation,
    parse_slurm_duration,
    pbs_remaining,
    slurm_remaining,
    worker_group,
    worker_time_limit,
)

PBS_ENV = {"PBS_ENVIRONMENT": "PBS_BATCH", "PBS_JOBID": "1234.pbs-server"}
SLURM_ENV = {"SLURM_JOB_ID": "77", "SLURM_JOBID": "77"}

# `scontrol show job 1` of the single-machine Slurm of .ci/slurm (Slurm 22), 0 s into the job.
SCONTROL = """\
JobId=1 JobName=detect-probe
   UserId=root(0) GroupId=root(0) MCS_label=N/A
   Priority=4294901759 Nice=0 Account=(null) QOS=(null)
   JobState=RUNNING Reason=None Dependency=(null)
   Requeue=1 Restarts=0 BatchFlag=0 Reboot=0 ExitCode=0:0
   RunTime=00:00:00 TimeLimit=00:10:00 TimeMin=N/A
   SubmitTime=2026-12-03T03:33:57 EligibleTime=2026-12-03T03:33:57
   StartTime=2026-12-03T03:33:57 EndTime=2026-12-03T03:43:57 Deadline=N/A
   Partition=debug AllocNode:Sid=localhost:2674
   NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:*
   TRES=cpu=1,node=1,billing=1
   Command=bash
   WorkDir=/tmp
"""


def qstat_json(job_id: str = "1234.pbs-server", walltime: object = "01:12:34",
               used: object = "00:13:45") -> str:
    """The parts of PBS Pro's `qstat -f <id> -F json` that matter, around a few that do not."""
    job: dict[str, object] = {
        "Job_Name": "hq-alloc-1",
        "job_state": "R",
        "Resource_List": {"ncpus": 8, "nodect": 1, "select": "1:ncpus=8", "walltime": walltime},
        "Variable_List": {"PBS_O_HOME": "/home/user"},
    }
    if used is not None:
        job["resources_used"] = {"cpupercent": 0, "cput": "00:00:00", "walltime": used}
    return json.dumps({"timestamp": 1700000000, "pbs_version": "2022.1.1",
                       "pbs_server": "pbs-server", "Jobs": {job_id: job}}, indent=4)


# -- which allocation ---------------------------------------------------------------------------


def test_detect_tries_pbs_before_slurm() -> None:
    assert find_allocation("detect", {**PBS_ENV, **SLURM_ENV}) == (PBS, "1234.pbs-server")
    assert find_allocation("detect", SLURM_ENV) == (SLURM, "77")
    assert find_allocation("detect", {"SLURM_JOBID": "78"}) == (SLURM, "78")
    assert find_allocation("detect", {"SLURM_JOB_ID": "79", "SLURM_JOBID": "80"}) == (SLURM, "79")
    assert find_allocation("detect", {"PATH": "/bin"}) is None


def test_none_ignores_both() -> None:
    assert find_allocation("none", {**PBS_ENV, **SLURM_ENV}) is None


def test_explicit_manager_takes_only_its_own() -> None:
    assert find_allocation("slurm", {**PBS_ENV, **SLURM_ENV}) == (SLURM, "77")
    assert find_allocation("pbs", {**PBS_ENV, **SLURM_ENV}) == (PBS, "1234.pbs-server")


@pytest.mark.parametrize(("option", "env", "message"), [
    ("pbs", SLURM_ENV, NOT_UNDER_PBS),
    ("slurm", PBS_ENV, NOT_UNDER_SLURM),
    ("slurm", {"SLURM_JOB_ID": ""}, NOT_UNDER_SLURM),
])
def test_explicit_manager_outside_its_allocation(option: str, env: dict[str, str],
                                                 message: str) -> None:
    with pytest.raises(NotUnderManager) as info:
        find_allocation(option, env)
    assert str(info.value) == message


def test_spec_texts() -> None:
    assert NOT_UNDER_PBS == "PBS_ENVIRONMENT not found. The process is not running under PBS"
    assert NOT_UNDER_SLURM == ("SLURM_JOB_ID/SLURM_JOBID not found. The process is not running "
                               "under SLURM")


def test_pbs_environment_without_a_job_id_is_an_error() -> None:
    with pytest.raises(NotUnderManager, match="PBS_JOBID"):
        find_allocation("detect", {"PBS_ENVIRONMENT": "PBS_INTERACTIVE"})


# -- Slurm --------------------------------------------------------------------------------------


def test_slurm_remaining_time_spec_fact() -> None:
    left = slurm_remaining("RunTime=00:01:34 TimeLimit=00:15:00")
    assert left == 13 * 60 + 26
    assert format_humantime(left) == "13m 26s"


def test_slurm_remaining_time_of_a_real_answer() -> None:
    assert slurm_remaining(SCONTROL) == 600
    with_days = SCONTROL.replace("TimeLimit=00:10:00", "TimeLimit=2-01:00:00").replace(
        "RunTime=00:00:00", "RunTime=1-00:30:00")
    assert slurm_remaining(with_days) == 86400 + 30 * 60


def test_slurm_unlimited_job_has_no_limit() -> None:
    assert slurm_remaining(SCONTROL.replace("TimeLimit=00:10:00", "TimeLimit=UNLIMITED")) is None


@pytest.mark.parametrize(("text", "seconds"), [
    ("00:15:00", 900), ("1-00:00:00", 86400), ("10-02:03:04", 10 * 86400 + 7384),
    ("123:00:00", 123 * 3600), ("UNLIMITED", None),
])
def test_slurm_durations(text: str, seconds: float | None) -> None:
    assert parse_slurm_duration(text) == seconds


@pytest.mark.parametrize("output", [
    "",
    "slurm_load_jobs error: Invalid job id specified",
    "RunTime=00:01:34",  # no TimeLimit
    "TimeLimit=00:15:00",  # no RunTime
    "RunTime=00:01:34 TimeLimit=Partition_Limit",
    "RunTime=00:01:34 TimeLimit=15:00",
    "RunTime=00:01:34 TimeLimit=00:75:00",
    "RunTime=-00:01:34 TimeLimit=00:15:00",
    "RunTime=x-00:01:34 TimeLimit=00:15:00",
    "RunTime=00:01:3a TimeLimit=00:15:00",
    "RunTime=UNLIMITED TimeLimit=00:15:00",
    "RunTime=00:١:34 TimeLimit=00:15:00",  # a digit, but not an ASCII one
    "RunTime=00:16:00 TimeLimit=00:15:00",  # killed late: nothing left
    "RunTime=00:00:01 TimeLimit=" + "9" * 5000 + ":00:00",  # more digits than int() takes
    "RunTime=00:00:01 TimeLimit=" + "9" * 400 + "-00:00:00",  # more than a float holds
])
def test_odd_scontrol_output_is_unreadable(output: str) -> None:
    with pytest.raises(UnreadableOutput):
        slurm_remaining(output)


# -- PBS ----------------------------------------------------------------------------------------


def test_pbs_remaining_time_spec_fact() -> None:
    left = pbs_remaining(qstat_json(), "1234.pbs-server")
    assert left == 58 * 60 + 49
    assert format_humantime(left) == "58m 49s"


def test_pbs_job_named_with_another_server_suffix() -> None:
    output = qstat_json(job_id="1234.pbs-server.cluster.example")
    assert pbs_remaining(output, "1234.pbs-server") == 58 * 60 + 49


def test_pbs_job_not_yet_measured_has_used_nothing() -> None:
    assert pbs_remaining(qstat_json(used=None), "1234.pbs-server") == 3600 + 12 * 60 + 34


def test_pbs_walltime_of_many_hours() -> None:
    assert pbs_remaining(qstat_json(walltime="720:00:00", used="00:00:10"),
                         "1234.pbs-server") == 720 * 3600 - 10


def test_pbs_output_with_raw_control_characters() -> None:
    output = qstat_json().replace('"/home/user"', '"/home/\tuser"')
    assert pbs_remaining(output, "1234.pbs-server") == 58 * 60 + 49


@pytest.mark.parametrize("output", [
    "",
    "qstat: Unknown Job Id 1234.pbs-server",
    "[]",
    "null",
    '{"Jobs": []}',
    '{"Jobs": {}}',
    '{"Jobs": {"1234.pbs-server": "R"}}',
    '{"Jobs": {"1234.pbs-server": {}}}',
    '{"Jobs": {"1234.pbs-server": {"Resource_List": []}}}',
    '{"Jobs": {"1234.a": {}, "1234.b": {}}}',  # which one?
    qstat_json(walltime=3600),
    qstat_json(walltime="1:00"),
    qstat_json(walltime="01:00:00:00"),
    qstat_json(used=["00:00:01"]),
    qstat_json(used="01:13:00"),  # more than the walltime
    qstat_json(walltime="9" * 5000 + ":00:00"),
    "[" * 100_000 + "]" * 100_000,  # deeper than the parser's recursion
    qstat_json().replace('"resources_used": {', '"resources_used": [{').replace(
        '"walltime": "00:13:45"\n        }', '"walltime": "00:13:45"\n        }]'),
])
def test_odd_qstat_output_is_unreadable(output: str) -> None:
    with pytest.raises(UnreadableOutput) as info:
        pbs_remaining(output, "1234.pbs-server")
    assert len(str(info.value)) < 300  # a warning's line, whatever the output


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_no_scontrol_output_crashes(output: str) -> None:
    with contextlib.suppress(UnreadableOutput):
        left = slurm_remaining(output)
        assert left is None or left > 0


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["Jobs", "1234.pbs-server", "1234.x", "Resource_List",
                                       "resources_used", "walltime", "other"]),
                      children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_no_qstat_json_crashes(data: object) -> None:
    try:
        left = pbs_remaining(json.dumps(data), "1234.pbs-server")
    except UnreadableOutput:
        return
    assert left > 0


# -- what the worker takes ------------------------------------------------------------------------


def test_group_and_time_limit_defaults() -> None:
    allocation = Allocation(SLURM, "77", 600.0)
    assert worker_group(None, allocation) == "77"
    assert worker_group("mine", allocation) == "mine"
    assert worker_group(None, None) == "default"
    assert worker_time_limit(None, allocation) == 600.0
    assert worker_time_limit(30.0, allocation) == 30.0  # an explicit limit wins
    assert worker_time_limit(None, Allocation(PBS, "1.s", None)) is None
    assert worker_time_limit(None, None) is None


# -- asking the batch system (stand-in tools) -----------------------------------------------------


def answering(text: str, calls: list[list[str]] | None = None):  # noqa: ANN201
    def run(argv: list[str], env: Mapping[str, str], timeout: float) -> str:
        if calls is not None:
            calls.append(argv)
        return text

    return run


def failing(message: str, **kind: bool):  # noqa: ANN201
    def run(argv: list[str], env: Mapping[str, str], timeout: float) -> str:
        raise tools.ToolError(message, **kind)

    return run


def test_detect_slurm_asks_scontrol(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[list[str]] = []
    with caplog.at_level(logging.INFO):
        allocation = detect_allocation("detect", SLURM_ENV,
                                       answering("RunTime=00:01:34 TimeLimit=00:15:00", calls))
    assert allocation == Allocation(SLURM, "77", 806.0)
    assert calls == [["scontrol", "show", "job", "77"]]
    assert "SLURM environment detected" in caplog.text


def test_detect_pbs_asks_qstat(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[list[str]] = []
    with caplog.at_level(logging.INFO):
        allocation = detect_allocation("pbs", PBS_ENV, answering(qstat_json(), calls))
    assert allocation == Allocation(PBS, "1234.pbs-server", 3529.0)
    assert calls == [["qstat", "-f", "1234.pbs-server", "-F", "json"]]
    assert "PBS environment detected" in caplog.text


def test_none_asks_nothing() -> None:
    assert detect_allocation("none", {**PBS_ENV, **SLURM_ENV}, failing("must not run")) is None


def test_failing_qstat_is_a_warning_without_limit(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        allocation = detect_allocation("detect", PBS_ENV,
                                       failing("qstat exited with 1: Unknown Job Id"))
    assert allocation == Allocation(PBS, "1234.pbs-server", None)
    assert "Cannot get time-limit from PBS: qstat exited with 1: Unknown Job Id" in caplog.text


def test_odd_qstat_is_a_warning_without_limit(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        allocation = detect_allocation("detect", PBS_ENV, answering("<html>"))
    assert allocation == Allocation(PBS, "1234.pbs-server", None)
    assert "Cannot get time-limit from PBS: qstat's output is not JSON" in caplog.text


def test_odd_scontrol_is_a_warning_without_limit(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        allocation = detect_allocation("slurm", SLURM_ENV, answering("JobId=77 JobState=RUNNING"))
    assert allocation == Allocation(SLURM, "77", None)
    assert ("Cannot get remaining worker timelimit from Slurm: no TimeLimit in the output of "
            "scontrol") in caplog.text


def test_missing_scontrol_is_a_warning_without_limit(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        allocation = detect_allocation("slurm", {**SLURM_ENV, "PATH": str(tmp_path)})
    assert allocation == Allocation(SLURM, "77", None)
    assert "Cannot get remaining worker timelimit from Slurm: scontrol is not on PATH" in \
        caplog.text


def test_hung_scontrol_is_killed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bin_dir = tmp_path / "bin"
    pid_file = tmp_path / "pid"
    write_tool(bin_dir, "scontrol", f"sleep 30 &\necho $! > {pid_file}\nwait\n")
    env = {**SLURM_ENV, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    begin = time.monotonic()
    with caplog.at_level(logging.WARNING):
        allocation = detect_allocation("slurm", env, timeout=0.3)
    assert time.monotonic() - begin < 15
    assert allocation == Allocation(SLURM, "77", None)
    assert "Cannot get remaining worker timelimit from Slurm: scontrol did not answer within " \
        "0.3 s" in caplog.text
    assert wait_for_pid_exit(int(pid_file.read_text()), timeout=5.0)


def test_real_tool_call_through_path(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    write_tool(bin_dir, "qstat", f"cat <<'EOF'\n{qstat_json()}\nEOF\n")
    env = {**PBS_ENV, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    assert detect_allocation("detect", env) == Allocation(PBS, "1234.pbs-server", 3529.0)
