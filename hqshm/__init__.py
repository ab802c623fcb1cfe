"""hqshm: a HyperQueue-compatible task runtime with shared-memory node queues.

The package is layered (docs/architecture.md, enforced by tests/unit/test_layers.py): ``cluster``
(the runtime layer, installed from the repository's cluster/ folder) knows tasks, resources and
workers; ``model`` is the shared job model; ``link`` the client <-> server link; ``node`` and
``server`` the two long-running processes; ``cli`` the `hq` command on top of them all. This
module holds only the version, so that importing any part stays cheap.
"""

__version__ = "0.1.0"
