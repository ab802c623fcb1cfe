"""The `hq` command line: argument parsing, commands and the cli/json/quiet renderers."""
