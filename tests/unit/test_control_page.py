"""The node's control page (hqshm/node/pool.py's Control): skips, interrupts, the stop flag."""

from __future__ import annotations

from hqshm.node.pool import Control


def test_every_task_that_can_wait_in_a_ring_can_be_skipped_at_once() -> None:
    control = Control(2)
    keys = list(range(10, 10 + Control.SKIPS))
    for key in keys:
        control.skip(1, key)
    assert all(control.must_skip(1, key) for key in keys)
    assert not any(control.must_skip(0, key) for key in keys)  # another executor's
    assert not control.must_skip(1, 0) and not control.must_skip(1, 99)


def test_the_oldest_skip_gives_way_to_a_new_one() -> None:
    control = Control(1)
    for key in range(Control.SKIPS + 1):
        control.skip(0, key)
    assert not control.must_skip(0, 0)
    assert all(control.must_skip(0, key) for key in range(1, Control.SKIPS + 1))


def test_key_zero_is_skipped_only_when_asked() -> None:
    control = Control(1)
    assert not control.must_skip(0, 0)
    control.skip(0, 0)
    assert control.must_skip(0, 0)


def test_interrupts_and_skips_do_not_share_words() -> None:
    control = Control(3)
    for executor in range(3):
        for key in range(Control.SKIPS):
            control.skip(executor, 100 + key)
    control.interrupt(2, 7)
    assert control.interrupted(2, 7) and not control.interrupted(1, 7)
    assert all(control.must_skip(2, 100 + key) for key in range(Control.SKIPS))
    control.clear_interrupt(2)
    assert not control.interrupted(2, 7)


def test_a_stopping_node_skips_everything() -> None:
    control = Control(1)
    control.stop()
    assert control.stopping and control.must_skip(0, 12345)
