"""`#HQ` directives: scanning, splitting, parsing and precedence (spec/jobs.md §11).

The precedence tests go through `submit.build_request`, the function `hq submit` runs before it
connects, so they check the request a server would receive without starting one.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hqshm.cli.commands.context import Context
from hqshm.cli.commands.submit import build_request
from hqshm.cli.parser import parse
from hqshm.cli.render import Output
from hqshm.cli.resourceview import request_lines
from hqshm.cli.submit import directives
from hqshm.cli.submit.directives import (
    SCAN_LIMIT,
    DirectivesNeedStdin,
    InvalidDirective,
    ScriptHead,
    parse_arguments,
    scan,
    split_arguments,
)
from hqshm.errors import UsageError
from hqshm.model.submission import ArraySubmission

INVALID = "You have used invalid parameter(s) after a #HQ directive.\n"

# --- scanning ---------------------------------------------------------------------------------


def test_hq_lines_give_arguments_in_order() -> None:
    head = scan(b'#HQ --name abc --array=1-10\n#HQ --cpus="2 compact"\nhostname\n')
    assert head == ScriptHead(("--name", "abc", "--array=1-10", "--cpus=2 compact"), ())


def test_scanning_skips_comments_and_empty_lines_and_stops_at_the_first_command() -> None:
    script = (
        b"# a comment\n\n   \n#HQ --name a\n#SBATCH -N 1\n#HQ --priority 3\necho\n#HQ --cpus 2\n"
    )
    assert scan(script).arguments == ("--name", "a", "--priority", "3")


def test_lines_are_left_trimmed_and_crlf_ends_are_dropped() -> None:
    script = b"  \t#HQ --name a\r\n\t#HQ --priority 3\r\n    true\r\n#HQ --cpus 2\r\n"
    assert scan(script).arguments == ("--name", "a", "--priority", "3")


@pytest.mark.parametrize(
    "line", [b"#HQ", b"#HQ\t--name a", b"#HQ--name a", b"#hq --name a", b"## HQ --name a"]
)
def test_only_hash_hq_space_starts_a_directive(line: bytes) -> None:
    assert scan(line + b"\n#HQ --priority 1\n").arguments == ("--priority", "1")


def test_an_indented_command_line_also_ends_the_header() -> None:
    assert scan(b"  echo hi\n#HQ --name a\n").arguments == ()


def test_only_the_first_32_kib_are_read() -> None:
    filler = b"#" + b"x" * 99 + b"\n"
    body = filler * (SCAN_LIMIT // len(filler))  # 32,700 bytes of comments
    inside = body + b"#HQ --name in\n"
    padding = b"#" * (SCAN_LIMIT - len(inside) - 1) + b"\n"
    head = inside + padding
    assert len(head) == SCAN_LIMIT
    assert scan(head + b"#HQ --priority 2\n").arguments == ("--name", "in")
    # A line that crosses the limit is cut where the limit falls.
    cut = b"#" * (SCAN_LIMIT - 20) + b"\n#HQ --name abcdefghijklmnopqrstuvwxyz\n"
    assert scan(cut).arguments == ("--name", "abcdefgh")  # 19 bytes left: 11 + 8


def test_invalid_utf8_is_read_lossily() -> None:
    head = scan(b"#HQ --name a\xffb\n")
    assert head.arguments == ("--name", "a\ufffdb")


def test_shebang_words_come_from_the_first_line_only() -> None:
    assert scan(b"#!/bin/bash -l\n#HQ --name a\n").shebang == ("/bin/bash", "-l")
    assert scan(b"#!/usr/bin/env  python3 \n").shebang == ("/usr/bin/env", "python3")
    assert scan(b"#HQ --name a\n#!/bin/bash\n").shebang == ()
    assert scan(b"#!\n").shebang == ()
    assert scan(b"").shebang == ()


def test_shebang_is_prepended_to_the_command() -> None:
    head = ScriptHead((), ("/bin/bash", "-l"))
    assert directives.with_shebang(["test.sh", "x"], head) == ["/bin/bash", "-l", "test.sh", "x"]
    assert directives.with_shebang(["test.sh"], ScriptHead()) == ["test.sh"]


@pytest.mark.parametrize(
    ("mode", "command", "expected"),
    [
        ("auto", ["job.sh"], True),
        ("auto", ["./dir/job.sh", "a"], True),
        ("auto", ["job.py"], False),
        ("auto", ["bash", "job.sh"], False),
        ("file", ["job.py"], True),
        ("off", ["job.sh"], False),
        ("stdin", ["job.sh"], False),
    ],
)
def test_which_modes_read_the_program_file(mode: str, command: list[str], expected: bool) -> None:
    assert directives.reads_file(mode, command) is expected


# --- splitting --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('--cpus="2 compact"', ["--cpus=2 compact"]),
        ('--name "a b c"', ["--name", "a b c"]),
        ("  --a \t --b  ", ["--a", "--b"]),
        ('""', [""]),
        ('--name ""', ["--name", ""]),
        ('a"b c"d', ["ab cd"]),
        ("a\\ b c", ["a\\ b", "c"]),
        ('"a \\" b"', ['a \\" b']),
        ('a\\"b c', ['a\\"b', "c"]),
        ("a\\\\ b", ["a\\\\", "b"]),
        ("x\\", ["x\\"]),
        ('"unterminated quote', ["unterminated quote"]),
        ("", []),
    ],
)
def test_split_arguments(text: str, expected: list[str]) -> None:
    assert split_arguments(text) == expected


_plain = st.text(
    st.characters(blacklist_characters='"\\', blacklist_categories=("Zs", "Zl", "Zp", "Cc")), min_size=1
)


@given(st.lists(_plain))
def test_plain_words_split_back(words: list[str]) -> None:
    assert split_arguments(" ".join(words)) == words


@given(st.lists(st.text(st.characters(blacklist_characters='"\\'))))
def test_quoted_words_split_back_whole(words: list[str]) -> None:
    assert split_arguments("\t".join(f'"{w}"' for w in words)) == words


# --- parsing ----------------------------------------------------------------------------------


def test_parse_returns_only_what_was_given() -> None:
    given_ = parse_arguments(
        [
            "--name",
            "abc",
            "--array=1-10",
            "--cpus=2 compact",
            "--task-dir",
            "--env",
            "A=1",
            "--priority",
            "-5",
            "--crash-limit",
            "never-restart",
        ]
    )
    assert given_ == {
        "name": "abc",
        "array": "1-10",
        "cpus": "2 compact",
        "task_dir": True,
        "env": ["A=1"],
        "priority": -5,
        "crash_limit": "never-restart",
    }
    assert parse_arguments([]) == {}


@pytest.mark.parametrize(
    "arguments",
    [
        ["--wait"],
        ["--progress"],
        ["--on-notify", "echo"],
        ["--on-notify=echo"],
        ["--stdin"],
        ["--directives", "off"],
        ["--directives=file"],
        ["--job", "1"],
        ["--job=1"],
    ],
)
def test_client_options_and_job_are_rejected_as_unknown(arguments: list[str]) -> None:
    with pytest.raises(InvalidDirective) as error:
        parse_arguments(["--name", "x", *arguments])
    flag = arguments[0].split("=")[0]
    assert str(error.value).startswith(f"{INVALID}error: unexpected argument '{flag}' found\n")
    assert error.value.exit_code == 1


@pytest.mark.parametrize(
    ("arguments", "found"),
    [
        (["--foo"], "--foo"),
        (["--foo=bar"], "--foo"),  # clap names the flag without its value
        (["--cpus", "2", "--foo=bar"], "--foo"),
        (["--cpus", "2", "extra"], "extra"),
        (["--prio", "3"], "--prio"),
        (["--help"], "--help"),
        (["--server-dir", "/x"], "--server-dir"),
        (["program"], "program"),
    ],
)
def test_unknown_flags_abbreviations_and_commands_are_rejected(
    arguments: list[str], found: str
) -> None:
    with pytest.raises(InvalidDirective) as error:
        parse_arguments(arguments)
    assert str(error.value).startswith(f"{INVALID}error: unexpected argument '{found}' found\n")


def test_bad_values_are_reported_with_the_parser_error() -> None:
    with pytest.raises(InvalidDirective) as error:
        parse_arguments(["--max-fails", "many"])
    assert str(error.value).startswith(f"{INVALID}error: argument --max-fails: invalid int value")
    with pytest.raises(InvalidDirective):
        parse_arguments(["--each-line", "a", "--from-json", "b"])


def test_directives_accept_every_submit_option_but_the_rejected_ones() -> None:
    """The directive parser is `hq submit`'s: an option added there is accepted here too."""
    parser = directives._directive_parser()
    submit_flags = {f for f in parse(["submit", "true"]).__dict__}  # every destination
    for dest in submit_flags - {
        "program",
        "command",
        "server_dir",
        "output_mode",
        "colors",
        "debug",
    }:
        flag = "--" + dest.replace("_", "-")
        assert flag in parser._option_string_actions, flag
    rejected = {f for f in directives.REJECTED}
    for flag in rejected:
        assert parser._option_string_actions[flag].help == "==SUPPRESS=="


