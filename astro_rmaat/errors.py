"""Errors meant for people.

Every bad input is reported as one of these, with a message that names the value, the
file or the key, and what was expected. The CLI prints the message (no traceback) and
exits with status 2.
"""


class RmaatError(Exception):
    """Base class of every error the user can fix by changing their input."""


class ConfigError(RmaatError, ValueError):
    """A configuration value is unknown, of the wrong type, or out of range."""


class DataError(RmaatError, ValueError):
    """An input file is missing, malformed, or of the wrong schema version."""


class RunExistsError(RmaatError, FileExistsError):
    """The output directory already holds a finished (or a different) run."""


class OutputError(RmaatError, OSError):
    """The output location cannot be created or written (permissions, read-only, full)."""


class RunBusyError(RunExistsError):
    """Another live process holds the run directory's lock."""
