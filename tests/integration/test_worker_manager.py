"""Workers inside batch allocations: `hq worker start --manager detect|none|pbs|slurm`.

Spec: deployment.md §4.5 (detection, remaining time, errors), cli.md §4 (`--group` and
`--time-limit` defaults), output.md §3.2/§3.3/§4.2 (`Manager`, `Manager Job ID`, `allocation`).

Slurm tests run the worker inside real allocations of the single-machine Slurm of the `slurm`
fixture (tests/slurmcluster.py), which other tests share: each names its jobs uniquely and
cancels only those. PBS tests use a stand-in `qstat` (see ``fake_qstat``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
from harness import HqEnv
from slurmcluster import SlurmCluster
from worker_helpers import hq_node_executable, worker_table

PBS_JOB = "1234.pbs-server"
# The states of a Slurm job that still holds (or waits for) its node.
SLURM_ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "RESIZING",
                "REQUEUED", "SIGNALING", "STAGE_OUT", "STOPPED"}
SLURM_START_TIMEOUT = 120.0  # the cluster's two CPUs may be busy with others' jobs


# -- PBS: a stand-in qstat ----------------------------------------------------------------------


def qstat_output(walltime: str = "01:12:34", used: str = "00:13:45") -> str:
    """What PBS Pro's `qstat -f <id> -F json` prints for a running job (abridged)."""
    return json.dumps({
        "timestamp": 1714557600,
        "pbs_version": "2022.1.1",
        "pbs_server": "pbs-server",
        "Jobs": {
            PBS_JOB: {
                "Job_Name": "hq-worker",
                "Job_Owner": "user@login1",
                "resources_used": {"cpupercent": 0, "cput": "00:00:00", "mem": "5036kb",
                                   "ncpus": 4, "vmem": "12340kb", "walltime": used},
                "job_state": "R",
                "queue": "workq",
                "exec_host": "node1/0*4",
                "Resource_List": {"ncpus": 4, "nodect": 1, "place": "pack",
                                  "select": "1:ncpus=4", "walltime": walltime},
                "Variable_List": {"PBS_O_HOME": "/home/user", "PBS_O_WORKDIR": "/home/user",
                                  "PBS_ENVIRONMENT": "PBS_BATCH", "PBS_O_QUEUE": "workq"},
            }
        },
    }, indent=4)


def fake_qstat(hq_env: HqEnv, script: str) -> dict[str, str]:
    """The environment of a worker inside PBS job PBS_JOB whose `qstat` is ``script``.

    A stand-in for an external program: no PBS server can run here, so `qstat` is a shell
    script, first on the worker's PATH, that gives PBS's recorded answer (or fails as it does).
    """
    bin_dir = hq_env.root / "pbs-bin"
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / "qstat"
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            "PBS_ENVIRONMENT": "PBS_BATCH", "PBS_JOBID": PBS_JOB}


def answering_qstat(hq_env: HqEnv, output: str) -> dict[str, str]:
    recorded = hq_env.root / "qstat.json"
    recorded.write_text(output)
    # Only the question the worker must ask gets the answer.
    return fake_qstat(hq_env, f'[ "$*" = "-f {PBS_JOB} -F json" ] || '
                              f'{{ echo "qstat: bad arguments: $*" >&2; exit 2; }}\n'
                              f"cat {shlex.quote(str(recorded))}\n")


def test_pbs_detected(hq_env: HqEnv) -> None:
    """Inside a PBS job: manager, job ID, group, and walltime left (spec's 58m 49s).

    `qstat` is a stand-in for the external program (``fake_qstat``): no PBS server can run here.
    """
    hq_env.start_server()
    hq_env.start_worker(env=answering_qstat(hq_env, qstat_output()))
    table = worker_table(hq_env, 1)
    assert table.get("Manager") == "PBS"
    assert table.get("Manager Job ID") == PBS_JOB
    assert table.get("Group") == PBS_JOB
    assert table.get("Time Limit") == "58m 49s"
    listed = hq_env.command(["worker", "list"], as_table=True)
    assert listed.column("Manager") == ["PBS"]
    assert listed.column("Manager Job ID") == [PBS_JOB]
    [worker] = hq_env.json(["worker", "info", "1"])
    assert worker["allocation"] == {"manager": "PBS", "id": PBS_JOB}
    assert worker["configuration"]["group"] == PBS_JOB
    assert worker["configuration"]["time_limit"] == 58 * 60 + 49
    assert "PBS environment detected" in hq_env.log("worker1")


