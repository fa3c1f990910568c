"""`python -m prunerlib`: the `prunerlib` command."""

from prunerlib.cli import entry

entry()
