"""HQ's ``hyperqueue.task.program``."""

from hqshm.api.tasks import ExternalProgram

__all__ = ["ExternalProgram"]
