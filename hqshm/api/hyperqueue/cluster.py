"""HQ's ``hyperqueue.cluster``."""

from hqshm.api.localcluster import LocalCluster, WorkerConfig

__all__ = ["LocalCluster", "WorkerConfig"]
