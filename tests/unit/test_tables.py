from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hqshm.cli.tables import (
    colorize_state,
    display_width,
    paint,
    render_horizontal,
    render_vertical,
)

JOB_HEADER = ["ID", "Name", "State", "Tasks"]


def test_horizontal_table() -> None:
    table = render_horizontal(
        JOB_HEADER,
        [["1", "bash", "FINISHED", "1"], ["12", "sleep", "WAITING", "100"]],
        right_align={0},
    )
    assert table == (
        "+----+-------+----------+-------+\n"
        "| ID | Name  | State    | Tasks |\n"
        "+----+-------+----------+-------+\n"
        "|  1 | bash  | FINISHED | 1     |\n"
        "| 12 | sleep | WAITING  | 100   |\n"
        "+----+-------+----------+-------+"
    )


def test_header_only_table_has_three_lines() -> None:
    assert render_horizontal(["Task ID", "State"], []) == (
        "+---------+-------+\n| Task ID | State |\n+---------+-------+"
    )


def test_right_aligned_column_keeps_its_header_left() -> None:
    table = render_horizontal(["Status", "Count"], [["RUNNING", "3"], ["WAITING", "12"]], {1})
    assert table.splitlines()[1] == "| Status  | Count |"
    assert table.splitlines()[3] == "| RUNNING |     3 |"


def test_multi_line_cells_continue_with_blank_cells() -> None:
    table = render_horizontal(
        ["Task ID", "Worker", "Error"],
        [["1", "node1\nnode2\n", "boom\n"], ["2", "", "x"]],
        right_align={0},
    )
    assert table == (
        "+---------+--------+-------+\n"
        "| Task ID | Worker | Error |\n"
        "+---------+--------+-------+\n"
        "|       1 | node1  | boom  |\n"
        "|         | node2  |       |\n"
        "|       2 |        | x     |\n"
        "+---------+--------+-------+"
    )


def test_vertical_table() -> None:
    table = render_vertical(
        [("Server UID", "aB3xQ9"), ("Client host", "login1"), ("State", "[##..]\nRUNNING (1)")]
    )
    assert table == (
        "+-------------+-------------+\n"
        "| Server UID  | aB3xQ9      |\n"
        "| Client host | login1      |\n"
        "| State       | [##..]      |\n"
        "|             | RUNNING (1) |\n"
        "+-------------+-------------+"
    )


def test_empty_values_render_as_spaces() -> None:
    assert render_vertical([("Cancel Reason", ""), ("Session", "open")]) == (
        "+---------------+------+\n"
        "| Cancel Reason |      |\n"
        "| Session       | open |\n"
        "+---------------+------+"
    )


def test_width_counts_wide_and_combining_characters() -> None:
    table = render_horizontal(["Name", "X"], [["日本", "e\u0301"], ["abc", "yy"]])
    assert table == (
        "+------+----+\n"
        "| Name | X  |\n"
        "+------+----+\n"
        "| 日本 | e\u0301  |\n"
        "| abc  | yy |\n"
        "+------+----+"
    )
    assert display_width("日本") == 4
    assert display_width("e\u0301") == 1
    assert display_width("\x1b[31mred\x1b[0m") == 3


def test_coloured_cells_are_padded_by_their_visible_width() -> None:
    table = render_horizontal(["State"], [[colorize_state("FAILED")], ["CANCELED"]])
    assert table.splitlines()[3] == "| \x1b[31mFAILED\x1b[0m   |"
    assert table.splitlines()[4] == "| CANCELED |"


def test_colour_makes_header_and_keys_bold() -> None:
    horizontal = render_horizontal(["ID", "Name"], [["1", "x"]], color=True)
    assert horizontal.splitlines()[1] == "| \x1b[1mID\x1b[0m | \x1b[1mName\x1b[0m |"
    assert horizontal.splitlines()[3] == "| 1  | x    |"
    vertical = render_vertical([("Key", "v"), ("Other", "w\nz")], color=True)
    assert vertical.splitlines()[1:4] == [
        "| \x1b[1mKey\x1b[0m   | v |",
        "| \x1b[1mOther\x1b[0m | w |",
        "|       | z |",
    ]


def test_no_escapes_without_colour() -> None:
    text = render_horizontal(JOB_HEADER, [["1", "a", "RUNNING", "1"]]) + render_vertical(
        [("a", "b"), ("c", "d")]
    )
    assert "\x1b" not in text


