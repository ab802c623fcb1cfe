"""HQ's ``hyperqueue.job``."""

from hqshm.api.job import Job, SubmittedJob, get_job_id

__all__ = ["Job", "SubmittedJob", "get_job_id"]
