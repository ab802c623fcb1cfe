"""What only the CLI's submits read: `#HQ` directives of job scripts and TOML job files.

Both turn text into the job model's submissions (through ``hqshm.model``'s builder); reading the
files is the commands' job. Part of the CLI layer.
"""
