"""The server's journal: every event, appended to a file, so that a restarted server goes on.

``frames`` cuts the file into checksummed records, ``records`` is what a record holds (events,
and the snapshots that compaction writes), ``writer`` appends and flushes, ``restore`` rebuilds
the books and the core from a file, and ``eventjson`` renders records as HQ's event JSON.
"""
