"""Fuzzing what a peer or a user controls: the decoders of every link and the `hq` argument
parsers. The only allowed outcomes are a value or the error that names the input's fault
(``PeerError``/``VersionMismatch`` from a decoder, ``UserError`` from a parser); any other
exception is a crash, and an input that takes over a second is a hang.

The quick tests run with the suite; the slow ones feed 105,000 inputs in all with
`HQSHM_FUZZ_FULL=1 pytest -n 0 -m slow tests/unit/test_fuzz.py` (a tenth of that otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hqshm.cluster.codec import Registry
from hqshm.cluster.errors import PeerError, VersionMismatch
from hqshm.cluster.protocol import NODE_LINK
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_codec import ALL_SAMPLES, fields_of

from hqshm.cli import parser
from hqshm.errors import UserError
from hqshm.link.requests import CLIENT_LINK
from hqshm.model import arrays, durations, resourcespec
from hqshm.model.descriptor import parse_coupling
from hqshm.model.program import PROGRAM, ProgramSpec, Stdio
from hqshm.model.workerconfig import WORKER_CONFIG

QUICK_EXAMPLES = 200
# The slow tests: 3 x 25,000 frames, 25,000 argument values, 5,000 command lines (each builds
# its part of the argparse tree, ~15 ms): 105,000 inputs, about 4 minutes of CPU. The suite
# (and CI, whose 30 minutes it must fit) runs a tenth of them; HQSHM_FUZZ_FULL=1 runs all.
SCALE = 1.0 if os.environ.get("HQSHM_FUZZ_FULL") else 0.1
SLOW_FRAMES = int(25_000 * SCALE)
SLOW_VALUES = int(25_000 * SCALE)
SLOW_COMMAND_LINES = int(5_000 * SCALE)
DEADLINE_MS = 1000  # an input that takes longer is a hang

LINKS = {"client": CLIENT_LINK, "node": NODE_LINK, "program": PROGRAM,
         "worker-config": WORKER_CONFIG}


def fuzz(check: Callable[..., None], examples: int, *strategies: st.SearchStrategy[Any]
         ) -> int:
    """Run ``check`` on ``examples`` generated inputs, each within the deadline; returns how
    many inputs it ran (so that a test can show the count it promises)."""
    ran = 0

    @settings(max_examples=examples, deadline=DEADLINE_MS,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.tuples(*strategies))
    def run(case: tuple[Any, ...]) -> None:
        nonlocal ran
        ran += 1
        check(*case)

    run()
    return ran


# --- decoders -------------------------------------------------------------------------------
#
# Hypothesis picks the link, the sample and a seed; the values themselves come from a seeded
# ``random.Random``: drawing a nested value through hypothesis costs ~100 draws of ~50 us each,
# which would make 100,000 frames take an hour. A failure still reports its reproducing seed.

WORDS_OF_THE_LINKS = ["all", "last", "ids", "file", "none", "stream", "waiting", "failed",
                      "cpus", "gpus/nvidia", "taskset", "", "\0", "a\0b", "é", "x" * 300]
INTEGERS = [0, 1, -1, 2, 7, 255, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53 + 1, 2**63 - 1,
            -(2**63), 2**64 - 1, -(2**31)]
FLOATS = [0.0, -0.0, 1.5, -1.0, float("nan"), float("inf"), float("-inf"), 1e300, 5e-324]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A msgpack value: mostly scalars near the edges of their types, sometimes nested."""
    kind = rng.randrange(10 if depth < 4 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice(INTEGERS) if rng.random() < 0.5 else rng.randint(-5, 300)
    if kind == 3:
        return rng.choice(FLOATS) if rng.random() < 0.7 else rng.uniform(-1e9, 1e9)
    if kind in (4, 5):
        if rng.random() < 0.5:
            return rng.choice(WORDS_OF_THE_LINKS)
        return "".join(chr(rng.choice((0, 10, 45, 61, 97, 0xE9, 0x1F600)))
                       for _ in range(rng.randrange(8)))
    if kind == 6:
        return rng.randbytes(rng.randrange(12))
    if kind == 7:
        return rng.randrange(64)  # small: a tag, a count, an id
    if kind == 8:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(6))]
    keys = (rng.choice((rng.randrange(8), rng.choice(WORDS_OF_THE_LINKS), b"k"))
            for _ in range(rng.randrange(4)))
    return {key: random_value(rng, depth + 1) for key in keys}


