"""The `rsir` command line: one typer app whose subcommands call the model, search and service code."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rsir")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
