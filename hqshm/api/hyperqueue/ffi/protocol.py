"""HQ's ``hyperqueue.ffi.protocol``. ``JobDescription`` and ``TaskDescription`` are HQ's
internal records of a submitted job; hqshm's are the job model's GraphSubmission and
GraphTask."""

from hqshm.api.build import JobDescription, TaskDescription
from hqshm.api.resources import ResourceRequest

__all__ = ["JobDescription", "ResourceRequest", "TaskDescription"]