def mutate(rng: random.Random, value: Any, depth: int = 0) -> Any:
    """``value`` with one place somewhere inside it replaced by a random value (the top level,
    a message's list of fields, stays a list)."""
    if depth == 0 and not value:
        return [random_value(rng)]
    if isinstance(value, list) and value and depth < 6 and (depth == 0 or rng.random() < 0.6):
        index = rng.randrange(len(value))
        return [*value[:index], mutate(rng, value[index], depth + 1), *value[index + 1:]]
    if isinstance(value, dict) and value and rng.random() < 0.5:
        key = rng.choice(list(value))
        return {**value, key: mutate(rng, value[key], depth + 1)}
    return random_value(rng)


def decode_or_refuse(link: Registry, data: bytes) -> None:
    """The one property: a message, or the peer's fault."""
    with contextlib.suppress(PeerError, VersionMismatch):
        link.decode(data)


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


PROGRAM_SAMPLE = ProgramSpec(("sh", "-c", "echo"), {"A": "1"}, "/w", Stdio("file", "/w/o"),
                             Stdio("none"), 1, "/w", "uid", b"in", True, "omp", 2.5, "/s")
SAMPLES = [*ALL_SAMPLES, (PROGRAM, PROGRAM_SAMPLE)]
TAGS = {link.name: sorted({type(m).TAG for sample_link, m in SAMPLES if sample_link is link})
        for link in LINKS.values()}
SEEDS = st.randoms(use_true_random=True)


def random_bytes(link: Registry, rng: random.Random) -> bytes:
    """Any bytes; half of them behind a header that gets past the protocol and the tag."""
    raw = rng.randbytes(rng.randrange(512))
    if rng.random() < 0.5:
        raw = bytes([0x92 + rng.randrange(14), link.protocol, rng.randrange(128)]) + raw
    return raw


def plausible_frame(link: Registry, rng: random.Random) -> bytes:
    """The right protocol (mostly), a tag (mostly a real one), then random values."""
    protocol = link.protocol if rng.random() < 0.95 else rng.randint(-1, 5)
    tag = rng.choice(TAGS[link.name]) if rng.random() < 0.9 else rng.randint(-2, 64)
    return pack([protocol, tag, *(random_value(rng) for _ in range(rng.randrange(10)))])


def mutated_sample(link: Registry, rng: random.Random) -> bytes:
    """A real message of the link, one to three of its (nested) fields replaced."""
    message = rng.choice([m for sample_link, m in SAMPLES if sample_link is link])
    fields = fields_of(link, message)
    for _ in range(rng.randint(1, 3)):
        fields = mutate(rng, fields)
    if rng.random() < 0.1:  # now and then a field more or less
        fields = fields[:-1] if fields and rng.random() < 0.5 else [*fields, random_value(rng)]
    return pack([link.protocol, type(message).TAG, *fields])


def fuzz_frames(make: Callable[[Registry, random.Random], bytes], examples: int) -> int:
    return fuzz(lambda link, rng: decode_or_refuse(link, make(link, rng)), examples,
                st.sampled_from(list(LINKS.values())), SEEDS)


DECODER_CASES = {"random-bytes": random_bytes, "plausible": plausible_frame,
                 "mutated": mutated_sample}


@pytest.mark.parametrize("case", DECODER_CASES)
def test_decoders_refuse_or_decode_quick(case: str) -> None:
    assert fuzz_frames(DECODER_CASES[case], QUICK_EXAMPLES) >= QUICK_EXAMPLES


@pytest.mark.slow
@pytest.mark.parametrize("case", DECODER_CASES)
def test_decoders_refuse_or_decode(case: str) -> None:
    assert fuzz_frames(DECODER_CASES[case], SLOW_FRAMES) >= SLOW_FRAMES