# --- precedence, through the request `hq submit` would send -------------------------------------


def request(
    argv: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch, stdin: bytes | None = None
) -> ArraySubmission:
    monkeypatch.chdir(cwd)
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    return build_request(Context(parse(["submit", *argv]), Output("cli", False)))


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "job.sh"
    path.write_text(
        '#!/bin/bash\n#HQ --name abc --array=1-10\n#HQ --cpus="2 compact"\n'
        "#HQ --priority 100 --env A=script --env B=script --resource gpus=1\n"
        "#HQ --crash-limit 2 --task-dir --weight 3 --time-limit 5s\n"
        "hostname\n"
    )
    return path


def test_script_alone(script: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    req = request([str(script)], script.parent, monkeypatch)
    assert req.name == "abc"
    assert req.ids == ((1, 10, 1),)
    assert req.entries is None
    t = req.template
    assert request_lines(t.request) == "cpus: 2 compact\ngpus: 1 compact"
    assert t.request.variants[0].weight == 10_000  # a script's --weight is ignored
    assert t.priority == 100
    assert t.env == {"A": "script", "B": "script"}
    assert (t.crash_limit, t.task_dir, t.time_limit) == (2, True, 5.0)
    assert t.args == ("/bin/bash", str(script))


def test_command_line_single_values_win(script: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    req = request(
        [
            "--name=xyz",
            "--priority",
            "8",
            "--cpus",
            "1",
            "--crash-limit",
            "unlimited",
            "--time-limit",
            "1s",
            str(script),
        ],
        script.parent,
        monkeypatch,
    )
    assert (req.name, req.template.priority) == ("xyz", 8)
    assert request_lines(req.template.request) == "cpus: 1 compact\ngpus: 1 compact"
    assert (req.template.crash_limit, req.template.time_limit) == (0, 1.0)
    assert req.ids == ((1, 10, 1),)


def test_explicit_zero_priority_on_the_command_line_wins(
    script: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    req = request(["--priority", "0", str(script)], script.parent, monkeypatch)
    assert req.template.priority == 0


def test_repeatable_options_combine_and_command_line_env_wins(
    script: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    req = request(
        ["--env", "A=cli", "--env", "C=cli", "--resource", "mem=100", str(script)],
        script.parent,
        monkeypatch,
    )
    assert req.template.env == {"A": "cli", "B": "script", "C": "cli"}
    assert request_lines(req.template.request) == (
        "cpus: 2 compact\ngpus: 1 compact\nmem: 100 compact"
    )


def test_command_line_task_source_replaces_the_scripts(
    script: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (script.parent / "input").write_text("a\nb\nc\nd\ne\n")
    req = request(["--each-line", "input", str(script)], script.parent, monkeypatch)
    assert req.ids == ()
    assert req.entries == (b"a", b"b", b"c", b"d", b"e")
    req = request(["--array", "3", str(script)], script.parent, monkeypatch)
    assert (req.ids, req.entries) == (((3, 3, 1),), None)


def test_scripts_entries_are_filtered_by_its_own_array(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "input").write_text("a\nb\nc\n")
    path = tmp_path / "job.sh"
    path.write_text("#HQ --each-line input --array 1-2\nhostname\n")
    req = request([str(path)], tmp_path, monkeypatch)
    assert (req.ids, req.entries) == (((1, 2, 1),), (b"a", b"b", b"c"))


def test_command_line_weight_counts(script: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    req = request(["--weight", "2.5", str(script)], script.parent, monkeypatch)
    assert req.template.request.variants[0].weight == 25_000


def test_default_name_is_the_interpreter_when_a_shebang_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "plain.sh"
    path.write_text("#!/bin/bash -l\n#HQ --priority 1\necho\n")
    req = request(["plain.sh", "arg"], tmp_path, monkeypatch)
    assert req.name == "bash"
    assert req.template.args == ("/bin/bash", "-l", "plain.sh", "arg")


def test_mode_off_and_non_script_in_auto_mode_read_nothing(
    script: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    req = request(["--directives", "off", str(script)], script.parent, monkeypatch)
    assert (req.name, req.ids, req.template.args) == ("job.sh", (), (str(script),))
    other = script.with_name("job.py")
    other.write_bytes(script.read_bytes())
    req = request([str(other)], script.parent, monkeypatch)
    assert (req.name, req.ids) == ("job.py", ())
    req = request(["--directives=file", str(other)], script.parent, monkeypatch)
    assert (req.name, req.ids, req.template.args) == (
        "abc",
        ((1, 10, 1),),
        ("/bin/bash", str(other)),
    )


def test_a_missing_script_is_left_for_the_worker_to_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    req = request(["missing.sh"], tmp_path, monkeypatch)
    assert (req.name, req.template.args) == ("missing.sh", ("missing.sh",))


def test_invalid_directive_fails_the_submit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bad.sh"
    path.write_text("#HQ --foo\nhostname\n")
    with pytest.raises(InvalidDirective, match="unexpected argument '--foo' found"):
        request([str(path)], tmp_path, monkeypatch)


def test_unknown_flag_with_a_value_in_a_file_read_by_directives_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "job.txt"  # not *.sh: read only because of --directives=file
    path.write_text("#HQ --cpus 1\n#HQ --foo=bar\nhostname\n")
    with pytest.raises(InvalidDirective) as error:
        request(["--directives=file", str(path)], tmp_path, monkeypatch)
    lines = str(error.value).splitlines()
    assert lines[:2] == [
        "You have used invalid parameter(s) after a #HQ directive.",
        "error: unexpected argument '--foo' found",
    ]


def test_stdin_mode_needs_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DirectivesNeedStdin) as error:
        request(["--directives=stdin", "bash"], tmp_path, monkeypatch)
    assert str(error.value) == ("You have to use `--stdin` when you specify `--directives=stdin`.")


def test_stdin_mode_parses_stdin_and_applies_no_shebang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = b"#!/bin/sh\n#HQ --name from-stdin --cpus 2\necho hi\n"
    req = request(["--stdin", "--directives=stdin", "bash"], tmp_path, monkeypatch, stdin=data)
    assert req.name == "from-stdin"
    assert request_lines(req.template.request) == "cpus: 2 compact"
    assert req.template.args == ("bash",)
    assert req.template.stdin == data
    assert capsys.readouterr().out.startswith("Reading data from stdin.")


def test_stdin_with_a_script_reads_its_directives_but_not_its_shebang(
    script: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    req = request(["--stdin", str(script)], script.parent, monkeypatch, stdin=b"#HQ --name no\n")
    assert req.name == "abc"
    assert req.template.args == (str(script),)


def test_stdin_directives_are_not_read_in_other_modes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    req = request(["--stdin", "bash"], tmp_path, monkeypatch, stdin=b"#HQ --name no\n")
    assert req.name == "bash"


def test_command_line_parse_errors_stay_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UsageError):
        request(["--directives", "sometimes", "bash"], tmp_path, monkeypatch)
