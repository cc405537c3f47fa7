"""The `rsir` command line: one typer app whose subcommands call the model, search and service code."""
