"""hqshm: a HyperQueue-compatible task runtime with shared-memory node queues."""

__version__ = "0.1.0"
