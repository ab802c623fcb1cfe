"""`hq journal export|replay|stream|prune|flush` (spec/cli.md §9, deployment.md §5)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from hqshm.cli.commands.context import Context
from hqshm.cli.eventjson import EventRenderer
from hqshm.errors import UserError
from hqshm.link.requests import JournalFlushRequest, JournalPruneRequest, JournalReadRequest
from hqshm.link.responses import Ack, JournalPruned, JournalRecords
from hqshm.server.journal.records import JOURNAL
from hqshm.server.journal.restore import read_records

logger = logging.getLogger("hqshm.cli")

STREAM_POLL = 0.25  # seconds between reads of a live journal that had nothing new


def run(ctx: Context, command: str) -> int:
    return {"export": export, "replay": replay, "stream": stream, "prune": prune,
            "flush": flush}[command](ctx)


def _print(ctx: Context, renderer: EventRenderer, record: object) -> int:
    events = renderer.render(record)
    for event in events:  # one write a line, one flush a batch (a journal may hold millions)
        ctx.out.out.write(json.dumps(event, sort_keys=True, ensure_ascii=False) + "\n")
    return len(events)


def export(ctx: Context) -> int:
    loaded = read_records(Path(ctx.args.journal))
    renderer = EventRenderer()
    count = sum(_print(ctx, renderer, record) for record in loaded.records)
    ctx.out.out.flush()
    logger.info("Outputted %d event(s)", count)
    return 0


def replay(ctx: Context) -> int:
    _read(ctx, follow=False)
    return 0


def stream(ctx: Context) -> int:
    _read(ctx, follow=True)
    return 0


def _read(ctx: Context, follow: bool) -> None:
    renderer = EventRenderer()
    offset = generation = 0
    with ctx.connect() as conn:
        while True:
            try:
                answer = conn.request(JournalReadRequest(offset, generation), JournalRecords,
                                      timeout=30.0)
            except UserError:
                if follow and offset:
                    return  # the server stopped: the stream ends with it
                raise
            if answer.restarted:  # compacted meanwhile: its snapshot holds all we saw
                renderer = EventRenderer()
            for payload in answer.records:
                _print(ctx, renderer, JOURNAL.decode(payload))
            ctx.out.out.flush()
            offset, generation = answer.offset, answer.generation
            if not answer.records:
                if not follow:
                    return
                time.sleep(STREAM_POLL)


def prune(ctx: Context) -> int:
    answer = ctx.request(JournalPruneRequest(), JournalPruned)
    logger.info("Journal pruned from %d to %d bytes", answer.size_before, answer.size_after)
    ctx.out.empty()
    return 0


def flush(ctx: Context) -> int:
    ctx.request(JournalFlushRequest(), Ack)
    ctx.out.empty()
    return 0
