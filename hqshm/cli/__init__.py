"""The `hq` command line: argument parsing, one module per command group (``commands``), what
only submitting from the command line needs (``submit``: directives, job files), and the
cli/json/quiet renderers.

The top of the package: it may import every other layer, and nothing imports it.
"""
