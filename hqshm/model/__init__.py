"""The shared job model: task states and tables, arrays, durations, placeholders, resource
specs, programs, submissions and the submit builder, worker configurations, the stream file
format and the task-notification datagram.

What client, server and node agree on, as pure values and parsers: no sockets, no processes, no
clock. It may import only ``hqshm.cluster`` and ``hqshm.errors``.
"""
