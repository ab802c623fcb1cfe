"""Crash limits: how often a task may be running on a lost worker before it fails (jobs.md §8.3).

A group's crash limit is a count of at least 1, or one of the two words below as a number. The
values live here, free of numpy, because the core counts crashes against them and the product's
submit model (which `hq submit` imports without numpy) writes them into its templates.
"""

from __future__ import annotations

UNLIMITED_CRASHES = 0  # `--crash-limit=unlimited`: requeue however often its workers are lost
NEVER_RESTART = -1  # `--crash-limit=never-restart`: fail at the first lost worker
DEFAULT_CRASH_LIMIT = 5  # HQ's: the fifth worker lost while running a task fails it