def test_pbs_explicit_with_own_group_and_time_limit(hq_env: HqEnv) -> None:
    """`--manager pbs` inside a PBS job; an explicit --group and --time-limit win.

    `qstat` is a stand-in for the external program (``fake_qstat``): no PBS server can run here.
    """
    hq_env.start_server()
    hq_env.start_worker(env=answering_qstat(hq_env, qstat_output()),
                        args=["--manager", "pbs", "--group", "mine", "--time-limit", "10m"])
    table = worker_table(hq_env, 1)
    assert table.get("Manager") == "PBS"
    assert table.get("Manager Job ID") == PBS_JOB
    assert table.get("Group") == "mine"
    assert table.get("Time Limit") == "10m"  # an explicit limit wins over the allocation's


@pytest.mark.parametrize("script", [
    f"echo 'qstat: Unknown Job Id {PBS_JOB}' >&2\nexit 153\n",
    "echo '{\"Jobs\": {\"1234.pbs-server\": {\"Resource_List\": {}}}}'\n",
    "echo 'not json'\n",
], ids=["fails", "no-walltime", "not-json"])
def test_pbs_without_time_limit_when_qstat_fails(hq_env: HqEnv, script: str) -> None:
    """A failing qstat, or one we cannot read, costs a warning and the time limit only.

    `qstat` is a stand-in for the external program (``fake_qstat``): no PBS server can run here.
    """
    hq_env.start_server()
    hq_env.start_worker(env=fake_qstat(hq_env, script))
    table = worker_table(hq_env, 1)
    assert table.get("Manager") == "PBS"
    assert table.get("Manager Job ID") == PBS_JOB
    assert table.get("Group") == PBS_JOB
    assert table.get("Time Limit") == "None"
    log = hq_env.log("worker1")
    assert " WARN Cannot get time-limit from PBS: " in log
    assert "PBS environment detected" in log


def test_manager_none_ignores_the_batch_variables(hq_env: HqEnv) -> None:
    hq_env.start_server()
    env = answering_qstat(hq_env, qstat_output())
    hq_env.start_worker(env={**env, "SLURM_JOB_ID": "77", "SLURM_JOBID": "77"},
                        args=["--manager", "none"])
    table = worker_table(hq_env, 1)
    assert table.get("Manager") == "None"
    assert table.get("Manager Job ID") == "N/A"
    assert table.get("Group") == "default"
    assert table.get("Time Limit") == "None"
    [worker] = hq_env.json(["worker", "list"])
    assert worker["allocation"] is None


@pytest.mark.parametrize(("manager", "message"), [
    ("pbs", "PBS_ENVIRONMENT not found. The process is not running under PBS"),
    ("slurm", "SLURM_JOB_ID/SLURM_JOBID not found. The process is not running under SLURM"),
])
def test_explicit_manager_outside_its_allocation(hq_env: HqEnv, manager: str,
                                                 message: str) -> None:
    hq_env.start_server()
    result = hq_env.run(["worker", "start", "--cpus=1", "--detect-resources=none",
                         f"--work-dir={hq_env.root / 'w'}", "--manager", manager])
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 1, output
    assert message in output
    assert "Traceback" not in output
    assert hq_env.command(["worker", "list"], as_table=True).rows == []


# -- Slurm: real allocations --------------------------------------------------------------------


