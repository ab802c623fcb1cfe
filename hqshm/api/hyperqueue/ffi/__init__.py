"""HQ's ``hyperqueue.ffi``: HQ's bridge to its compiled client; here, to hqshm's link."""

from hqshm.api.job import JobId, TaskId

__all__ = ["JobId", "TaskId"]
