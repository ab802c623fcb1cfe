"""The server process: jobs, client requests, and the cluster core that schedules tasks."""