class SlurmJobs:
    """This test's Slurm jobs, all named ``name``: started here, cancelled at teardown."""

    def __init__(self, slurm: SlurmCluster, hq_env: HqEnv) -> None:
        self.slurm = slurm
        self.hq_env = hq_env
        self.name = f"hqshm-test-{uuid.uuid4().hex[:12]}"
        self.sruns: list[subprocess.Popen] = []

    def env(self) -> dict[str, str]:
        return self.slurm.env(self.hq_env.env())

    def worker_argv(self, hostname: str, *args: str, node: bool = False) -> list[str]:
        """`hq worker start` (or `hq-node`) of the test's server, for a batch script."""
        program = hq_node_executable() if node else [*self.hq_env.hq, "worker", "start"]
        return [*program, f"--server-dir={self.hq_env.server_dir}", "--cpus=1",
                "--detect-resources=none", f"--hostname={hostname}",
                f"--work-dir={self.hq_env.root / hostname}", *args]

    def sbatch(self, argv: list[str], *options: str) -> str:
        """Submit ``argv`` as a batch job; its output goes to the env's logs (checked for
        errors like every other process's). Returns the job ID."""
        script = self.hq_env.root / f"job-{uuid.uuid4().hex[:6]}.sh"
        script.write_text("#!/bin/sh\nexec " + shlex.join(argv) + "\n")
        log = self.hq_env.logs / f"{script.stem}.log"
        result = subprocess.run(
            ["sbatch", "--parsable", f"--job-name={self.name}", f"--partition={self.slurm.partition}",
             "--ntasks=1", "--cpus-per-task=1", f"--output={log}", f"--chdir={self.hq_env.work}",
             *options, str(script)],
            env=self.env(), capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 0, f"sbatch failed: {result.stderr}"
        return result.stdout.strip().split(";")[0]

    def srun(self, argv: list[str], *options: str) -> subprocess.Popen:
        """``argv`` as a job step of a new allocation (srun in the foreground)."""
        log = open(self.hq_env.logs / f"srun-{len(self.sruns)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            ["srun", f"--job-name={self.name}", f"--partition={self.slurm.partition}",
             "--ntasks=1", "--cpus-per-task=1", *options, *argv],
            env=self.env(), cwd=self.hq_env.work, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.sruns.append(proc)
        return proc

    def states(self) -> dict[str, str]:
        """Job ID -> state of this test's jobs that Slurm still knows."""
        result = self.slurm.run("squeue", "-h", "-t", "all", "-n", self.name, "-o", "%i %T")
        return dict(line.split(None, 1) for line in result.stdout.splitlines() if " " in line)

    def job_id(self) -> str:
        """The ID of this test's only job (for srun, which does not print it)."""
        [job] = self.hq_env.wait_until(lambda: list(self.states()), "the Slurm job to appear")
        return job

    def cancel(self) -> None:
        self.slurm.run("scancel", "-n", self.name)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not SLURM_ACTIVE & set(self.states().values()):
                break
            time.sleep(0.5)
        for proc in self.sruns:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                proc.wait(timeout=5)


@pytest.fixture
def slurm_jobs(slurm: SlurmCluster, hq_env: HqEnv) -> Iterator[SlurmJobs]:
    """Set up after ``hq_env`` and so torn down before it checks for leftover processes."""
    jobs = SlurmJobs(slurm, hq_env)
    try:
        yield jobs
    finally:
        jobs.cancel()


def wait_for_worker(hq_env: HqEnv, jobs: SlurmJobs, hostname: str) -> dict:
    """The JSON of the worker ``hostname`` once it has registered from inside Slurm."""

    def registered() -> dict | None:
        for worker in hq_env.json(["worker", "list"]):
            if worker["configuration"]["hostname"] == hostname:
                return worker
        return None

    def still_coming() -> None:
        states = set(jobs.states().values())
        assert not states or states & SLURM_ACTIVE, f"the Slurm job ended: {states}"

    return hq_env.wait_until(registered, f"worker {hostname} to register from Slurm",
                             timeout=SLURM_START_TIMEOUT, check=still_coming, interval=0.5)


def test_slurm_batch_job_detected(hq_env: HqEnv, slurm_jobs: SlurmJobs) -> None:
    hq_env.start_server()
    job = slurm_jobs.sbatch(slurm_jobs.worker_argv("in-slurm"), "--time=10")
    worker = wait_for_worker(hq_env, slurm_jobs, "in-slurm")
    assert worker["allocation"] == {"manager": "Slurm", "id": job}
    config = worker["configuration"]
    assert config["group"] == job
    # --time=10 is 10 minutes, less the seconds the job has run when the worker asked.
    assert 9 * 60 < config["time_limit"] <= 10 * 60

    table = worker_table(hq_env, worker["id"])
    assert table.get("Manager") == "SLURM"
    assert table.get("Manager Job ID") == job
    assert table.get("Group") == job
    limit = table.get("Time Limit")
    assert limit == "10m" or limit.startswith("9m "), limit
    listed = hq_env.command(["worker", "list"], as_table=True)
    assert listed.column("Manager") == ["SLURM"]
    assert listed.column("Manager Job ID") == [job]

    # It runs tasks like any worker.
    hq_env.command(["submit", "--", "bash", "-c", "echo $SLURM_JOB_ID > job-id"])
    hq_env.wait_for_job_state(1, "FINISHED", timeout=30)
    assert (hq_env.work / "job-id").read_text().strip() == job


def test_hq_node_in_srun_step_with_explicit_options(hq_env: HqEnv,
                                                    slurm_jobs: SlurmJobs) -> None:
    hq_env.start_server()
    slurm_jobs.srun(slurm_jobs.worker_argv("in-srun", "--manager=slurm", "--group=mine",
                                           "--time-limit=2m", node=True), "--time=10")
    worker = wait_for_worker(hq_env, slurm_jobs, "in-srun")
    job = slurm_jobs.job_id()
    assert worker["allocation"] == {"manager": "Slurm", "id": job}
    assert worker["configuration"]["group"] == "mine"
    assert worker["configuration"]["time_limit"] == 120.0  # explicit wins
    table = worker_table(hq_env, worker["id"])
    assert table.get("Time Limit") == "2m"
    assert "SLURM environment detected" in next(hq_env.logs.glob("srun-*.log")).read_text()


@pytest.mark.slow
def test_tasks_of_a_node_at_its_allocation_limit_run_elsewhere(hq_env: HqEnv,
                                                               slurm_jobs: SlurmJobs) -> None:
    """A node in a one-minute allocation stops at its derived time limit (or Slurm kills it up
    to 30 s later); its running task runs again, to the end, on a worker outside Slurm."""
    hq_env.start_server()
    slurm_jobs.sbatch(slurm_jobs.worker_argv("short-lived"), "--time=1")
    worker = wait_for_worker(hq_env, slurm_jobs, "short-lived")
    assert worker["configuration"]["time_limit"] <= 60
    # The first instance runs until killed; the next one finishes at once.
    hq_env.command(["submit", "--", "bash", "-c",
                    'echo "$HQ_INSTANCE_ID" >> instances; '
                    '[ "$HQ_INSTANCE_ID" = 0 ] && exec sleep 600; exit 0'])
    hq_env.wait_for_tasks(1, "running", timeout=30)
    hq_env.start_worker(hostname="outside")

    hq_env.wait_for_job_state(1, "FINISHED", timeout=150)
    [task] = hq_env.json(["task", "info", "1", "0"])
    assert task["state"] == "finished"
    [other] = [w for w in hq_env.json(["worker", "list"])
               if w["configuration"]["hostname"] == "outside"]
    assert task["worker"] == other["id"]
    assert (hq_env.work / "instances").read_text().split() == ["0", "1"]
    # Its own limit, derived from the allocation, ends it before Slurm does.
    assert hq_env.worker_states()[worker["id"]] == "TIME LIMIT REACHED"
