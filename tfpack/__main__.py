"""`python -m tfpack` runs the CLI."""

from tfpack.cli import app

app(prog_name="tfpack")
