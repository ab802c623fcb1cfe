"""HQ's ``hyperqueue.ffi.client``."""

from hqshm.api.connection import ClientConnection
from hqshm.api.errors import FailedTaskContext

__all__ = ["ClientConnection", "FailedTaskContext"]
