"""`hq job submit-file FILE.toml` against a real server and workers (spec/jobs.md §12,
conformance.md "Directives, job files, open jobs")."""

from __future__ import annotations

import textwrap
from pathlib import Path

from harness import HqEnv
from job_helpers import SUBMITTED, job_info, task_info

# -- steps ---------------------------------------------------------------------------------


def write(env: HqEnv, text: str, name: str = "job.toml") -> Path:
    path = env.work / name
    path.write_text(textwrap.dedent(text))
    return path


def submit_file(env: HqEnv, text: str, *args: str, name: str = "job.toml") -> int:
    """Write the file into the submit dir, submit it, return the new job's id."""
    write(env, text, name)
    output = env.command(["job", "submit-file", *args, name])
    match = SUBMITTED.search(output)
    assert match, f"no job id in:\n{output}"
    return int(match.group(1))


def stdout_of(env: HqEnv, job: int, task: int) -> str:
    return (env.work / f"job-{job}" / f"{task}.stdout").read_text()


def raw_cell(text: str, key: str) -> str:
    """A multi-line cell of a vertical table, blank lines included (`Table` drops them)."""
    lines: list[str] = []
    for line in text.splitlines():
        if not line.startswith("|"):
            if lines:
                break
            continue
        name, value = (cell.strip() for cell in line.strip("|").split("|", 1))
        if name == key or (lines and not name):
            lines.append(value)
        elif lines:
            break
    return "\n".join(lines)


def task_row(env: HqEnv, job: int, task: int, key: str) -> str:
    (table,) = task_info(env, job, str(task))
    return table.get(key)


# -- running tasks ---------------------------------------------------------------------------


