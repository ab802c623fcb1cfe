"""HQ's ``hyperqueue.task``: tasks of a job."""
