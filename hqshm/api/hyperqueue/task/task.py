"""HQ's ``hyperqueue.task.task``."""

from hqshm.api.tasks import Task

__all__ = ["Task"]