def test_minimal_file_runs_its_task_as_task_one(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    toml = """
        [[task]]
        command = ["bash", "-c", "echo hello $HQ_TASK_ID"]
    """
    job = submit_file(hq_env, toml)
    assert job == 1
    hq_env.wait_for_job_state(1, "FINISHED")
    assert hq_env.task_states(1) == {1: "finished"}
    assert stdout_of(hq_env, 1, 1) == "hello 1\n"
    info = job_info(hq_env, 1)
    assert info.get("Name") == ""
    assert info.get("Submission directory") == str(hq_env.work)


def test_json_output_gives_the_job_id(hq_env: HqEnv) -> None:
    hq_env.start_server()
    write(hq_env, '[[task]]\ncommand = ["true"]\n')
    assert hq_env.json(["job", "submit-file", "job.toml"]) == {"id": 1}
    assert hq_env.command(["--output-mode=quiet", "job", "submit-file", "job.toml"]) == "2\n"


MAXIMAL = """
    name = "test-job"
    max_fails = 11

    [[task]]
    id = 12
    command = ["sleep", "0"]
    pin = "none"
    time_limit = "1m 10s"
    priority = -1
    crash_limit = 12
    task_dir = true

    [[task.request]]
    n_nodes = 2

    [[task]]
    id = 200
    command = ["bash", "-c", "echo $ABC-$XYZ; cat"]
    cwd = "test-200"
    env = { "ABC" = "123", "XYZ" = "aaaa" }
    stdin = "Hello world!"

    [[task.request]]
    resources = { "cpus" = "4 compact!", "gpus" = 2 }
    time_request = "10s"
    weight = 11.2

    [[task]]
    id = 14
    command = ["bash", "-c", "echo $HQ_RESOURCE_REQUEST_gpus"]
    stderr = { path = "err-%{TASK_ID}", on_close = "rm-if-finished" }

    [[task.request]]
    resources = { "gpus" = 1.1 }
"""


def test_maximal_file_shows_every_setting(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=4, args=["--resource", "gpus=[0,1]"])
    submit_file(hq_env, MAXIMAL)
    hq_env.wait_for_tasks(1, "finished", count=2)
    assert job_info(hq_env, 1).get("Name") == "test-job"

    (t12,) = task_info(hq_env, 1, "12")
    assert t12.get("State") == "WAITING"  # needs two nodes, there is one worker
    assert t12.get("Pin") == "none"
    assert t12.get("Time limit") == "1m 10s"
    assert t12.get("Priority") == "-1"
    assert t12.get("Crash limit") == "12"
    assert t12.get("Task dir") == "yes"
    assert t12.get("Resources") == "nodes: 2"

    (t200,) = task_info(hq_env, 1, "200")
    assert t200.get("Resources") == "cpus: 4 compact!\ngpus: 2 compact\n[weight: 11.2]"
    assert t200.get("Stdout").endswith("/test-200/job-1/200.stdout")
    assert t200.get("Environment") == "ABC=123\nXYZ=aaaa"
    assert t200.get("Priority") == "0" and t200.get("Crash limit") == "5"
    out = hq_env.work / "test-200" / "job-1" / "200.stdout"
    assert out.read_text() == "123-aaaa\nHello world!"

    (t14,) = task_info(hq_env, 1, "14")
    assert t14.get("Resources") == "gpus: 1.1 compact"
    assert stdout_of(hq_env, 1, 14) == "1.1 compact\n"
    assert not (hq_env.work / "err-14").exists()  # removed: the task finished


def test_tasks_without_ids_continue_after_the_largest_id(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    toml = """
        [[task]]
        command = ["echo", "a"]
        [[task]]
        id = 12
        command = ["echo", "b"]
        [[task]]
        id = 3
        command = ["echo", "c"]
        [[task]]
        command = ["echo", "d"]
        [[task]]
        command = ["echo", "e"]
    """
    submit_file(hq_env, toml)
    hq_env.wait_for_job_state(1, "FINISHED")
    assert job_info(hq_env, 1).get("Tasks") == "5; Ids: 3,12-15"
    outputs = {task: stdout_of(hq_env, 1, task) for task in (13, 12, 3, 14, 15)}
    assert outputs == {13: "a\n", 12: "b\n", 3: "c\n", 14: "d\n", 15: "e\n"}


# -- arrays --------------------------------------------------------------------------------


def test_array_ids(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    toml = """
        [array]
        ids = "2, 10-14, 120"
        command = ["bash", "-c", "echo $HQ_TASK_ID"]
    """
    submit_file(hq_env, toml)
    hq_env.wait_for_job_state(1, "FINISHED")
    info = job_info(hq_env, 1)
    assert info.get("Tasks") == "7; Ids: 2,10-14,120"
    assert info.get("Resources") == "cpus: 1 compact"  # an array shows its shared rows
    for task in (2, 10, 11, 12, 13, 14, 120):
        assert stdout_of(hq_env, 1, task) == f"{task}\n"


def test_array_entries_number_tasks_from_zero(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    toml = """
        [array]
        entries = ["a", "bb", "ccc"]
        command = ["bash", "-c", "echo $HQ_ENTRY"]
    """
    submit_file(hq_env, toml)
    hq_env.wait_for_job_state(1, "FINISHED")
    assert {t: stdout_of(hq_env, 1, t) for t in range(3)} == {0: "a\n", 1: "bb\n", 2: "ccc\n"}


def test_array_ids_pair_with_entries(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    toml = """
        [array]
        ids = "2,10-12"
        entries = ["a", "bb", "ccc", "x"]
        command = ["bash", "-c", "echo $HQ_ENTRY"]
    """
    submit_file(hq_env, toml)
    hq_env.wait_for_job_state(1, "FINISHED")
    assert hq_env.task_states(1) == dict.fromkeys((2, 10, 11, 12), "finished")
    outputs = {t: stdout_of(hq_env, 1, t) for t in (2, 10, 11, 12)}
    assert outputs == {2: "a\n", 10: "bb\n", 11: "ccc\n", 12: "x\n"}


# -- dependencies ----------------------------------------------------------------------------


def test_dependencies_row_and_failure_propagation(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    toml = """
        [[task]]
        id = 0
        command = ["bash", "-c", "exit 1"]
        [[task]]
        id = 1
        deps = [0]
        command = ["true"]
        [[task]]
        id = 2
        deps = [1]
        command = ["true"]
        [[task]]
        id = 3
        command = ["true"]
        [[task]]
        id = 4
        deps = [1, 3]
        command = ["true"]
    """
    submit_file(hq_env, toml)
    hq_env.wait_for_job_state(1, "FAILED")
    assert hq_env.task_states(1) == {
        0: "failed",
        1: "aborted",
        2: "aborted",
        3: "finished",
        4: "aborted",
    }
    assert task_row(hq_env, 1, 4, "Dependencies") == "1,3"
    assert task_row(hq_env, 1, 3, "Dependencies") == ""


def test_unordered_dependencies_run_in_dependency_order(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    order = hq_env.work / "order"
    step = f"echo $HQ_TASK_ID >> {order}"
    toml = f"""
        [[task]]
        id = 3
        deps = [2]
        command = ["bash", "-c", "{step}"]
        [[task]]
        id = 2
        deps = [1]
        command = ["bash", "-c", "sleep 0.2; {step}"]
        [[task]]
        id = 1
        command = ["bash", "-c", "sleep 0.2; {step}"]
    """
    submit_file(hq_env, toml)
    hq_env.wait_for_job_state(1, "FINISHED")
    assert order.read_text() == "1\n2\n3\n"


# -- open jobs, streaming, variants ----------------------------------------------------------


def test_attach_to_an_open_job(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    hq_env.command(["job", "open"])
    write(hq_env, '[[task]]\nid = 1\ncommand = ["true"]\n', "first.toml")
    write(
        hq_env,
        "".join(f'[[task]]\nid = {i}\ncommand = ["true"]\n' for i in (3, 4, 5)),
        "second.toml",
    )
    for name in ("first.toml", "second.toml"):
        output = hq_env.command(["job", "submit-file", "--job", "1", name])
        assert "Job submitted successfully, job ID: 1" in output
    assert job_info(hq_env, 1).get("Tasks") == "4; Ids: 1,3-5"
    hq_env.wait_for_tasks(1, "finished", count=4)
    hq_env.command(["job", "close", "1"])
    hq_env.wait_for_job_state(1, "FINISHED")
    hq_env.command(
        ["job", "submit-file", "--job", "1", "first.toml"], expect_fail="Job 1 is not opened."
    )
    hq_env.command(
        ["job", "submit-file", "--job", "7", "first.toml"], expect_fail="Job 7 not found."
    )


def test_array_ids_with_entries_keep_their_ids_in_an_open_job(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    hq_env.command(["job", "open"])
    write(hq_env, '[[task]]\nid = 0\ncommand = ["true"]\n', "first.toml")
    hq_env.command(["job", "submit-file", "--job", "1", "first.toml"])
    toml = """
        [array]
        ids = "7-8"
        entries = ["x", "y"]
        command = ["bash", "-c", "echo $HQ_ENTRY"]
    """
    submit_file(hq_env, toml, "--job", "1")
    hq_env.wait_for_tasks(1, "finished", count=3)
    assert job_info(hq_env, 1).get("Tasks") == "3; Ids: 0,7-8"
    assert (stdout_of(hq_env, 1, 7), stdout_of(hq_env, 1, 8)) == ("x\n", "y\n")


def test_stream_collects_the_output_of_every_task(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    toml = """
        stream = "log"
        [[task]]
        command = ["bash", "-c", "echo out-$HQ_TASK_ID"]
        [[task]]
        command = ["bash", "-c", "echo kept-$HQ_TASK_ID"]
        stdout = "kept.txt"
    """
    submit_file(hq_env, toml)
    hq_env.wait_for_job_state(1, "FINISHED")
    assert list((hq_env.work / "log").glob("*.hqs"))
    assert not (hq_env.work / "job-1").exists()
    assert (hq_env.work / "kept.txt").read_text() == "kept-2\n"
    shown = hq_env.command(["output-log", "log", "cat", "1", "stdout"])
    assert shown == "out-1\n"


def test_variants_choose_what_the_worker_has(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=4, args=["--resource", "x=[0,1]"])
    report = (
        "echo $HQ_RESOURCE_REQUEST_cpus,$HQ_RESOURCE_REQUEST_gpus,"
        "$HQ_RESOURCE_REQUEST_x,$HQ_RESOURCE_VARIANT"
    )
    toml = f"""
        [[task]]
        command = ["bash", "-c", "{report}"]

        [[task.request]]
        resources = {{ cpus = 8 }}
        weight = 2

        [[task.request]]
        resources = {{ cpus = 1, gpus = 1 }}

        [[task.request]]
        resources = {{ cpus = 4, x = 1 }}
    """
    submit_file(hq_env, toml)
    hq_env.wait_for_job_state(1, "FINISHED")
    assert stdout_of(hq_env, 1, 1) == "4 compact,,1 compact,2\n"
    resources = raw_cell(hq_env.command(["task", "info", "1", "1"]), "Resources")
    assert resources.startswith("# Variant 1\ncpus: 8 compact\n[weight: 2]\n\n# Variant 2\n")
    assert "\n\n# Variant 3\ncpus: 4 compact\nx: 1 compact" in resources


def test_multi_node_task_gets_its_nodes(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=1, hostname="node-a")
    hq_env.start_worker(cpus=1, hostname="node-b")
    toml = """
        [[task]]
        command = ["bash", "-c", "echo $HQ_NUM_NODES; cat $HQ_NODE_FILE"]
        [[task.request]]
        n_nodes = 2
    """
    submit_file(hq_env, toml)
    hq_env.wait_for_job_state(1, "FINISHED")
    lines = stdout_of(hq_env, 1, 1).splitlines()
    assert lines[0] == "2" and sorted(lines[1:]) == ["node-a", "node-b"]


# -- refusals --------------------------------------------------------------------------------


def refused(env: HqEnv, text: str, expected: str, *args: str) -> str:
    """A file `hq job submit-file` refuses: exit code 1, the text, and no job created."""
    write(env, text)
    result = env.run(["job", "submit-file", *args, "job.toml"])
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 1, output
    assert expected in output, output
    return output


def test_bad_files_are_refused_with_their_line(hq_env: HqEnv) -> None:
    hq_env.start_server()
    cycle = """
        [[task]]
        id = 1
        deps = [2]
        command = ["true"]
        [[task]]
        id = 2
        deps = [1]
        command = ["true"]
    """
    refused(
        hq_env,
        cycle,
        "job.toml:4: Task 1 is part of dependency cycle or has an invalid dependencies",
    )
    refused(
        hq_env,
        '[[task]]\ncommand = ["a"]\n[array]\nids = "1"\ncommand = ["b"]\n',
        "job.toml:3: Definition of array job and individual task cannot be mixed",
    )
    refused(hq_env, 'name = "x"\n', "job.toml: No tasks defined")
    refused(
        hq_env,
        '[[task]]\nid = 2\ncommand = ["a"]\n[[task]]\nid = 2\ncommand = ["b"]\n',
        "job.toml:5: Task 2 is defined multiple times",
    )
    refused(
        hq_env,
        '[array]\nids = "1-3"\nentries = ["a"]\ncommand = ["b"]\n',
        "job.toml:3: Items 'ids' and 'entries' does not match",
    )
    refused(
        hq_env,
        '[array]\ncommand = ["b"]\n',
        "job.toml:1: One of attributes of array must be defined: 'ids', 'entries'",
    )
    refused(
        hq_env,
        '[[task]]\ncommand = ["a"]\ntime_limt = "1s"\n',
        "job.toml:3: unknown field `task.time_limt`, expected one of",
    )
    refused(hq_env, '[[task]]\ncommand = ["a"\n', "job.toml:2: ")
    assert hq_env.command(["job", "list", "--all"], as_table=True).rows == []


def test_dependency_on_a_task_outside_the_file_is_refused_also_for_open_jobs(
    hq_env: HqEnv,
) -> None:
    hq_env.start_server()
    hq_env.command(["job", "open"])
    write(hq_env, '[[task]]\nid = 1\ncommand = ["true"]\n', "first.toml")
    hq_env.command(["job", "submit-file", "--job", "1", "first.toml"])
    refused(
        hq_env,
        '[[task]]\nid = 2\ndeps = [1]\ncommand = ["true"]\n',
        "job.toml:3: Task 2 is part of dependency cycle",
        "--job",
        "1",
    )
    assert job_info(hq_env, 1).get("Tasks") == "1; Ids: 1"


def test_unreadable_file(hq_env: HqEnv) -> None:
    missing = hq_env.work / "missing.toml"
    result = hq_env.run(["job", "submit-file", str(missing)])
    assert result.returncode == 1
    assert (
        (result.stdout + result.stderr)
        .decode()
        .strip()
        .endswith(f"Cannot read {missing}: No such file or directory (os error 2)")
    )
