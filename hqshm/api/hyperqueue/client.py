"""HQ's ``hyperqueue.client``."""

from hqshm.api.client import Client
from hqshm.api.errors import FailedJobsException
from hqshm.api.function import PythonEnv

__all__ = ["Client", "FailedJobsException", "PythonEnv"]