def test_state_colours() -> None:
    assert colorize_state("WAITING") == "\x1b[36mWAITING\x1b[0m"
    assert colorize_state("OPENED") == "\x1b[36mOPENED\x1b[0m"
    assert colorize_state("RUNNING") == "\x1b[33mRUNNING\x1b[0m"
    assert colorize_state("FINISHED") == "\x1b[32mFINISHED\x1b[0m"
    assert colorize_state("CANCELED") == "\x1b[35mCANCELED\x1b[0m"
    assert colorize_state("ABORTED") == "\x1b[34mABORTED\x1b[0m"
    assert colorize_state("RUNNING", "worker") == "\x1b[32mRUNNING\x1b[0m"
    assert colorize_state("CONNECTION LOST", "worker") == "\x1b[31mCONNECTION LOST\x1b[0m"
    assert colorize_state("RUNNING", "allocation") == "\x1b[34mRUNNING\x1b[0m"
    assert colorize_state("SOMETHING") == "SOMETHING"
    assert paint("", "red") == ""


def test_rows_must_match_the_header() -> None:
    with pytest.raises(ValueError):
        render_horizontal(["A", "B"], [["1"]])
    with pytest.raises(ValueError):
        render_horizontal([], [])


def parse_table(text: str) -> list[list[str]]:
    """How HQ's tests read tables: split rows on `|`, skip `+-` lines, join continuations."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("+-"):
            continue
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if rows and cells[0] == "":
            rows[-1] = [
                f"{old}\n{new}" if new else old for old, new in zip(rows[-1], cells, strict=True)
            ]
        else:
            rows.append(cells)
    return rows


def test_hq_style_parser_reads_back_what_was_rendered() -> None:
    rows = [["1", "a b", "x\ny"], ["22", "", "z"]]
    table = render_horizontal(["ID", "Name", "Value"], rows, right_align={0})
    assert parse_table(table) == [["ID", "Name", "Value"], *rows]
    assert not table.endswith("\n")


_words = st.text(alphabet="abcXYZ09-_./ 日", min_size=1, max_size=8).map(str.strip).filter(bool)
_cells = st.lists(_words, min_size=0, max_size=3).map("\n".join)


@given(st.lists(st.tuples(_words, _cells, _cells), max_size=5))
def test_rendered_tables_parse_back(rows: list[tuple[str, str, str]]) -> None:
    table = render_horizontal(["ID", "A", "B"], [list(row) for row in rows], right_align={0, 2})
    assert parse_table(table) == [["ID", "A", "B"], *[list(row) for row in rows]]
    widths = {display_width(line) for line in table.splitlines()}
    assert len(widths) == 1


def _reference_horizontal(header: list[str], rows: list[list[str]],
                          right_align: set[int]) -> str:
    """Every cell line by line and by display width: what the table looks like."""
    grid = [[cell.splitlines() or [""] for cell in row] for row in [header, *rows]]
    widths = [max(display_width(line) for row in grid for line in row[i])
              for i in range(len(header))]
    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [border]
    for number, row in enumerate(grid):
        for k in range(max(len(lines) for lines in row)):
            parts = []
            for i, lines in enumerate(row):
                text = lines[k] if k < len(lines) else ""
                pad = " " * (widths[i] - display_width(text))
                parts.append(pad + text if number and i in right_align else text + pad)
            out.append("| " + " | ".join(parts) + " |")
        if number == 0:
            out.append(border)
    if rows:
        out.append(border)
    return "\n".join(out)


@given(st.integers(1, 4).flatmap(lambda n: st.tuples(
    st.lists(st.text(max_size=6), min_size=n, max_size=n),
    st.lists(st.lists(st.one_of(st.text(alphabet="abc 12", max_size=8),
                                st.text(alphabet="x\n界\u0301é", max_size=5)),
                      min_size=n, max_size=n), max_size=6),
    st.sets(st.integers(0, n - 1)))))
def test_plain_rows_lay_out_as_cells_measured_one_by_one(
        table: tuple[list[str], list[list[str]], set[int]]) -> None:
    """Rows of plain ASCII take a fast path; mixed with others, the table is the same."""
    header, rows, right = table
    assert render_horizontal(header, rows, right_align=right) == _reference_horizontal(
        header, rows, right)
