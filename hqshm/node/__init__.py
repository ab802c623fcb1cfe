"""The node runtime: resources, allocator, shared-memory rings, executors and the node loop."""
