"""HQ's ``hyperqueue.visualization`` (needs the optional ``pydot`` package)."""

from hqshm.api.visualization import visualize_job

__all__ = ["visualize_job"]
