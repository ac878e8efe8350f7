"""The exceptions tfpack raises; the CLI turns each into one line and an exit code."""

import warnings
from collections.abc import Callable


class TfpackError(Exception):
    """Base class. `exit_code` is what the CLI exits with: 1 for data errors, 2 for usage errors."""

    exit_code = 1


class InputError(TfpackError):
    """A bad input record or file: the message names the file, line/row and field."""


class ConfigError(TfpackError):
    """An invalid option, flag combination or config file."""

    exit_code = 2


class StaleArtifactError(TfpackError):
    """A run directory that is missing, incomplete, or does not match its inputs; the message names the command
    to rerun."""


class DependencyError(TfpackError):
    """An optional dependency is missing; the message gives the `pip install` to run."""

    exit_code = 2


class Note(UserWarning):
    """Something the user should know that does not stop the run (an option with no effect, a value capped, an
    input given twice); the CLI prints each once as a `note:` line, the Python API as a warning."""


NOTE_LISTENERS: list[Callable[[str], None]] = []  # the CLI's printer while a command runs; else a warning


def note(message: str) -> None:
    """Tell the user `message` (see `Note`); library code never prints."""
    if NOTE_LISTENERS:
        NOTE_LISTENERS[-1](message)
    else:
        warnings.warn(message, Note, stacklevel=2)
