"""Where a submit's tasks and options come from: `#HQ` directives, `--each-line`,
`--from-json` and `--stdin` (spec/jobs.md §3, §4.4, §11; cli.md §5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from harness import HqEnv
from job_helpers import job_info, submit

INVALID_DIRECTIVE = "You have used invalid parameter(s) after a #HQ directive.\n"
STDIN_MESSAGE = "Reading data from stdin. In the interactive mode press Ctrl-D to submit.\n"
SEVEN = ["One", "Two", "Three", "Four", "Five", "Six", "Seven"]


def write_script(env: HqEnv, name: str, text: str, executable: bool = False) -> Path:
    path = env.work / name
    path.write_text(text)
    path.chmod(0o755 if executable else 0o644)
    return path


def outputs(env: HqEnv, job: int) -> dict[int, str]:
    """Task id -> stdout, for every stdout file of the job."""
    return {
        int(p.name.split(".")[0]): p.read_bytes().decode(errors="replace")
        for p in (env.work / f"job-{job}").glob("*.stdout")
    }


# --- directives -------------------------------------------------------------------------------

ABC = '#!/bin/bash\n#HQ --name abc --array=1-10\n#HQ --cpus="2 compact"\n\necho $HQ_TASK_ID\n'


def test_directives_set_name_resources_and_array(hq_env: HqEnv) -> None:
    hq_env.start_server()
    write_script(hq_env, "test.sh", ABC)
    submit(hq_env, ["test.sh"])
    info = job_info(hq_env, 1)
    assert info.get("Name") == "abc"
    assert info.get("Resources") == "cpus: 2 compact"
    assert info.get("Tasks") == "10; Ids: 1-10"
    # The shebang's interpreter is prepended, so a non-executable script still runs.
    assert info.get("Command") == "/bin/bash\ntest.sh"


def test_command_line_name_and_task_source_win(hq_env: HqEnv) -> None:
    hq_env.start_server()
    write_script(hq_env, "test.sh", ABC)
    (hq_env.work / "input").write_text("a\nb\nc\nd\ne\n")
    submit(hq_env, ["--name=xyz", "test.sh"])
    submit(hq_env, ["--each-line", "input", "test.sh"])
    first, second = job_info(hq_env, 1), job_info(hq_env, 2)
    assert first.get("Name") == "xyz"
    assert first.get("Tasks") == "10; Ids: 1-10"
    assert second.get("Name") == "abc"
    assert second.get("Tasks") == "5; Ids: 0-4"
    assert second.get("Resources") == "cpus: 2 compact"


def test_command_line_priority_overrides_the_directive(hq_env: HqEnv) -> None:
    hq_env.start_server()
    write_script(hq_env, "test.sh", "#HQ --priority 100\nhostname\n")
    submit(hq_env, ["test.sh"])
    submit(hq_env, ["--priority", "8", "test.sh"])
    assert job_info(hq_env, 1).get("Priority") == "100"
    assert job_info(hq_env, 2).get("Priority") == "8"


def test_directives_and_shebang_run_the_script(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    write_script(
        hq_env,
        "test.sh",
        "#!/bin/bash\n# comment\n\n#HQ --array 1-3 --env X=dir\n"
        "echo $X-$HQ_TASK_ID\n#HQ --name never\n",
    )
    submit(hq_env, ["--wait", "test.sh"])
    assert hq_env.job_states() == {1: "FINISHED"}
    info = job_info(hq_env, 1)
    assert info.get("Name") == "bash"  # HQ's quirk: the name of the prepended interpreter
    assert outputs(hq_env, 1) == {1: "dir-1\n", 2: "dir-2\n", 3: "dir-3\n"}


def test_directives_off_leaves_script_and_shebang_alone(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    write_script(hq_env, "test.sh", "#!/bin/bash\n#HQ --name abc\necho hi\n")
    submit(hq_env, ["--directives=off", "--wait", "./test.sh"])
    info = job_info(hq_env, 1)
    assert info.get("Name") == "test.sh"
    out = hq_env.command(["job", "info", "1"])
    assert "The script that you have tried to execute (`./test.sh`) is not executable." in out


def test_directives_file_mode_reads_any_program(hq_env: HqEnv) -> None:
    hq_env.start_server()
    write_script(hq_env, "job.py", "#!/usr/bin/env python3\n#HQ --name from-file\nprint(1)\n")
    submit(hq_env, ["job.py"])
    submit(hq_env, ["--directives=file", "job.py"])
    assert job_info(hq_env, 1).get("Name") == "job.py"
    second = job_info(hq_env, 2)
    assert second.get("Name") == "from-file"
    assert second.get("Command") == "/usr/bin/env\npython3\njob.py"


def test_invalid_directive_fails_the_submit(hq_env: HqEnv) -> None:
    hq_env.start_server()
    write_script(hq_env, "test.sh", "#HQ --foo\nhostname\n")
    out = hq_env.command(["submit", "test.sh"], expect_fail=INVALID_DIRECTIVE)
    assert f"{INVALID_DIRECTIVE}error: unexpected argument '--foo' found" in out
    assert hq_env.job_states() == {}


@pytest.mark.parametrize(
    "flag", ["--wait", "--progress", "--stdin", "--job 1", "--directives=off", "--on-notify=echo"]
)
def test_client_options_are_invalid_in_directives(hq_env: HqEnv, flag: str) -> None:
    hq_env.start_server()
    write_script(hq_env, "test.sh", f"#HQ --name a {flag}\nhostname\n")
    name = flag.split()[0].split("=")[0]
    hq_env.command(
        ["submit", "test.sh"],
        expect_fail=f"{INVALID_DIRECTIVE}error: unexpected argument '{name}' found",
    )


def test_directives_stdin_needs_stdin(hq_env: HqEnv) -> None:
    hq_env.start_server()
    result = hq_env.run(["submit", "--directives=stdin", "bash"])
    assert result.returncode == 1
    assert result.stderr.decode() == (
        "You have to use `--stdin` when you specify `--directives=stdin`.\n"
    )
    assert result.stdout == b""


def test_directives_from_stdin(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    script = b"#!/bin/nonexistent\n#HQ --name from-stdin\n#HQ --array 1-3\necho task $HQ_TASK_ID\n"
    submit(hq_env, ["--stdin", "--directives=stdin", "--wait", "bash"], stdin=script)
    info = job_info(hq_env, 1)
    assert info.get("Name") == "from-stdin"
    assert info.get("Command") == "bash"  # no shebang with --stdin
    assert outputs(hq_env, 1) == {i: f"task {i}\n" for i in (1, 2, 3)}


# --- --each-line ------------------------------------------------------------------------------


def test_each_line_with_array_filter(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    (hq_env.work / "input").write_text("\n".join(SEVEN) + "\n")
    out = hq_env.command(
        [
            "submit",
            "--each-line",
            "input",
            "--array",
            "2-4, 6",
            "--wait",
            "--",
            "bash",
            "-c",
            "echo $HQ_ENTRY,$HQ_TASK_ID",
        ]
    )
    assert "Reading file: input" in out
    assert outputs(hq_env, 1) == {2: "Three,2\n", 3: "Four,3\n", 4: "Five,4\n", 6: "Seven,6\n"}
    assert job_info(hq_env, 1).get("Tasks") == "4; Ids: 2-4,6"


def test_each_line_lines_empty_lines_and_trailing_newline(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    (hq_env.work / "trailing").write_bytes(b"a\n\n b \n\nc\n")
    (hq_env.work / "bare").write_bytes(b"x\r\ny")
    command = ["--", "bash", "-c", 'printf "[%s]" "$HQ_ENTRY"']
    submit(hq_env, ["--each-line", "trailing", "--wait", *command])
    submit(hq_env, ["--each-line", "bare", "--wait", *command])
    assert outputs(hq_env, 1) == {0: "[a]", 1: "[]", 2: "[ b ]", 3: "[]", 4: "[c]"}
    assert outputs(hq_env, 2) == {0: "[x\r]", 1: "[y]"}


def test_each_line_accepts_non_utf8_bytes(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    (hq_env.work / "input").write_bytes(b"ok\n\xff\xferaw\nend\n")
    submit(
        hq_env, ["--each-line", "input", "--wait", "--", "bash", "-c", 'printf "%s" "$HQ_ENTRY"']
    )
    assert hq_env.job_states() == {1: "FINISHED"}
    assert job_info(hq_env, 1).get("Tasks") == "3; Ids: 0-2"
    out = outputs(hq_env, 1)
    assert (out[0], out[2]) == ("ok", "end")
    assert out[1].endswith("raw")


def test_each_line_passes_raw_bytes_to_the_task(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    (hq_env.work / "input").write_bytes(b"\xff\xferaw\n")
    submit(
        hq_env, ["--each-line", "input", "--wait", "--", "bash", "-c", 'printf "%s" "$HQ_ENTRY"']
    )
    assert (hq_env.work / "job-1" / "0.stdout").read_bytes() == b"\xff\xferaw"


def test_each_line_and_from_json_are_exclusive(hq_env: HqEnv) -> None:
    (hq_env.work / "input").write_text("a\n")
    (hq_env.work / "input.json").write_text("[1]")
    result = hq_env.run(["submit", "--each-line", "input", "--from-json", "input.json", "true"])
    assert result.returncode == 2
    assert b"--from-json" in result.stderr


# --- --from-json ------------------------------------------------------------------------------


def test_from_json_with_array_filter_drops_ids_beyond_the_entries(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    (hq_env.work / "input.json").write_text(json.dumps(SEVEN))
    out = hq_env.command(
        [
            "submit",
            "--from-json",
            "input.json",
            "--array",
            "2-3, 5, 6, 7, 1000",
            "--wait",
            "--",
            "bash",
            "-c",
            "echo $HQ_ENTRY,$HQ_TASK_ID",
        ]
    )
    assert "Reading json file: input.json" in out
    assert outputs(hq_env, 1) == {
        2: '"Three",2\n',
        3: '"Four",3\n',
        5: '"Six",5\n',
        6: '"Seven",6\n',
    }
    assert job_info(hq_env, 1).get("State") == "[" + "#" * 40 + "]\nFINISHED (4)"


def test_from_json_entries_are_compact_with_sorted_keys(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    document = '[123, {"x": [1, 2, 3], "a": {"z": null, "b": true}}, 2.5, "Three", [ ], "žluť"]'
    (hq_env.work / "input.json").write_text(document, encoding="utf-8")
    submit(
        hq_env,
        ["--from-json", "input.json", "--wait", "--", "bash", "-c", 'printf "%s" "$HQ_ENTRY"'],
    )
    assert outputs(hq_env, 1) == {
        0: "123",
        1: '{"a":{"b":true,"z":null},"x":[1,2,3]}',
        2: "2.5",
        3: '"Three"',
        4: "[]",
        5: '"žluť"',
    }


@pytest.mark.parametrize("document", ['{"a": 1}', "7", '"text"'])
def test_from_json_needs_a_top_level_array(hq_env: HqEnv, document: str) -> None:
    hq_env.start_server()
    (hq_env.work / "input.json").write_text(document)
    hq_env.command(
        ["submit", "--from-json", "input.json", "true"],
        expect_fail="input.json: The top element of the provided JSON file has to be an array",
    )
    assert hq_env.job_states() == {}


# --- --stdin ----------------------------------------------------------------------------------


def test_stdin_message_comes_first_and_every_task_gets_the_data(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker(cpus=2)
    out = hq_env.command(
        ["submit", "--stdin", "--array", "1-3", "--wait", "--", "cat"],
        stdin=b"Hello\nstdin\x00bytes",
    )
    assert out.startswith(STDIN_MESSAGE)
    assert out.index(STDIN_MESSAGE) < out.index("Job submitted successfully, job ID: 1")
    for task in (1, 2, 3):
        assert (hq_env.work / "job-1" / f"{task}.stdout").read_bytes() == b"Hello\nstdin\x00bytes"


def test_task_reading_part_of_a_large_stdin_finishes(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    data = bytes(range(256)) * 400  # 100 KB, more than a pipe holds
    submit(hq_env, ["--stdin", "--wait", "--", "head", "-c", "10"], stdin=data)
    assert hq_env.job_states() == {1: "FINISHED"}
    assert (hq_env.work / "job-1" / "0.stdout").read_bytes() == data[:10]


def test_stdin_is_not_forwarded_without_the_flag(hq_env: HqEnv) -> None:
    hq_env.start_server()
    hq_env.start_worker()
    out = hq_env.command(["submit", "--wait", "--", "cat"], stdin=b"secret data")
    assert "Reading data from stdin" not in out
    assert hq_env.job_states() == {1: "FINISHED"}
    assert (hq_env.work / "job-1" / "0.stdout").read_bytes() == b""
