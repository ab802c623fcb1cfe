"""HQ's ``hyperqueue.output``."""

from hqshm.api.output import StdioDef, default_stderr, default_stdout

__all__ = ["StdioDef", "default_stderr", "default_stdout"]