# --- the hq argument parsers ----------------------------------------------------------------


def command_words() -> tuple[list[str], list[str]]:
    """Every sub-command name and option string of the full `hq` tree."""
    words: set[str] = set()
    options: set[str] = set()
    pending = [parser.build_parser()]
    while pending:
        current = pending.pop()
        for action in current._actions:  # argparse keeps its tree there
            options.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    words.add(name)
                    pending.append(sub)
    return sorted(words), sorted(options)


WORDS, OPTIONS = command_words()
VALUES = st.sampled_from(["1", "0", "-1", "last", "all", "1-3", "5-4000000000", "3-1", "1-9:0",
                          "2:3", "1,1", "cpus=4", "gpus=[0,1]", "4 compact!", "1h", "00:10:00",
                          "json", "cli", "quiet", "never", "", "--", "=", "-", "%{TASK_ID}",
                          "range(1-4)", "2x3", "4294967296", "1e400", "nan", "a\0b"])
TOKENS = st.sampled_from(WORDS) | st.sampled_from(OPTIONS) | VALUES | st.text(max_size=16) | \
    st.sampled_from(OPTIONS).flatmap(lambda o: (VALUES | st.text(max_size=8)).map(
        lambda v: f"{o}={v}"))


@st.composite
def argv(draw: st.DrawFn) -> list[str]:
    """A command line that starts like a real one (`hq job cancel ...`) and goes astray."""
    start = draw(st.sampled_from([[], ["submit"], ["job"], ["task"], ["worker"], ["server"],
                                  ["job", "cancel"], ["job", "submit"], ["task", "list"],
                                  ["worker", "start"], ["output-log"], ["local", "start"]]))
    return start + draw(st.lists(TOKENS, max_size=10))


def parse_or_refuse(args: list[str]) -> None:
    """A namespace, a usage error, or the exit of --help/--version after printing."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            parser.parse(args)
    except UserError:
        pass
    except SystemExit as exc:
        assert exc.code == 0, f"exit {exc.code!r} for {args!r}"


VALUE_PARSERS: list[Callable[[str], object]] = [
    arrays.parse_array,
    arrays.parse_selector,
    lambda text: arrays.parse_selector(text, allow_all=False),
    arrays.parse_single,
    durations.parse_hms_or_human,
    durations.parse_human,
    resourcespec.parse_request_amount,
    resourcespec.parse_cpus,
    lambda text: resourcespec.parse_pool("gpus", text),
    resourcespec.parse_resource_arg,
    parse_coupling,
]
VALUE_TEXT = st.text(max_size=24) | st.lists(
    VALUES | st.sampled_from(list("0123456789-:,[]()x=_ .\"!")), max_size=12).map("".join)


def parse_value_or_refuse(parse: Callable[[str], object], text: str) -> None:
    with contextlib.suppress(UserError):
        parse(text)


def fuzz_values(examples: int) -> int:
    return fuzz(parse_value_or_refuse, examples, st.sampled_from(VALUE_PARSERS), VALUE_TEXT)


def fuzz_command_lines(examples: int) -> int:
    return fuzz(parse_or_refuse, examples, argv())


def test_the_parsers_know_the_command_tree() -> None:
    assert {"submit", "job", "cancel", "start", "list"} <= set(WORDS)
    assert {"--array", "--cpus", "--output-mode", "--time-limit"} <= set(OPTIONS)


def test_hq_argument_parsers_parse_or_refuse_quick() -> None:
    assert fuzz_command_lines(QUICK_EXAMPLES // 4) >= QUICK_EXAMPLES // 4
    assert fuzz_values(QUICK_EXAMPLES) >= QUICK_EXAMPLES


@pytest.mark.slow
def test_hq_command_lines_parse_or_refuse() -> None:
    assert fuzz_command_lines(SLOW_COMMAND_LINES) >= SLOW_COMMAND_LINES


@pytest.mark.slow
def test_hq_argument_values_parse_or_refuse() -> None:
    assert fuzz_values(SLOW_VALUES) >= SLOW_VALUES
